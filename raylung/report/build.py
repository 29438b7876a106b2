"""`raylung report`: gather an experiment's results, draw the figures, write one HTML page."""

from __future__ import annotations

import logging
from pathlib import Path

from raylung.experiment import Experiment
from raylung.report.figures import draw
from raylung.report.html import render
from raylung.report.sections import gather

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def build_report(
    experiment_dir: str | Path,
    out: str | Path | None = None,
    *,
    n_boot: int = 1000,
    explain: bool = True,
) -> Path:
    """Write the experiment's self-contained HTML report; returns its path.

    Args:
        experiment_dir: the experiment directory `raylung tune` made.
        out: the HTML file to write (default ``<experiment>/report.html``).
        n_boot: bootstrap resamples for the 95% CIs, when the report evaluates best/export
            itself (a retrain's test evaluation is shown as it was made).
        explain: draw explanation figures with :mod:`raylung.explain` when the experiment has none.
    """
    experiment = Experiment.at(experiment_dir)
    data = gather(experiment, n_boot=n_boot, explain=explain)
    page = render(data, draw(data))
    path = Path(out).expanduser() if out is not None else experiment.local / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote the report of %s to %s (%.1f MB)", experiment.name, path, len(page) / 1e6)
    return path
