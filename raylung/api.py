"""raylung from Python: the functions the CLI calls, for notebooks and other programs.

Everything a command does is here with typed arguments and a result object instead of
console output::

    from raylung import api

    model = api.create_model("resnet_ours50")                        # an nn.Module
    loaded = api.load_config("search_spaces/smoke.yaml", ["search.num_samples=2"])
    result = api.tune(loaded)                                        # a real Ray Tune search
    result.best_params, result.best_metrics, result.export
    predictor = api.load_predictor(result.export)
    predictor(["tile.png"]).probabilities                            # calibrated P(cancer)

(The module, not the package root, holds them: ``raylung.tune`` and ``raylung.train`` are
subpackages, so functions of those names cannot live on ``raylung`` itself.)

Ray is started on first use (a local instance) unless ``address`` names a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylung.artifacts.evaluate import evaluate
from raylung.artifacts.export import export_checkpoint
from raylung.artifacts.predict import predict
from raylung.artifacts.predictor import Predictions, Predictor
from raylung.cluster.connect import RayTarget
from raylung.config import RaylungConfig
from raylung.config.loading import LoadedConfig, load_config
from raylung.tracking.links import WandbLinks
from raylung.tune.results import TrialSummary

__all__ = [
    "Predictions",
    "Predictor",
    "TrainResult",
    "TuneResult",
    "create_model",
    "evaluate",  # an export on a split: calibrated metrics, intervals, plots (raylung evaluate)
    "export_checkpoint",  # a training checkpoint -> a deployable export (raylung export)
    "load_config",
    "load_predictor",
    "predict",  # images -> a CSV of calibrated P(cancer) (raylung predict)
    "train",
    "train_best",
    "tune",
]

ConfigLike = LoadedConfig | RaylungConfig | str | Path


@dataclass
class TuneResult:
    """What a search found: the best trial's parameters, full config, metrics and export."""

    experiment: Path | str  # the experiment folder (local path or URI)
    metric: str  # what "best" means (search.metric)
    mode: str  # min or max
    best_trial: str | None  # Ray Tune's trial id of the best trial (None: no trial reported)
    best_value: float | None  # its best `metric`
    best_epoch: int | None
    best_params: dict[str, Any]  # the searched values of the best trial
    best_config: RaylungConfig | None  # the full config that trial trained
    best_metrics: dict[str, Any]  # validation metrics of its best epoch
    export: Path | None  # the exported best epoch (a folder load_predictor reads)
    trials: list[TrialSummary] = field(default_factory=list)
    wandb_dirs: list[Path] = field(default_factory=list)  # offline W&B runs (`wandb sync` them)
    tune_dir: str = ""  # Ray Tune's own folder: tune.Tuner.restore(tune_dir, ...).get_results()
    wandb_links: WandbLinks | None = None  # online only: project, group and best trial's run URLs
    wandb_dir: Path | None = None  # where the search's W&B run files are


@dataclass
class TrainResult:
    """A finished training: its folder, best-epoch metrics, export and (retrain) test evaluation."""

    directory: Path
    config: RaylungConfig
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]]
    export: Path | None
    evaluation: Any = None  # raylung.artifacts.evaluate's result on the test split (train_best)
    wandb_dirs: list[Path] = field(default_factory=list)
    wandb_links: WandbLinks | None = None  # online only: project, group and run URLs


def create_model(name: str = "resnet_ours50", **kwargs: Any) -> Any:
    """A registered model (``raylung models`` lists them) as a torch ``nn.Module``."""
    from raylung.models import create_model as create

    return create(name, **kwargs)


def load_predictor(export_dir: str | Path, **options: Any) -> Predictor:
    """An export ready to score images: ``load_predictor(path)(images).probabilities``.

    Options: ``runtime`` ("torch" or "onnx"), ``device``, ``tta``, ``batch_size``.
    """
    return Predictor.from_export(export_dir, **options)


def tune(
    config: ConfigLike,
    overrides: Sequence[str] = (),
    *,
    address: str | None = None,
    resume: str | Path | None = None,
    resource_wait_s: float | None = None,
) -> TuneResult:
    """Run a search (``raylung tune``), or continue the one in `resume`; returns its best.

    `resource_wait_s`: how long to wait for an autoscaling cluster to offer what a trial needs.
    """
    from raylung.workflows import tune as workflow

    target = RayTarget(address=address, resource_wait_s=resource_wait_s)
    if resume is not None:
        outcome = workflow.resume(resume, target)
    else:
        outcome = workflow.tune(_loaded(config, overrides), target)
    return _tune_result(outcome)


def train(
    config: ConfigLike | None,
    overrides: Sequence[str] = (),
    *,
    address: str | None = None,
    output: str | None = None,
    resume: bool = False,
    progress: bool = True,
    resource_wait_s: float | None = None,
) -> TrainResult:
    """One training run (``raylung train``), or with `resume` the continuation of `output`."""
    from raylung.workflows import train as workflow

    cfg = None if resume else _fixed(config, overrides)
    target = RayTarget(address=address, resource_wait_s=resource_wait_s)
    outcome = workflow.train(cfg, target, output=output, resume=resume, progress=progress)
    return _train_result(outcome)


def train_best(
    experiment: str | Path | None = None,
    *,
    storage: str = "experiments",
    full: bool = False,
    address: str | None = None,
    progress: bool = True,
    resource_wait_s: float | None = None,
) -> TrainResult:
    """Retrain a search's best config (``raylung train --best``), test it, explain, export."""
    from raylung.workflows import retrain

    target = RayTarget(address=address, resource_wait_s=resource_wait_s)
    outcome = retrain.retrain_best(
        None if experiment is None else str(experiment), storage, target, full=full, progress=progress
    )
    return _train_result(outcome)


def _loaded(config: ConfigLike, overrides: Sequence[str]) -> LoadedConfig:
    if isinstance(config, LoadedConfig):
        if overrides:
            raise TypeError("overrides apply to a config file; a LoadedConfig is already resolved")
        return config
    if isinstance(config, RaylungConfig):
        return load_config(overrides=list(overrides), text=_yaml(config))
    return load_config(config, list(overrides))


def _fixed(config: ConfigLike | None, overrides: Sequence[str]) -> RaylungConfig:
    if config is None:
        raise TypeError("train needs a config (or resume=True with output=)")
    if isinstance(config, RaylungConfig) and not overrides:
        return config
    loaded = _loaded(config, overrides)
    if loaded.space.paths:
        raise TypeError(f"train needs fixed values, but the config searches {', '.join(loaded.space.paths)}")
    return loaded.config


def _yaml(config: RaylungConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _tune_result(outcome: Any) -> TuneResult:
    base = outcome.experiment
    best = outcome.best or {}
    best_config = None
    if best:
        from raylung.config.loading import trial_config
        from raylung.tune.tuner import reload

        prepared = reload(base)
        best_config = trial_config(prepared.base, prepared.space, best["params"])
    return TuneResult(
        experiment=base.path,
        metric=best.get("metric", ""),
        mode=best.get("mode", ""),
        best_trial=best.get("trial_id"),
        best_value=best.get("value"),
        best_epoch=best.get("epoch"),
        best_params=dict(best.get("params", {})),
        best_config=best_config,
        best_metrics=dict(best.get("metrics", {})),
        export=Path(best["export"]) if best.get("export") else None,
        trials=list(outcome.trials),
        wandb_dirs=list(outcome.wandb_dirs),
        tune_dir=base.tune_dir,
        wandb_links=outcome.wandb_links,
        wandb_dir=base.wandb_dir,
    )


def _train_result(outcome: Any) -> TrainResult:
    return TrainResult(
        directory=outcome.directory,
        config=outcome.config,
        best_metrics=dict(outcome.best_metrics),
        history=list(outcome.history),
        export=outcome.export,
        evaluation=outcome.evaluation,
        wandb_dirs=list(outcome.wandb_dirs),
        wandb_links=outcome.wandb_links,
    )
