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
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="List the trials the search would start (sampled params, augmentation and model as "
        "built) and check the space; no Ray, no data, no training.",
    ),
    out: Path | None = typer.Option(None, "--out", help="With --dry-run: the JSON-lines file to write."),
) -> None:
    """Tune the model: every trial a distributed Ray Train run; the best epoch is exported."""
    from raylung import api
    from raylung.config.loading import load_config
    from raylung.errors import ConfigError, SearchTrialsFailedError
    from raylung.tune.results import errored_trials_line

    if dry_run:
        if space is None or resume:
            raise ConfigError("--dry-run needs a search space file (and no --resume)")
        _dry_run(load_config(space, _overrides(set_, storage, num_samples)), out)
        return
    if not resume and space is None:
        raise ConfigError("give a search space (raylung tune search_spaces/smoke.yaml) or --resume DIR")
    config = None if resume else load_config(space, _overrides(set_, storage, num_samples))
    result = api.tune(config, address=address, resume=resume, resource_wait_s=resource_wait)
    print_tune_result(Console(), result)
    failed = errored_trials_line(result.trials, str(result.experiment), result.best_trial)
    if failed:  # after the results, which are written: one line, and exit 2
        raise SearchTrialsFailedError(failed)


def print_tune_result(console: Console, result) -> None:
    """Where everything is: the experiment, the best trial and export, W&B, and Ray's own view."""
    console.print(f"experiment: {result.experiment}")
    if result.best_trial:
        console.print(
            f"best trial {result.best_trial}: {result.metric} = {result.best_value:.4f} at epoch "
            f"{result.best_epoch}"
        )
        console.print(f"best export: {result.export}")
    else:
        console.print("[red]no trial reported a result[/]")
    for line in result.wandb_links.lines() if result.wandb_links else ():
        console.print(line, highlight=False)
    if result.wandb_dirs:
        # wandb 0.31 dropped --sync-all; its folder of run folders syncs each run (docs/cluster.md).
        runs = result.wandb_dir / "wandb"
        console.print(f"W&B offline runs: {runs}  (upload with `wandb sync {runs}`)")
    console.print(
        "from Python, with Ray's own API:\n"
        "  from ray import tune\n"
        "  from raylung.tune.tuner import restorable_trainable\n"
        f"  grid = tune.Tuner.restore({result.tune_dir!r}, trainable=restorable_trainable()).get_results()\n"
        "  grid.get_dataframe()",
        highlight=False,
        soft_wrap=True,
    )
    console.print("retrain and test the best configuration with: raylung train --best")


def _overrides(set_: list[str] | None, storage: str | None, num_samples: int | None) -> list[str]:
    overrides = list(set_ or [])
    if storage:
        overrides.append(f"experiment.storage={storage}")
    if num_samples:
        overrides.append(f"search.num_samples={num_samples}")
    return overrides


def _dry_run(loaded, out: Path | None) -> None:
    """Check the space, list its trials, write them as JSON lines; exit 2 on a space error."""
    import datetime as dt

    from rich.table import Table

    from raylung.plan.dry_run import plan_trials, write_jsonl
    from raylung.plan.space_check import SpaceCheckError, check_space

    console = Console()
    problems = check_space(loaded)
    trials = plan_trials(loaded)
    table = Table(title=f"Dry run: {len(trials)} trials of {loaded.config.experiment.name}")
    for column in ("#", "sampled values", "augmentation as built", "model as built"):
        table.add_column(column, overflow="fold")
    for trial in trials:
        model = trial.pipeline.model
        table.add_row(
            str(trial.number),
            "\n".join(f"{k.rsplit('.', 1)[-1]}={_cell(v)}" for k, v in trial.params.items()),
            trial.pipeline.augment_text(),
            f"{model.name}\n{model.params:,} params\n{model.fingerprint}",
        )
    console.print(table)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = write_jsonl(
        trials, out or Path(".raylung") / "dry-runs" / f"{loaded.config.experiment.name}-{stamp}.jsonl"
    )
    console.print(f"trials written to {path}")
    distinct = len({t.pipeline.digest for t in trials})
    console.print(f"{distinct} distinct pipelines among {len(trials)} trials")
    for problem in problems:
        style = "red" if problem.level == "error" else "yellow"
        console.print(f"[{style}]{problem.level}:[/] {problem}", highlight=False, soft_wrap=True)
    errors = [p for p in problems if p.level == "error"]
    if errors:
        raise SpaceCheckError(f"the search space has {len(errors)} parameter(s) that change nothing (above)")
    console.print("space check: every searched parameter changes the pipeline")


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
