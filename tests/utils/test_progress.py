"""utils.progress: a tqdm bar on a terminal, a line every PROGRESS_SECONDS in a log, nothing when switched off."""

import io

from tqdm import tqdm

from mlp_mixer.utils import progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_and_a_last_one(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    stream = io.StringIO()
    lines = progress.Lines(total=1000, desc="predict", unit="files", every=10.0, stream=stream)
    for _ in range(25):  # 40 files a second for 25 s: lines at 10 s and 20 s only
        clock.now += 1.0
        lines.update(40)
    lines.set_postfix(loss="0.25")
    lines.close()
    assert stream.getvalue().splitlines() == [
        "predict: 400/1,000 files (40%), 40.0 files/s, 10 s, ~15 s left",
        "predict: 800/1,000 files (80%), 40.0 files/s, 20 s, ~5 s left",
        "predict: 1,000/1,000 files (100%), 40.0 files/s, 25 s, loss=0.25",
    ]
    quiet = io.StringIO()
    short = progress.Lines(total=3, desc="x", unit="it", every=10.0, stream=quiet)
    short.update(3)
    short.close()
    assert quiet.getvalue() == ""  # a run shorter than one interval prints nothing


def test_a_terminal_gets_tqdm_and_a_log_gets_lines(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    assert isinstance(progress.progress_bar(5, "x"), progress.Lines)
    assert isinstance(progress.progress_bar(5, "x", enabled=True), tqdm)
    off = progress.progress_bar(5, "x", enabled=False)
    assert isinstance(off, tqdm) and off.disable
    monkeypatch.setattr(progress.sys, "stderr", Terminal())
    bar = progress.progress_bar(5, "x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
