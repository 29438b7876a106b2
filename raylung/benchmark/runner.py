"""`raylung benchmark`: compare variants on the user's data, run like a tune.

A benchmark config searches exactly one `choice`, the *variant axis*: `model.name` for the
paper's Table 3 (`baselines.yaml`), `model.ablation` for the ablation (`ablation.yaml`), or any
other searchable field. Each (variant, training fraction, seed) is one Ray Train run, scheduled
by Ray Tune as a grid (no pruning: every variant gets the same budget), on the same split. Each
run's best epoch (by the validation metric) is evaluated on the test split; per variant and
fraction, the metrics are averaged over seeds with a 95% bootstrap interval that resamples test
groups jointly for all seeds, and compared with the first variant (the reference) by a paired
bootstrap of the difference on the same test images. Each variant's cost (parameters, GFLOPs,
train-step time relative to the reference, measured side by side) is in the same table. A
progress bar on stderr counts the runs done and then the runs evaluated, of how many.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raylung.artifacts.metrics import binary_metrics, bootstrap_intervals, paired_difference_intervals
from raylung.benchmark.cost import VariantCost, measure_step_times, model_cost
from raylung.benchmark.paper import METRICS, paper_row
from raylung.cluster.connect import RayTarget
from raylung.config import RaylungConfig
from raylung.config.loading import LoadedConfig, apply_params
from raylung.config.search_space import Distribution, SearchSpace
from raylung.errors import ConfigError
from raylung.experiment import Experiment
from raylung.progress import progress_bar
from raylung.tune import tuner
from raylung.tune.results import best_checkpoint, summarize_trial
from raylung.workflows.tune import start

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
    """One variant at one training fraction: metrics over seeds, its delta to the reference."""

    model: str  # the variant: a value of the variant axis (a model name, an ablation, ...)
    runs: list[SeedRun]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    seed_std: dict[str, float]
    paper: dict[str, float] | None = None
    fraction: float = 1.0
    # metric(this) - metric(reference variant), same test images, and its 95% paired CI
    delta: dict[str, float] = field(default_factory=dict)
    delta_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    cost: VariantCost | None = None


@dataclass
class BenchmarkOutcome:
    experiment: Experiment
    results: list[ModelResult]
    files: dict[str, Path] = field(default_factory=dict)
    synthetic: bool = False
    axis: str = "model.name"
    reference: str = ""
    fractions: list[float] = field(default_factory=lambda: [1.0])


@dataclass(frozen=True)
class BenchmarkGrid:
    loaded: LoadedConfig  # the grid as a search: axis x fraction x seed
    axis: str
    variants: list[Any]
    fractions: list[float]


def benchmark_space(
    loaded: LoadedConfig, seeds: list[int], fractions: list[float] | None = None
) -> BenchmarkGrid:
    """The grid (variant x training fraction x seed) of a config that searches one `choice`."""
    dists = loaded.space.distributions
    if len(dists) > 1 or any(d.kind != "choice" or d.when for d in dists):
        listed = ", ".join(d.path for d in dists)
        raise ConfigError(
            "a benchmark trains fixed configurations that differ along one axis: search exactly one "
            f"unconditional `choice` (e.g. model.name or model.ablation), not: {listed}"
        )
    if not seeds:
        raise ConfigError("give at least one seed")
    fractions = sorted(set(fractions or [1.0]))
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"--fractions must lie in (0, 1], got {fractions}")
    axis = dists[0].path if dists else "model.name"
    variants = list(dists[0].choices) if dists else [loaded.config.model.name]
    grid = [Distribution(axis, "choice", choices=tuple(variants))]
    if fractions != [1.0]:
        grid.append(Distribution("data.train_fraction", "choice", choices=tuple(fractions)))
    grid.append(Distribution("train.seed", "choice", choices=tuple(seeds)))
    search = loaded.config.search.model_copy(
        update={
            "sampler": "grid",
            "num_samples": len(variants) * len(fractions) * len(seeds),
            "asha": loaded.config.search.asha.model_copy(update={"enabled": False}),
        }
    )
    config = loaded.config.model_copy(update={"search": search})
    grid_loaded = LoadedConfig(config=config, space=SearchSpace(tuple(grid)), source=loaded.source)
    return BenchmarkGrid(grid_loaded, axis, variants, fractions)


def _predictions(path: Path) -> dict[str, tuple[int, float, str]]:
    import csv

    with path.open() as handle:
        return {
            row["path"]: (int(row["label"] in ("1", "cancer")), float(row["probability"]), row["group"])
            for row in csv.DictReader(handle)
        }


def _scored(predictions: list[dict]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(paths, labels, groups, probabilities per seed) of runs scored on the same test images."""
    paths = sorted(predictions[0])
    labels = np.array([predictions[0][p][0] for p in paths])
    groups = np.array([predictions[0][p][2] for p in paths])
    probs = np.array([[pred[p][1] for p in paths] for pred in predictions])
    return paths, labels, groups, probs


def _aggregate(
    model: str, fraction: float, runs: list[SeedRun], predictions: list[dict], n_boot: int
) -> ModelResult:
    _, labels, groups, probs = _scored(predictions)
    per_seed = [binary_metrics(labels, row) for row in probs]
    metrics = {name: float(np.mean([m[name] for m in per_seed])) for name in (*METRICS, "auroc")}
    seed_std = {name: float(np.std([m[name] for m in per_seed])) for name in metrics}
    intervals = bootstrap_intervals(labels, probs, n_boot=n_boot, groups=groups) if n_boot else {}
    return ModelResult(model, runs, metrics, intervals, seed_std, paper_row(str(model)), fraction)


def _compare(result: ModelResult, predictions: list[dict], reference: list[dict], n_boot: int) -> None:
    """Fill `result.delta` (and its paired CI) against the reference variant's predictions."""
    paths, labels, groups, probs = _scored(predictions)
    ref_paths, _, _, ref_probs = _scored(reference)
    if paths != ref_paths:
        raise RuntimeError("variants were scored on different test images; cannot pair them")
    result.delta, result.delta_intervals = paired_difference_intervals(
        labels, probs, ref_probs, n_boot=n_boot, groups=groups
    )


def variant_costs(
    base: RaylungConfig, axis: str, variants: list[Any], step_repeats: int
) -> list[VariantCost]:
    """Parameters and GFLOPs of each variant, and (step_repeats > 0) its measured step time."""
    configs = [apply_params(base, {axis: variant}) for variant in variants]
    costs = [model_cost(cfg) for cfg in configs]
    if step_repeats > 0:
        times = measure_step_times(configs, repeats=step_repeats)
        for cost, seconds in zip(costs, times, strict=True):
            cost.step_s, cost.step_ratio = seconds, seconds / times[0]
    return costs


def _label(variant: Any) -> str:
    return variant if isinstance(variant, str) else json.dumps(variant)


def _evaluate_run(
    result: Any, prepared: tuner.PreparedSearch, grid: BenchmarkGrid
) -> tuple[tuple[str, float], SeedRun, dict] | None:
    """((variant, fraction), the run, its test predictions) of one Tune result; None if it failed."""
    from raylung.artifacts.evaluate import evaluate
    from raylung.artifacts.export import export_checkpoint

    experiment, metric, mode = prepared.experiment, prepared.base.search_metric, prepared.base.search_mode
    trial = summarize_trial(
        result, prepared.space, metric, mode, prepared.base.train.epochs, experiment, prepared.base
    )
    if trial.status == "error":
        log.error("benchmark run %s failed: %s", trial.trial_id, trial.error)
        return None
    variant = _label(trial.params[grid.axis])
    fraction = float(trial.params.get("data.train_fraction", 1.0))
    seed = int(trial.params["train.seed"])
    checkpoint, metrics = best_checkpoint(experiment, trial.trial_id, metric, mode)
    name = f"{variant}-seed{seed}" + (f"-frac{fraction:g}" if len(grid.fractions) > 1 else "")
    out = experiment.local / "benchmark" / name
    with checkpoint.as_directory() as directory:
        # Weights and config are all evaluation needs; program exports (ONNX, torch.export)
        # of five ResNet-50s would take minutes: `raylung export` makes them on demand.
        export = export_checkpoint(Path(directory), out / "export", metrics=metrics, formats=())
    report = evaluate(export, "test", out_dir=out / "test", n_boot=0, progress=False)  # counted above
    run = SeedRun(trial.trial_id, seed, report.metrics, export, trial.best_epoch)
    return (variant, fraction), run, _predictions(report.files["predictions"])


def run_benchmark(
    loaded: LoadedConfig,
    seeds: list[int],
    target: RayTarget = RayTarget(),
    *,
    n_boot: int = 1000,
    fractions: list[float] | None = None,
    step_repeats: int = 3,
    progress: bool = True,
) -> BenchmarkOutcome:
    from raylung.benchmark.progress import RunsDone
    from raylung.benchmark.table import write_outputs
    from raylung.data import is_synthetic

    grid = benchmark_space(loaded, seeds, fractions)
    # The space check also makes sure every variant builds a different pipeline.
    prepared = start(grid.loaded, f"{grid.loaded.config.experiment.name}-benchmark", target)
    experiment = prepared.experiment
    labels = [_label(v) for v in grid.variants]
    cells: dict[tuple[str, float], list[tuple[SeedRun, dict]]] = {
        (v, f): [] for v in labels for f in grid.fractions
    }
    with progress_bar(progress) as bar:
        runs = bar.add_task("benchmark runs", total=grid.loaded.config.search.num_samples)
        results_grid = tuner.run(prepared, target.wait_s, callbacks=[RunsDone(bar, runs)])
        evaluated = bar.add_task("evaluating runs", total=len(results_grid))
        for result in results_grid:
            scored = _evaluate_run(result, prepared, grid)
            if scored is not None:
                cell, run, predictions = scored
                cells[cell].append((run, predictions))
            bar.advance(evaluated)

    costs = dict(
        zip(labels, variant_costs(prepared.base, grid.axis, grid.variants, step_repeats), strict=True)
    )
    results = []
    for (variant, fraction), entries in cells.items():
        if not entries:
            log.error("no successful run for %s at training fraction %g", variant, fraction)
            continue
        result = _aggregate(variant, fraction, [r for r, _ in entries], [p for _, p in entries], n_boot)
        result.cost = costs[variant]
        reference = cells.get((labels[0], fraction)) or []
        if reference:
            _compare(result, [p for _, p in entries], [p for _, p in reference], n_boot)
        results.append(result)
    outcome = BenchmarkOutcome(
        experiment,
        results,
        synthetic=is_synthetic(prepared.base.data.root),
        axis=grid.axis,
        reference=labels[0],
        fractions=grid.fractions,
    )
    outcome.files = write_outputs(outcome, prepared.base, prepared.wandb_mode)
    experiment.sync_up()
    return outcome
