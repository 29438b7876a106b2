"""``raylung cluster check [CLUSTER_YAML]``: validate a cluster-launcher config before ``ray up``.

Exit status: 0 ok (warnings allowed), 1 the config has problems (one line each, with the YAML
key), 2 a user error such as a missing or unparsable file (printed as one line by main).
"""

from __future__ import annotations

from pathlib import Path

import typer

cluster_app = typer.Typer(
    name="cluster",
    help="Check a Ray cluster-launcher config (cluster.yaml, cluster.onprem.yaml) before `ray up`.",
    no_args_is_help=True,
)


@cluster_app.command("check")
def check_command(
    cluster_yaml: Path = typer.Argument(
        Path("cluster.yaml"), help="Cluster config: cluster.yaml (AWS, the default) or cluster.onprem.yaml."
    ),
) -> None:
    """Validate CLUSTER_YAML offline: Ray's own schema, then what raylung needs of a cluster.

    Local mount paths are read relative to the file's folder; torch, torchvision and Ray pins are
    compared with this environment's versions. No credentials or network are used.
    """
    from raylung.cluster.check import check_cluster_config

    report = check_cluster_config(cluster_yaml)
    typer.echo(report.summary())
    for problem in report.errors:
        typer.echo(f"  error: {problem}")
    for problem in report.warnings:
        typer.echo(f"  warning: {problem}")
    if not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
