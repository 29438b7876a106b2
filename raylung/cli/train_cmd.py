"""`raylung train`: one distributed training run, or the retrain of a search's best config."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from raylung.cli.options import ADDRESS_OPTION, RESOURCE_WAIT_OPTION, SET_OPTION


def train(
    config: Path | None = typer.Argument(None, help="Config YAML (fixed values); omit with --best."),
    set_: list[str] | None = SET_OPTION,
    num_workers: int | None = typer.Option(None, "--num-workers", help="Ray Train workers (DDP ranks)."),
    gpus_per_worker: float | None = typer.Option(None, "--gpus-per-worker", help="GPUs per worker."),
    address: str | None = ADDRESS_OPTION,
    resource_wait: float | None = RESOURCE_WAIT_OPTION,
    output: str | None = typer.Option(
        None, "--output", "-o", help="Run directory (default: a new one under experiment.storage)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --output from its last checkpoint."
    ),
    best: bool = typer.Option(False, "--best", help="Retrain the best config of a tune experiment."),
    experiment: str | None = typer.Option(
        None, "--experiment", "-e", help="With --best: the experiment directory (default: the most recent)."
    ),
    storage: str = typer.Option(
        "experiments", "--storage", help="With --best and no --experiment: where to look for experiments."
    ),
    full: bool = typer.Option(False, "--full", help="With --best: train on train+validation."),
) -> None:
    """Train one model with Ray Train (DDP over --num-workers), then export its best epoch."""
    from raylung import api
    from raylung.errors import ConfigError

    console = Console()
    if best:
        exp_dir = experiment or (str(config) if config else None)
        outcome = api.train_best(
            exp_dir, storage=storage, full=full, address=address, resource_wait_s=resource_wait
        )
    else:
        overrides = list(set_ or [])
        if num_workers is not None:
            overrides.append(f"resources.num_workers={num_workers}")
        if gpus_per_worker is not None:
            overrides += [f"resources.gpus_per_worker={gpus_per_worker}", "resources.use_gpu=true"]
        if resume:
            cfg = None
        elif config is None:
            raise ConfigError("give a config file (raylung train CONFIG.yaml) or --best")
        else:
            from raylung.config.loading import load_config

            cfg = load_config(config, overrides, allow_search=False).config
        outcome = api.train(cfg, address=address, output=output, resume=resume, resource_wait_s=resource_wait)
    _print_outcome(console, outcome)


def _print_outcome(console: Console, outcome) -> None:
    table = Table(title="Best epoch (validation)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("epoch", "val_loss", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_auroc"):
        if key in outcome.best_metrics:
            value = outcome.best_metrics[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if outcome.evaluation is not None:
        for at in outcome.evaluation.at_thresholds:
            test = Table(title=f"Test split, threshold {at.threshold:.4g} ({at.source})")
            for column in ("metric", "value", "95% CI"):
                test.add_column(column, justify="left" if column == "metric" else "right")
            for key, value in at.metrics.items():
                interval = at.intervals.get(key)
                ci = f"{interval.low:.4f} - {interval.high:.4f}" if interval else "-"
                test.add_row(key, f"{value:.4f}", ci)
            console.print(test)
        card = outcome.evaluation.files.get("model_card")
        if card:
            console.print(f"model card: {card}")
    console.print(f"run directory: {outcome.directory}")
    if outcome.export:
        console.print(f"export: {outcome.export}")
    for line in outcome.wandb_links.lines() if outcome.wandb_links else ():
        console.print(line, highlight=False)
    for path in outcome.wandb_dirs:
        console.print(f"W&B offline run: {path}  (upload with `wandb sync {path}`)")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
