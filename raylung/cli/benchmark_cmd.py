"""`raylung benchmark`: variants side by side on your data, with CIs, deltas and costs.

`search_spaces/baselines.yaml` is the paper's Table 3 (five models); `ablation.yaml` removes one
part of ResNet-ours at a time; `--fractions` adds a data-efficiency axis."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from raylung.cli.options import ADDRESS_OPTION, RESOURCE_WAIT_OPTION, SET_OPTION


def benchmark(
    space: Path = typer.Argument(
        ...,
        help="A config that searches one choice, the variants: model.name (search_spaces/"
        "baselines.yaml) or model.ablation (search_spaces/ablation.yaml).",
    ),
    set_: list[str] | None = SET_OPTION,
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated training seeds, e.g. 0,1,2."),
    fractions: str = typer.Option(
        "1", "--fractions", help="Fractions of the training split to train on, e.g. 0.05,0.1,0.25,1."
    ),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95% CIs."),
    step_repeats: int = typer.Option(
        3, "--step-repeats", help="Timed train steps per variant for the cost column (0: skip)."
    ),
    address: str | None = ADDRESS_OPTION,
    resource_wait: float | None = RESOURCE_WAIT_OPTION,
) -> None:
    """Train every variant with the same data, split, budget and seeds; evaluate on test."""
    from raylung.benchmark.runner import run_benchmark
    from raylung.benchmark.table import print_table
    from raylung.cluster.connect import RayTarget
    from raylung.config.loading import load_config
    from raylung.errors import ConfigError

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {seeds!r}") from None
    try:
        fraction_list = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--fractions takes comma-separated numbers, got {fractions!r}") from None
    loaded = load_config(space, list(set_ or []))
    outcome = run_benchmark(
        loaded,
        seed_list,
        RayTarget(address=address, resource_wait_s=resource_wait),
        n_boot=n_boot,
        fractions=fraction_list,
        step_repeats=step_repeats,
    )
    print_table(outcome)
    console = Console()
    for kind, path in outcome.files.items():
        console.print(f"{kind}: {path}")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)
