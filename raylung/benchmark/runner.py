"""`raylung benchmark`: the paper's Table 3 on the user's data, run like a tune.

Each (model, seed) pair is one Ray Train run, scheduled by Ray Tune as a grid (no pruning:
every model gets the same budget), on the same split. Each run's best epoch (by the
validation metric) is evaluated on the test split; per model, the metrics are averaged over
seeds with a 95% bootstrap interval that resamples test groups jointly for all seeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raylung.benchmark.paper import METRICS, paper_row
from raylung.cluster.connect import RayTarget, connect
from raylung.config.loading import LoadedConfig
from raylung.config.search_space import Distribution, SearchSpace
from raylung.errors import ConfigError
from raylung.experiment import Experiment
from raylung.storage import check_writable
from raylung.train.metrics import binary_metrics, bootstrap_intervals
from raylung.tune import tuner
from raylung.tune.results import best_checkpoint, summarize_trial

log = logging.getLogger(__name__)


@dataclass
class SeedRun:
    trial_id: str
    seed: int
    metrics: dict[str, float]
    export: Path
    best_epoch: int | None


@dataclass
class ModelResult:
    model: str
    runs: list[SeedRun]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    seed_std: dict[str, float]
    paper: dict[str, float] | None = None


@dataclass
class BenchmarkOutcome:
    experiment: Experiment
    results: list[ModelResult]
    files: dict[str, Path] = field(default_factory=dict)
    synthetic: bool = False


def benchmark_space(loaded: LoadedConfig, seeds: list[int]) -> tuple[LoadedConfig, list[str]]:
    """The grid (model x seed), from a config whose only searched field is `model.name`."""
    others = [d.path for d in loaded.space.distributions if d.path != "model.name"]
    if others:
        raise ConfigError(
            "a benchmark trains fixed configurations; only model.name may list choices, "
            f"not: {', '.join(others)}"
        )
    if not seeds:
        raise ConfigError("give at least one seed")
    named = next((d for d in loaded.space.distributions if d.path == "model.name"), None)
    models = list(named.choices) if named else [loaded.config.model.name]
    space = SearchSpace(
        (
            Distribution("model.name", "choice", choices=tuple(models)),
            Distribution("train.seed", "choice", choices=tuple(seeds)),
        )
    )
    search = loaded.config.search.model_copy(
        update={
            "sampler": "grid",
            "num_samples": len(models) * len(seeds),
            "asha": loaded.config.search.asha.model_copy(update={"enabled": False}),
        }
    )
    config = loaded.config.model_copy(update={"search": search})
    return LoadedConfig(config=config, space=space, source=loaded.source), models


def _predictions(path: Path) -> dict[str, tuple[int, float, str]]:
    import csv

    with path.open() as handle:
        return {
            row["path"]: (int(row["label"] in ("1", "cancer")), float(row["probability"]), row["group"])
            for row in csv.DictReader(handle)
        }


def _aggregate(model: str, runs: list[SeedRun], predictions: list[dict], n_boot: int) -> ModelResult:
    paths = sorted(predictions[0])
    labels = np.array([predictions[0][p][0] for p in paths])
    groups = np.array([predictions[0][p][2] for p in paths])
    probs = np.array([[pred[p][1] for p in paths] for pred in predictions])
    per_seed = [binary_metrics(labels, row) for row in probs]
    metrics = {name: float(np.mean([m[name] for m in per_seed])) for name in (*METRICS, "auroc")}
    seed_std = {name: float(np.std([m[name] for m in per_seed])) for name in metrics}
    intervals = bootstrap_intervals(labels, probs, n_boot=n_boot, groups=groups) if n_boot else {}
    return ModelResult(model, runs, metrics, intervals, seed_std, paper_row(model))


def run_benchmark(
    loaded: LoadedConfig, seeds: list[int], target: RayTarget = RayTarget(), *, n_boot: int = 1000
) -> BenchmarkOutcome:
    from raylung.benchmark.table import write_outputs
    from raylung.data import is_synthetic
    from raylung.train.evaluate import evaluate
    from raylung.train.export import export_checkpoint

    grid, models = benchmark_space(loaded, seeds)
    cfg = grid.config
    check_writable(cfg.experiment.storage)
    experiment = Experiment.new(cfg.experiment.storage, f"{cfg.experiment.name}-benchmark")
    connect(target)
    prepared = tuner.prepare(grid, experiment)
    results_grid = tuner.run(prepared, target.wait_s)

    metric, mode = prepared.base.search_metric, prepared.base.search_mode
    by_model: dict[str, list[tuple[SeedRun, dict]]] = {m: [] for m in models}
    for result in results_grid:
        trial = summarize_trial(
            result, prepared.space, metric, mode, prepared.base.train.epochs, experiment, prepared.base
        )
        if trial.status == "error":
            log.error("benchmark run %s failed: %s", trial.trial_id, trial.error)
            continue
        model, seed = trial.params["model.name"], int(trial.params["train.seed"])
        checkpoint, metrics = best_checkpoint(experiment, trial.trial_id, metric, mode)
        out = experiment.local / "benchmark" / f"{model}-seed{seed}"
        with checkpoint.as_directory() as directory:
            # Weights and config are all evaluation needs; program exports (ONNX, torch.export)
            # of five ResNet-50s would take minutes: `raylung export` makes them on demand.
            export = export_checkpoint(Path(directory), out / "export", metrics=metrics, formats=())
        report = evaluate(export, "test", out_dir=out / "test", n_boot=0)
        run = SeedRun(trial.trial_id, seed, report.metrics, export, trial.best_epoch)
        by_model[model].append((run, _predictions(report.files["predictions"])))

    results = [
        _aggregate(model, [r for r, _ in entries], [p for _, p in entries], n_boot)
        for model, entries in by_model.items()
        if entries
    ]
    missing = [m for m, entries in by_model.items() if not entries]
    if missing:
        log.error("no successful run for: %s", ", ".join(missing))
    outcome = BenchmarkOutcome(experiment, results, synthetic=is_synthetic(prepared.base.data.root))
    outcome.files = write_outputs(outcome, prepared.base)
    experiment.sync_up()
    return outcome
