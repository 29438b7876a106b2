"""`raylung tune`: search hyperparameters with Ray Tune + Optuna + ASHA, logged to W&B."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from raylung.cli.options import ADDRESS_OPTION, RESOURCE_WAIT_OPTION, SET_OPTION


def tune(
    space: Path | None = typer.Argument(None, help="Search space YAML (search_spaces/*.yaml)."),
    set_: list[str] | None = SET_OPTION,
    address: str | None = ADDRESS_OPTION,
    resource_wait: float | None = RESOURCE_WAIT_OPTION,
    storage: str | None = typer.Option(
        None, "--storage", help="Experiment storage: a path or a URI (s3://...)."
    ),
    num_samples: int | None = typer.Option(None, "--num-samples", "-n", help="Number of trials."),
    resume: str | None = typer.Option(None, "--resume", help="Continue the experiment in this directory."),
) -> None:
    """Tune the model: every trial a distributed Ray Train run; the best epoch is exported."""
    from raylung.cluster.connect import RayTarget
    from raylung.config.loading import load_config
    from raylung.errors import ConfigError
    from raylung.tune import workflow

    target = RayTarget(address=address, resource_wait_s=resource_wait)
    if resume:
        outcome = workflow.resume(resume, target)
    else:
        if space is None:
            raise ConfigError("give a search space (raylung tune search_spaces/smoke.yaml) or --resume DIR")
        overrides = list(set_ or [])
        if storage:
            overrides.append(f"experiment.storage={storage}")
        if num_samples:
            overrides.append(f"search.num_samples={num_samples}")
        outcome = workflow.tune(load_config(space, overrides), target)
    console = Console()
    console.print(f"experiment: {outcome.experiment.path}")
    if outcome.best:
        console.print(
            f"best trial {outcome.best['trial_id']}: {outcome.best['metric']} = "
            f"{outcome.best['value']:.4f} at epoch {outcome.best['epoch']}"
        )
        console.print(f"best export: {outcome.best['export']}")
    else:
        console.print("[red]no trial reported a result[/]")
    if outcome.wandb_dirs:
        console.print(
            f"W&B offline runs: {outcome.experiment.wandb_dir}  (upload with `wandb sync --sync-all` there)"
        )
    console.print("retrain and test the best configuration with: raylung train --best")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
