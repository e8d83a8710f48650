"""Using a trained model: prediction, export (ONNX, TorchScript, ExportedProgram), int8 and the HTTP server."""
