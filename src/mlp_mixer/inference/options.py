"""The choices and limits the command line offers for export and the server, in a module that imports nothing, so
that ``mlp-mixer export --help`` and ``mlp-mixer serve --help`` load no torch or web framework. :mod:`.export` and
:mod:`.serve` read them from here."""

EXPORT_FORMATS = ("onnx", "torchscript", "exported-program")
BACKENDS = ("torch", "onnx")  # what serve runs the model with
DEFAULT_MAX_BODY_MB = 16.0  # a few phone photos; raise it for big batches of large images
DEFAULT_MAX_PIXELS = 40_000_000  # 40 Mpx (e.g. 7300x5500): above any camera, below what would exhaust memory
DEFAULT_MAX_IMAGES = 32
