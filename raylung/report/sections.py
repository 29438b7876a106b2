"""What an experiment report shows, gathered from the experiment directory into plain data.

Everything here reads files that `raylung tune` and `raylung train --best` already wrote
(see :mod:`raylung.experiment`), so a report can be made long after the search, on a machine
without Ray. The two parts that may need computing (the test evaluation and the explanation
figures) live in :mod:`raylung.report.best_model`; Optuna's parameter importance in
:mod:`raylung.report.importance`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from raylung._version import __version__
from raylung.config import RaylungConfig
from raylung.config.search_space import Distribution
from raylung.errors import ConfigError
from raylung.experiment import Experiment
from raylung.report.best_model import Explanations, ModelEvaluation, evaluate_best, explanations
from raylung.report.importance import Importance, param_importance
from raylung.tune.results import TrialSummary

BASE_FILE = "base_config.json"  # as raylung.tune.tuner.BASE_FILE, without importing Ray
SPACE_FILE = "space.json"
RESULTS_FILE = "results.json"
# The parts gather() reads or computes, in order; it names each to its `step` as it starts.
GATHER_STEPS = (
    "header",
    "test evaluation",
    "search space and trials",
    "parameter importance",
    "explanations",
)


@dataclass(frozen=True)
class Header:
    name: str
    generated: str
    created: str | None  # when the search started (space.json is written first)
    version: str
    data_root: str
    synthetic: bool
    metric: str
    mode: str
    best: dict[str, Any] | None  # best.json, None while no trial reported a result


@dataclass(frozen=True)
class SpaceRow:
    parameter: str
    distribution: str
    condition: str


@dataclass
class ReportData:
    """Everything one report page shows; paths point at PNGs already on disk."""

    experiment: Experiment
    header: Header
    space: list[SpaceRow]
    trials: list[TrialSummary]
    importance: Importance
    evaluation: ModelEvaluation
    explanations: Explanations
    retrain_curves: Path | None = None  # learning curves of the retrain the test metrics come from


def load_base(experiment: Experiment) -> RaylungConfig:
    path = experiment.local / BASE_FILE
    if not path.is_file():
        raise ConfigError(f"{experiment.local} is not a raylung tune experiment (no {BASE_FILE})")
    return RaylungConfig.model_validate_json(path.read_text())


def load_space(experiment: Experiment) -> list[SpaceRow]:
    """space.json as table rows; the condition gets its own column, so it is left out of the rule."""
    path = experiment.local / SPACE_FILE
    if not path.is_file():
        return []
    rows = []
    for spec in json.loads(path.read_text()):
        dist = Distribution(
            path=spec["path"], kind=spec["kind"], choices=tuple(spec.get("choices") or ()),
            low=float(spec.get("low") or 0.0), high=float(spec.get("high") or 0.0), step=spec.get("step"),
            when={k: tuple(v) for k, v in (spec.get("when") or {}).items()},
        )  # fmt: skip
        condition = "; ".join(f"{p} in {list(v)}" for p, v in dist.when.items())
        rows.append(SpaceRow(dist.path, replace(dist, when={}).describe(), condition or "always"))
    return rows


def load_trials(experiment: Experiment) -> list[TrialSummary]:
    path = experiment.local / RESULTS_FILE
    if not path.is_file():
        return []
    return [TrialSummary(**row) for row in json.loads(path.read_text())]


def _synthetic(root: Path, experiment: Experiment) -> bool:
    """Whether the data root, or the images the split names, are the synthetic demo set.

    A relative data.root is relative to where the search ran, which may not be here, so the
    split's first image (absolute paths, as `raylung tune` writes them) is checked too.
    """
    from raylung.data.demo import is_synthetic

    if is_synthetic(root):
        return True
    splits = experiment.local / "splits.csv"
    if not splits.is_file():
        return False
    with open(splits, newline="") as handle:
        first = next(csv.DictReader(handle), None)
    image = Path(first["path"]) if first and first.get("path") else None
    return image is not None and image.is_absolute() and is_synthetic(image.parent)


def load_header(experiment: Experiment, base: RaylungConfig) -> Header:
    best = json.loads(experiment.best_json.read_text()) if experiment.best_json.is_file() else None
    space_file = experiment.local / SPACE_FILE
    created = (
        dt.datetime.fromtimestamp(space_file.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        if space_file.is_file()
        else None
    )
    root = Path(base.data.root).expanduser()
    return Header(
        name=experiment.name,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        created=created,
        version=__version__,
        data_root=str(root),
        synthetic=_synthetic(root, experiment),
        metric=base.search_metric,
        mode=base.search_mode,
        best=best,
    )


def latest_retrain(experiment: Experiment) -> Path | None:
    """The newest `retrain-<stamp>/` with a test evaluation (stamps sort by time)."""
    done = sorted(p.parent.parent for p in experiment.local.glob("retrain-*/test/metrics.json"))
    return done[-1] if done else None


def gather(
    experiment: Experiment,
    *,
    n_boot: int = 1000,
    explain: bool = True,
    progress: bool = True,
    step: Callable[[str], None] | None = None,
) -> ReportData:
    """Read (and where missing, compute) everything the report shows.

    `progress`: show a test evaluation made here on stderr; `step`: called with each name of
    :data:`GATHER_STEPS` as that part starts (a progress bar's hook).
    """
    step = step or (lambda _: None)
    step("header")
    base = load_base(experiment)
    header = load_header(experiment, base)
    retrain = latest_retrain(experiment)
    step("test evaluation")
    evaluation = evaluate_best(experiment, retrain, n_boot=n_boot, progress=progress)
    header = replace(header, synthetic=header.synthetic or evaluation.synthetic)
    curves = retrain / "plots" / "learning_curves.png" if retrain is not None else None
    step("search space and trials")
    space, trials = load_space(experiment), load_trials(experiment)
    step("parameter importance")
    importance = param_importance(experiment)
    step("explanations")
    return ReportData(
        experiment=experiment,
        header=header,
        space=space,
        trials=trials,
        importance=importance,
        evaluation=evaluation,
        explanations=explanations(experiment, evaluation, generate=explain),
        retrain_curves=curves if curves is not None and curves.is_file() else None,
    )
