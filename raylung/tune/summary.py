"""The end of a search, made visible: a trials plot and one W&B summary run for the sweep."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from raylung.config import RaylungConfig
from raylung.config.search_space import SearchSpace
from raylung.experiment import Experiment
from raylung.tracking import Tracker, init_kwargs
from raylung.tune.results import TrialSummary, table_rows

log = logging.getLogger(__name__)


def plot_trials(trials: list[TrialSummary], metric: str, path: Path, best: TrialSummary | None) -> Path:
    """Every trial's validation metric per epoch; pruned trials end early, the best is bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for trial in trials:
        if not trial.history:
            continue
        epochs = [row["epoch"] for row in trial.history]
        values = [row.get(metric) for row in trial.history]
        is_best = best is not None and trial.trial_id == best.trial_id
        ax.plot(
            epochs,
            values,
            marker="o",
            markersize=3,
            linewidth=2.5 if is_best else 1,
            alpha=1.0 if is_best else 0.6,
            label=f"{trial.trial_id} ({trial.status})" + (" best" if is_best else ""),
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"Trials: {metric} per epoch")
    ax.grid(alpha=0.3)
    if len(trials) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def log_wandb_summary(
    experiment: Experiment,
    base: RaylungConfig,
    space: SearchSpace,
    trials: list[TrialSummary],
    best: dict[str, Any] | None,
    plots: list[Path],
    mode: str,
) -> Path | None:
    """One extra run in the experiment's W&B group: results table, best trial, plots."""
    if mode == "disabled":
        return None
    run = Tracker.start(
        init_kwargs(
            base.wandb,
            mode,
            experiment.wandb_dir,
            group=experiment.name,
            name=f"{experiment.name}-summary",
            job_type="summary",
            config={"search_space": space.to_json(), "base": base.model_dump(mode="json")},
        )
    )
    run.log_table("trials", table_rows(trials, space, base.search_metric))
    run.log_images({plot.stem: plot for plot in plots})
    if best:
        run.summary(
            {
                "best_trial": best["trial_id"],
                f"best_{best['metric']}": best["value"],
                "best_epoch": best["epoch"],
                **{f"best/{k}": v for k, v in best["params"].items()},
            }
        )
    return run.finish()
