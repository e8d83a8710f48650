"""The model's forward pass in a process of its own, fed through shared memory: what the server's batcher calls.

In the server's process an eager forward pass needs the GIL back between its operations, and the event loop,
parsing and decoding hold it: a 2 ms pass of the small Mixer took 4 ms there. LitServe and Triton run the model
in a worker process; so does :class:`ModelWorker`. The server writes a batch into a shared buffer (a ``memfd``),
sends its size over a socket pair, and awaits the answer on the event loop (no thread, no GIL hand-off); the
worker runs the pass on the buffer and writes the logits beside it. A pass that raises answers its message; a
worker that dies fails its batch with :class:`WorkerError` (503) and is started again for the next one, and one
that cannot start again marks the worker failed (:attr:`ModelWorker.failure`: the server drains and exits).

The worker dies with the server: it exits when its socket closes (the server stopped, or died) and, on Linux, is
killed with the server by ``PR_SET_PDEATHSIG``. Run as ``python -m mlp_mixer.inference.worker FD CONFIG`` by
:meth:`ModelWorker.start`, never by hand.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import mmap
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("mlp_mixer.serve")
READY = -(2**31)  # the worker's first message: loaded and waiting for batches
STATUS = struct.Struct("<i")  # a batch's size (server -> worker); rows written, or -len(error message) (worker ->)
STOP_S = 5.0  # how long a stopping worker may take to exit before it is killed


class WorkerError(RuntimeError):
    """The model worker died during a pass, or cannot be started (the server answers 503 with the message)."""


def onnx_forward(path: str | Path, threads: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """An exported ``.onnx`` (:mod:`.export`) run with onnxruntime on the CPU: float images -> float32 logits."""
    import onnxruntime as ort

    from .export import INPUT_NAME, OUTPUT_NAME

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


def torch_forward(checkpoint: str | Path, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The checkpoint loaded as ``predict`` loads it (:class:`~.predict.Predictor`): float images -> float32 logits.
    On a CPU with more than one intra-op thread, a batch runs in :func:`lanes`."""
    from .predict import Predictor

    predictor = Predictor(checkpoint, device=device, amp=False)
    forward = lambda x: predictor.logits(x).cpu()  # noqa: E731
    threads = torch.get_num_threads()
    return lanes(forward, threads) if predictor.device.type == "cpu" and threads > 1 else forward


def lanes(forward: Callable[[torch.Tensor], torch.Tensor], count: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``forward`` with a batch split into ``count`` slices, each run on one thread of its own (one model in
    memory; Triton's instance count within one process); a single image keeps every intra-op thread.

    With one OpenMP team over all cores, every operation ends at a barrier: when the server's parsing takes a core
    for a moment, the other threads wait for it at each barrier. Slices share no barrier, so that moment delays one
    slice once. S/16 at 32 clients on 2 cores: 18.1 against 15.3 req/s (docs/serve.md). Rows are computed as in
    the whole batch, to float rounding."""
    from concurrent.futures import ThreadPoolExecutor

    # Threads started later in this process (the pool's, here) take one intra-op thread; this one keeps its count.
    pool = ThreadPoolExecutor(count, thread_name_prefix="mixer-lane", initializer=torch.set_num_threads, initargs=(1,))

    def run(images: torch.Tensor) -> torch.Tensor:
        if len(images) < 2:
            return forward(images)
        return torch.cat(list(pool.map(forward, images.tensor_split(min(count, len(images))))))

    return run


class ModelWorker:
    """The forward pass of one model in a child process; ``await worker.forward(images)`` from the event loop
    (:meth:`begin` for the batcher).

    Args:
        checkpoint: what :class:`~.predict.Predictor` loads (torch backend).
        input_shape: ``(C, H, W)`` of one preprocessed image.
        num_classes: the logits' width.
        max_batch_size: most images per pass (the shared buffer holds this many).
        backend: ``"torch"``, or ``"onnx"`` with ``onnx_path`` the exported model.
        device: the torch backend's device.
        threads: intra-op threads of the pass in the worker (None: the library's default).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        input_shape: tuple[int, int, int],
        num_classes: int,
        max_batch_size: int,
        *,
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.input_shape, self.num_classes, self.max_batch_size = tuple(input_shape), num_classes, max_batch_size
        self.config = dict(checkpoint=str(checkpoint), backend=backend, onnx_path=onnx_path and str(onnx_path),
                           device=device, threads=threads, input_shape=list(input_shape), num_classes=num_classes,
                           max_batch_size=max_batch_size)  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.failure: str | None = None  # set when the worker cannot be started: every pass raises it
        self.restarts = 0
        self._socket: socket.socket | None = None
        self._broken = False  # the last pass lost the worker: start a new one before the next
        size = 4 * max_batch_size * (int(torch.Size(input_shape).numel()) + num_classes)
        self._memory = _shared_file(size)
        self._buffer = mmap.mmap(self._memory.fileno(), size)
        self.inputs, self.outputs = _views(self._buffer, self.input_shape, num_classes, max_batch_size)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self, timeout_s: float = 600.0) -> None:
        """Start the worker and wait until its model is loaded; :class:`WorkerError` if it exits first."""
        ours, theirs = socket.socketpair()
        package = Path(__file__).parents[2]  # the folder that holds mlp_mixer: the child imports this copy
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")]))}
        config = {**self.config, "memory_fd": self._memory.fileno(), "parent": os.getpid()}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlp_mixer.inference.worker", str(theirs.fileno()), json.dumps(config)],
            pass_fds=(theirs.fileno(), self._memory.fileno()),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        ours.setblocking(False)
        self._socket, self._broken = ours, False
        try:
            status = await asyncio.wait_for(self._receive_status(), timeout_s)
        except TimeoutError:
            self._kill()
            raise WorkerError(f"the model worker did not load {self.config['checkpoint']} in {timeout_s:g} s") from None
        if status != READY:
            raise WorkerError(f"the model worker sent {status} instead of being ready")
        log.info("model worker %d ready (%s backend)", self.process.pid, self.config["backend"])

    def begin(self, images: torch.Tensor) -> Awaitable[torch.Tensor]:
        """Start the pass of ``images`` (B, C, H, W) now, in this call, and return an awaitable of its logits
        (B, num_classes): the batcher starts a pass while the event loop still has requests to parse."""
        if self.failure is not None:
            raise WorkerError(self.failure)
        n = len(images)
        if not 0 < n <= self.max_batch_size:
            raise ValueError(f"a batch of {n} images; the worker takes 1 to {self.max_batch_size}")
        if self._broken:  # the previous pass lost its worker: this batch waits for a new one
            return self._restart_then(images)
        self.inputs[:n].copy_(images)
        try:
            sent = self._socket.send(STATUS.pack(n))  # 4 bytes into an idle socket: never blocks
        except OSError as err:  # the worker has closed its end
            self._broken = True
            raise WorkerError(f"the model worker {self._exit()}; it is being restarted, retry") from err
        if sent != STATUS.size:
            raise WorkerError(f"the model worker's socket took {sent} of {STATUS.size} bytes")
        return self._answer(n)

    async def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of ``images`` (B, C, H, W) computed in the worker."""
        return await self.begin(images)

    async def _restart_then(self, images: torch.Tensor) -> torch.Tensor:
        await self._restart()
        return await self.begin(images)

    async def _answer(self, n: int) -> torch.Tensor:
        try:
            status = await self._receive_status()
        except asyncio.CancelledError:
            self._broken = True  # its answer would be read as the next batch's: start afresh
            raise
        if status < 0:
            message = (await self._receive(-status)).decode(errors="replace")
            raise RuntimeError(f"the forward pass failed in the model worker: {message}")
        return self.outputs[:n].clone()

    async def stop(self) -> None:
        """Close the worker's socket (it exits when it sees that) and wait for it; kill it after :data:`STOP_S`."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self.process is not None:
            deadline = time.monotonic() + STOP_S
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self._kill()

    async def _restart(self) -> None:
        await self.stop()
        self.restarts += 1
        try:
            await self.start()
        except WorkerError as err:
            self.failure = f"the model worker died and could not be started again: {err}"
            self._kill()
            raise WorkerError(self.failure) from err

    async def _receive(self, size: int) -> bytes:
        data = b""
        loop = asyncio.get_running_loop()
        while len(data) < size:
            try:
                chunk = await loop.sock_recv(self._socket, size - len(data))
            except ConnectionError:  # killed with our bytes unread: a reset, not an end
                chunk = b""
            if not chunk:
                self._broken = True
                raise WorkerError(f"the model worker {self._exit()}; it is being restarted, retry")
            data += chunk
        return data

    async def _receive_status(self) -> int:
        return STATUS.unpack(await self._receive(STATUS.size))[0]

    def _exit(self) -> str:
        """How the worker ended: ``exited with code 1``, ``was killed by SIGKILL``."""
        try:
            code = self.process.wait(2)  # its socket closed: it is exiting
        except subprocess.TimeoutExpired:
            self._kill()
            return "stopped answering"
        return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _shared_file(size: int) -> Any:
    """A file in memory of ``size`` bytes whose descriptor a child can map: a ``memfd`` where Linux has it."""
    if hasattr(os, "memfd_create"):
        file = open(os.memfd_create("mlp-mixer-batch"), "r+b")  # noqa: SIM115  # closed by ModelWorker.close
    else:
        file = tempfile.TemporaryFile()  # noqa: SIM115
    os.ftruncate(file.fileno(), size)
    return file


def _views(buffer: mmap.mmap, input_shape: tuple[int, ...], num_classes: int, max_batch_size: int):
    """The shared buffer as ``(inputs (max_batch, C, H, W), outputs (max_batch, num_classes))``, float32."""
    count = max_batch_size * int(torch.Size(input_shape).numel())
    inputs = torch.frombuffer(buffer, dtype=torch.float32, count=count).view(max_batch_size, *input_shape)
    outputs = torch.frombuffer(buffer, dtype=torch.float32, count=max_batch_size * num_classes, offset=4 * count)
    return inputs, outputs.view(max_batch_size, num_classes)


# --------------------------------------------------------------------------- the worker process


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the server dies (Linux's PR_SET_PDEATHSIG), and exit now if it already has."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the socket's end still stops it
        pass
    if os.getppid() != parent:
        sys.exit(0)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main(argv: list[str] | None = None) -> None:
    """The worker: load the model, say ready, then run a pass per batch size received until the socket closes."""
    fd, config = argv or sys.argv[1:]
    config = json.loads(config)
    _die_with_parent(config["parent"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server drains, then stops us
    sock = socket.socket(fileno=int(fd))
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    if config["backend"] == "onnx":
        forward = onnx_forward(config["onnx_path"], config["threads"])
    else:
        forward = torch_forward(config["checkpoint"], config["device"])
    shape, classes, batch = tuple(config["input_shape"]), config["num_classes"], config["max_batch_size"]
    size = 4 * batch * (int(torch.Size(shape).numel()) + classes)
    buffer = mmap.mmap(config["memory_fd"], size)
    inputs, outputs = _views(buffer, shape, classes, batch)
    gc.freeze()  # the model and torch stay: a full collection need not walk them (see serve's lifespan)
    sock.sendall(STATUS.pack(READY))
    while (header := _receive_exactly(sock, STATUS.size)) is not None:
        n = STATUS.unpack(header)[0]
        try:
            outputs[:n] = forward(inputs[:n])
        except Exception as err:  # the server answers 500 with it; the worker goes on
            message = f"{type(err).__name__}: {err}".encode()[:4096]
            sock.sendall(STATUS.pack(-len(message)) + message)
        else:
            sock.sendall(STATUS.pack(n))


if __name__ == "__main__":
    main()
