"""`raylung benchmark`: the paper's Table 3 (five models, same data and budget) on your data."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from raylung.cli.options import ADDRESS_OPTION, RESOURCE_WAIT_OPTION, SET_OPTION


def benchmark(
    space: Path = typer.Argument(
        ..., help="A config whose model.name lists the models (search_spaces/baselines.yaml)."
    ),
    set_: list[str] | None = SET_OPTION,
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated training seeds, e.g. 0,1,2."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95% CIs."),
    address: str | None = ADDRESS_OPTION,
    resource_wait: float | None = RESOURCE_WAIT_OPTION,
) -> None:
    """Train every model with the same data, split, budget and seeds; evaluate on test."""
    from raylung.benchmark.runner import run_benchmark
    from raylung.benchmark.table import print_table
    from raylung.cluster.connect import RayTarget
    from raylung.config.loading import load_config
    from raylung.errors import ConfigError

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    loaded = load_config(space, list(set_ or []))
    outcome = run_benchmark(
        loaded, seed_list, RayTarget(address=address, resource_wait_s=resource_wait), n_boot=n_boot
    )
    print_table(outcome)
    console = Console()
    for kind, path in outcome.files.items():
        console.print(f"{kind}: {path}")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
