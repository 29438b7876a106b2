"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

SET_OPTION = typer.Option(
    None, "--set", "-s", help="Override a config field: --set train.epochs=5 (repeatable)."
)
ADDRESS_OPTION = typer.Option(
    None, "--address", help="Ray cluster to use (auto, HOST:PORT). Default: a local Ray on this machine."
)
