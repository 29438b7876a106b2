"""The `raylung` command line: parse, validate at the edge, call the library.

Each command lives in its own module with a ``register(app)`` function; this module only
assembles them and turns :class:`~raylung.errors.RaylungError` into one clear line.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# Ray >= 2.59 starts clusters with token authentication, and a client must be in token mode
# to attach to one (the token comes from ~/.ray/auth_token or RAY_AUTH_TOKEN). Ray reads the
# mode once, at import, so it is set here, before any command imports ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")

import typer
from rich.console import Console
from rich.markup import escape

from raylung.errors import RaylungError

COMMAND_MODULES = (
    "raylung.cli.models_cmd",
    "raylung.cli.data_cmd",
    "raylung.cli.train_cmd",
    "raylung.cli.tune_cmd",
    "raylung.cli.evaluate_cmd",
    "raylung.cli.predict_cmd",
    "raylung.cli.export_cmd",
    "raylung.cli.explain_cmd",
    "raylung.cli.benchmark_cmd",
    "raylung.cli.report_cmd",
    "raylung.cli.cluster_cmd",
)

app = typer.Typer(
    name="raylung",
    help="Train and tune cancer-vs-non-cancer classifiers on lung pathology images "
    "(the attention ResNet of Kim & Kang 2023) with Ray Train, Ray Tune, Optuna and W&B.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Debug logging, and Ray's own log lines on the console too (they always go to the "
        "run's raylung.log).",
    ),
) -> None:
    from raylung.cluster import run_log

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    run_log.set_verbose(verbose)


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    from raylung.train.host_memory import keep_freed_memory

    keep_freed_memory()  # the commands' own inference (predict, evaluate, explain, slides)
    try:
        app()
    except RaylungError as exc:
        from raylung.cluster.run_log import current_path

        log_file = current_path()
        where = f" (log: {log_file})" if log_file and log_file.is_file() else ""
        # escaped: messages quote user text and install hints like 'raylung[export]'
        message = escape(f"{exc}{where}")
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False)
        sys.exit(2)
