"""mlp-mixer: the MLP-Mixer architecture (arXiv 2105.01601) for PyTorch, and the tools around it.

The library is the subpackages of this package, one layer each (docs/architecture.md draws them): ``utils``,
``model``, ``weights``, ``data``, ``analysis``, ``train``, ``inference``, ``bench``; the ``mlp-mixer`` command
lives on top, in :mod:`mlp_mixer.commands`, and nothing in the library imports it.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version

from .utils.lazy import lazy_exports

# The public names, loaded on first use (PEP 562): `import mlp_mixer.commands` for `mlp-mixer --help` must not pay
# for importing torch and the model.
_MODEL = ("FeedForward", "MixerBlock", "MLPMixer", "PAPER_VARIANTS", "Preprocessing", "SEED", "VARIANTS")
_PUBLIC = {**dict.fromkeys((*_MODEL, "count_parameters", "create_model"), "model"), "from_pretrained": "weights"}
__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

try:
    __version__ = version("mlp-mixer")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

# Modules that lived side by side in this folder before the subpackages (issue 21): the old import paths that
# users, the README and the docs wrote keep working, as the same module objects (monkeypatching either name
# patches both). New code imports the new paths.
MOVED = {
    "devices": "utils.devices",
    "files": "utils.files",
    "variants": "model.variants",
    "seed_mixer": "model.seed",
    "pretrained": "model.pretrained",
    "resize": "weights.resize",
    "shards": "data.shards",
    "train_config": "train.config",
    "train_data": "train.inputs",
    "optim": "train.optim",
    "run_dir": "train.run_dir",
    "distributed": "train.distributed",
    "predict": "inference.predict",
    "export": "inference.export",
    "quantize": "inference.quantize",
    "serve": "inference.serve",
    "evaluate": "analysis.evaluate",
    "fewshot": "analysis.fewshot",
    "viz": "analysis.viz",
    "summary": "analysis.summary",
    "plots": "analysis.plots",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import mlp_mixer.predict`` -> the module ``mlp_mixer.inference.predict``, under both names."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.partition('.')[2]]}")
        spec.loader_state = module.__spec__  # the import system sets __spec__ to the alias's: put the real one back
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.append(_MovedModuleFinder())


def _register_with_timm() -> None:
    from .weights import timm_registry  # imports timm, which is there by now

    timm_registry.register()


class _TimmHook(importlib.abc.MetaPathFinder):
    """Registers our models with timm (:mod:`mlp_mixer.weights.timm_registry`) once ``timm`` is imported.

    So ``import mlp_mixer`` stays light (no timm, no torch: ``mlp-mixer --help``), timm stays optional, and
    ``timm.create_model("mlp_mixer_b16_224")`` or ``"local-dir:DIR"`` works in any process that imported both, in
    either order. It finds timm as the path finder does and wraps that spec's loader; after the import it leaves
    ``sys.meta_path`` (a ``find_spec`` that imports nothing leaves it in place for the real import).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_timm = spec.loader.exec_module

        def exec_module(module):
            exec_timm(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_with_timm()

        spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    _register_with_timm()
else:
    sys.meta_path.insert(0, _TimmHook())
