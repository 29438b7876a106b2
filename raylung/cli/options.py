"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

SET_OPTION = typer.Option(
    None, "--set", "-s", help="Override a config field: --set train.epochs=5 (repeatable)."
)
ADDRESS_OPTION = typer.Option(
    None, "--address", help="Ray cluster to use (auto, HOST:PORT). Default: a local Ray on this machine."
)
RESOURCE_WAIT_OPTION = typer.Option(
    None,
    "--resource-wait",
    help="Seconds to wait for an autoscaling cluster to offer the "
    "resources a run needs (default: 600 with --address, 0 on the local Ray).",
)
