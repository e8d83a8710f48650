"""utils.sources: what a --checkpoint text names, decided without torch, as the loader decides it."""

import subprocess
import sys

import pytest

from mlp_mixer.utils.sources import check_source, hub_id


def test_urls_hub_ids_and_existing_paths_pass_and_a_missing_path_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    for ok in ("https://x.org/a.npz", "gs://b/c.npz", "timm/mixer_b16_224.goog_in1k", "hf-hub:you/a.pt", "run"):
        check_source(ok)
    for missing in ("nowhere/best.pt", "ck.pt", "run/none.pt", "a/b/c"):
        assert hub_id(missing) is None
        with pytest.raises(FileNotFoundError, match=f"{missing} does not exist"):
            check_source(missing)


def test_it_imports_no_torch():
    code = "import sys, mlp_mixer.utils.sources; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
