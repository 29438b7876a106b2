"""The benchmark's outputs: Table 3 in the paper's form (with CIs and the paper's numbers),
as Markdown, CSV, JSON, a bar chart, a W&B table and a terminal table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from raylung.benchmark.paper import METRICS, paper_label
from raylung.config import RaylungConfig
from raylung.tracking import init_kwargs, resolve_mode, start_run

SYNTHETIC_NOTE = "synthetic demo data: these numbers mean nothing clinically"


def _cell(result: Any, metric: str) -> str:
    value = result.metrics[metric]
    low, high = result.intervals.get(metric, (float("nan"), float("nan")))
    text = f"{value:.4f}"
    if low == low:  # not NaN
        text += f" [{low:.4f}, {high:.4f}]"
    return text


def rows(outcome: Any) -> list[dict[str, Any]]:
    """One row per model: metrics with 95% CIs, seeds, and the paper's own value."""
    table = []
    for result in outcome.results:
        row: dict[str, Any] = {
            "model": paper_label(result.model),
            "registry name": result.model,
            "seeds": len(result.runs),
        }
        for metric in METRICS:
            row[metric] = _cell(result, metric)
            row[f"paper {metric}"] = f"{result.paper[metric]:.4f}" if result.paper else ""
        table.append(row)
    return table


def markdown(outcome: Any) -> str:
    table = rows(outcome)
    header = ["Model", *[m.capitalize() for m in METRICS], *[f"Paper {m}" for m in METRICS]]
    lines = []
    if outcome.synthetic:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        cells = [row["model"], *[row[m] for m in METRICS], *[row[f"paper {m}"] for m in METRICS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Metrics on the test split, mean over seeds, [95% bootstrap CI over test groups]. "
        "Paper: Kim & Kang (2023), Table 3, on their own (private) data.",
    ]
    return "\n".join(lines) + "\n"


def bar_chart(outcome: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = outcome.results
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(METRICS))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, result in enumerate(results):
        values = [result.metrics[m] for m in METRICS]
        lows = [values[j] - result.intervals.get(m, (values[j], 0))[0] for j, m in enumerate(METRICS)]
        highs = [result.intervals.get(m, (0, values[j]))[1] - values[j] for j, m in enumerate(METRICS)]
        offset = x + (i - (len(results) - 1) / 2) * width
        ax.bar(offset, values, width, yerr=[lows, highs], capsize=2, label=paper_label(result.model))
        if result.paper:
            ax.scatter(
                offset,
                [result.paper[m] for m in METRICS],
                marker="_",
                s=120,
                color="black",
                zorder=3,
                label="paper" if i == 0 else None,
            )
    ax.set_xticks(x, [m.capitalize() for m in METRICS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test split")
    title = "Table 3 reproduction (bars: 95% CI; black: paper)"
    ax.set_title(title + (f"\n{SYNTHETIC_NOTE}" if outcome.synthetic else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(outcome: Any, base: RaylungConfig) -> dict[str, Path]:
    out = outcome.experiment.local / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "table3.md",
        "csv": out / "table3.csv",
        "json": out / "table3.json",
        "chart": out / "table3.png",
    }
    files["markdown"].write_text(markdown(outcome))
    table = rows(outcome)
    if table:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
        files["csv"].write_text(buffer.getvalue())
    files["json"].write_text(
        json.dumps(
            {"synthetic": outcome.synthetic, "results": [asdict(r) for r in outcome.results]},
            indent=1,
            default=str,
        )
    )
    bar_chart(outcome, files["chart"])
    _log_wandb(outcome, base, files)
    return files


def _log_wandb(outcome: Any, base: RaylungConfig, files: dict[str, Path]) -> None:
    mode = resolve_mode(base.wandb)
    if mode == "disabled":
        return
    import wandb

    run = start_run(
        **init_kwargs(
            base.wandb,
            mode,
            outcome.experiment.wandb_dir,
            group=outcome.experiment.name,
            name=f"{outcome.experiment.name}-table3",
            job_type="benchmark",
        )
    )
    if run is None:
        return
    table = rows(outcome)
    if table:
        columns = list(table[0])
        run.log(
            {
                "table3": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in table]),
                "table3_chart": wandb.Image(str(files["chart"])),
            }
        )
    run.finish()


def print_table(outcome: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="Table 3 on your data (test split, 95% CI)"
        + (f" — {SYNTHETIC_NOTE}" if outcome.synthetic else "")
    )
    for column in ("Model", *[m.capitalize() for m in METRICS], "Paper F1"):
        table.add_column(column)
    for row in rows(outcome):
        table.add_row(row["model"], *[row[m] for m in METRICS], row["paper f1"])
    Console(width=max(140, Console().width)).print(table)
