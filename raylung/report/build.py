"""`raylung report`: gather an experiment's results, draw the figures, write one HTML page.

A progress bar on stderr counts the parts done (:data:`REPORT_STEPS`) and names the one being
made; a test evaluation made for the report shows its own images under it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from raylung.experiment import Experiment
from raylung.progress import progress_bar
from raylung.report.figures import draw
from raylung.report.html import render
from raylung.report.sections import GATHER_STEPS, gather

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
REPORT_STEPS = (*GATHER_STEPS, "figures", "page")


def build_report(
    experiment_dir: str | Path,
    out: str | Path | None = None,
    *,
    n_boot: int = 1000,
    explain: bool = True,
    progress: bool = True,
) -> Path:
    """Write the experiment's self-contained HTML report; returns its path.

    Args:
        experiment_dir: the experiment directory `raylung tune` made.
        out: the HTML file to write (default ``<experiment>/report.html``).
        n_boot: bootstrap resamples for the 95% CIs, when the report evaluates best/export
            itself (a retrain's test evaluation is shown as it was made).
        explain: draw explanation figures with :mod:`raylung.explain` when the experiment has none.
        progress: show the parts made, of how many, on stderr.
    """
    experiment = Experiment.at(experiment_dir)
    with progress_bar(progress) as bar:
        task = bar.add_task("report sections", total=len(REPORT_STEPS))

        def step(part: str) -> None:
            bar.update(task, completed=REPORT_STEPS.index(part), description=f"report: {part}")

        data = gather(experiment, n_boot=n_boot, explain=explain, progress=progress, step=step)
        step("figures")
        figures = draw(data)
        step("page")
        page = render(data, figures)
        bar.update(task, completed=len(REPORT_STEPS), description="report sections")
    path = Path(out).expanduser() if out is not None else experiment.local / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote the report of %s to %s (%.1f MB)", experiment.name, path, len(page) / 1e6)
    return path
