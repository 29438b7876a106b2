"""raylung: train and tune cancer-vs-non-cancer classifiers on lung pathology images.

Implements the attention ResNet of Kim & Kang (2023), "A Study on the Classification of
Cancers with Lung Cancer Pathological Images Using Deep Neural Networks and Self-Attention
Structures", and tunes it at scale with Ray Train, Ray Tune, Optuna and Weights & Biases.

The Python API for notebooks and other programs is :mod:`raylung.api`
(``from raylung import api``; ``api.tune(...)``, ``api.load_predictor(...)``).
"""

from raylung._version import __version__

__all__ = ["__version__"]


def _register_with_timm_on_import() -> None:
    """Make ``timm.create_model("resnet_ours50")`` work after ``import raylung``.

    Importing torch and timm here would cost every ``raylung`` command seconds, so the models
    are added to timm's registry when timm itself is imported (now, if it already is).
    """
    import importlib.abc
    import importlib.machinery
    import sys

    def register() -> None:
        from raylung.models.timm_entrypoints import register_with_timm

        register_with_timm()

    if "timm" in sys.modules:
        register()
        return

    class _AfterTimm(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001 - importlib's protocol
            if name != "timm":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_then_register(module):  # noqa: ANN001, ANN202
                exec_module(module)
                register()

            spec.loader.exec_module = exec_then_register
            return spec

    sys.meta_path.insert(0, _AfterTimm())


_register_with_timm_on_import()
