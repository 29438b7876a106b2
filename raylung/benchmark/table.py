"""The benchmark's outputs: one row per variant (and training fraction) with 95% CIs, the
difference to the reference variant with its paired CI, and the variant's cost; for Table 3
also the paper's numbers. As Markdown, CSV, JSON, a bar chart, a metric-vs-fraction plot, a W&B
table and a terminal table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from raylung.benchmark.paper import METRICS, paper_label
from raylung.config import RaylungConfig
from raylung.tracking import Mode, Tracker, init_kwargs, resolve_mode

SYNTHETIC_NOTE = "synthetic demo data: these numbers mean nothing clinically"


def _cell(result: Any, metric: str) -> str:
    value = result.metrics[metric]
    low, high = result.intervals.get(metric, (float("nan"), float("nan")))
    text = f"{value:.4f}"
    if low == low:  # not NaN
        text += f" [{low:.4f}, {high:.4f}]"
    return text


DELTA_METRICS = ("accuracy", "f1")


def _is_table3(outcome: Any) -> bool:
    return getattr(outcome, "axis", "model.name") == "model.name"


def _delta_cell(result: Any, metric: str) -> str:
    if metric not in result.delta:
        return ""
    text = f"{result.delta[metric]:+.4f}"
    low, high = result.delta_intervals.get(metric, (float("nan"), float("nan")))
    if low == low:
        text += f" [{low:+.4f}, {high:+.4f}]"
    return text


def rows(outcome: Any) -> list[dict[str, Any]]:
    """One row per variant and fraction: metrics with 95% CIs, deltas to the reference, cost."""
    table3, fractions = _is_table3(outcome), getattr(outcome, "fractions", [1.0])
    reference = getattr(outcome, "reference", "")
    table = []
    for result in outcome.results:
        row: dict[str, Any] = {"model": paper_label(result.model) if table3 else result.model}
        if table3:
            row["registry name"] = result.model
        if len(fractions) > 1:
            row["train fraction"] = f"{result.fraction:g}"
        row["seeds"] = len(result.runs)
        for metric in METRICS:
            row[metric] = _cell(result, metric)
        for metric in DELTA_METRICS:
            row[f"delta {metric} vs {reference}"] = _delta_cell(result, metric)
        cost = result.cost
        row["params"] = f"{cost.params:,}" if cost else ""
        row["GFLOPs"] = f"{cost.gflops:.3f}" if cost else ""
        row[f"step time x {reference}"] = f"{cost.step_ratio:.2f}" if cost and cost.step_ratio else ""
        if table3:
            for metric in METRICS:
                row[f"paper {metric}"] = f"{result.paper[metric]:.4f}" if result.paper else ""
        table.append(row)
    return table


def markdown(outcome: Any) -> str:
    table = rows(outcome)
    lines = []
    if outcome.synthetic:
        lines += [f"> **{SYNTHETIC_NOTE}**", ""]
    if table:
        header = [c for c in table[0] if c != "registry name"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(row[c]) for c in header) + " |" for row in table]
    reference = getattr(outcome, "reference", "")
    lines += [
        "",
        "Metrics on the test split, mean over seeds, [95% bootstrap CI over test groups]. "
        f"delta: metric minus {reference}'s on the same test images, [95% paired bootstrap CI]; "
        "an interval that contains 0 shows no difference. params and GFLOPs (one image at the "
        f"configured input) of the model as built; step time: train step relative to {reference}, "
        "measured side by side on the machine that ran the benchmark.",
    ]
    if _is_table3(outcome):
        lines.append("Paper: Kim & Kang (2023), Table 3, on their own (private) data.")
    return "\n".join(lines) + "\n"


def fraction_chart(outcome: Any, path: Path, metric: str = "f1") -> Path:
    """`metric` against the training fraction, one line per variant, with 95% CIs."""
    from matplotlib.figure import Figure

    from raylung.plots import save_png

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for variant in dict.fromkeys(r.model for r in outcome.results):
        points = sorted(((r.fraction, r) for r in outcome.results if r.model == variant), key=lambda p: p[0])
        ys = [r.metrics[metric] for _, r in points]
        lows = [y - r.intervals.get(metric, (y, y))[0] for y, (_, r) in zip(ys, points, strict=True)]
        highs = [r.intervals.get(metric, (y, y))[1] - y for y, (_, r) in zip(ys, points, strict=True)]
        label = paper_label(variant) if _is_table3(outcome) else variant
        ax.errorbar([f for f, _ in points], ys, yerr=[lows, highs], marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(outcome.fractions, [f"{f:g}" for f in outcome.fractions])
    ax.set_xlabel("fraction of the training split")
    ax.set_ylabel(f"test {metric}")
    title = f"test {metric} vs training data (95% CI)"
    ax.set_title(title + (f"\n{SYNTHETIC_NOTE}" if outcome.synthetic else ""), fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def bar_chart(outcome: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fractions = getattr(outcome, "fractions", [1.0])
    results = [r for r in outcome.results if r.fraction == max(fractions)]
    width = 0.8 / max(len(results), 1)
    x = np.arange(len(METRICS))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for i, result in enumerate(results):
        values = [result.metrics[m] for m in METRICS]
        lows = [values[j] - result.intervals.get(m, (values[j], 0))[0] for j, m in enumerate(METRICS)]
        highs = [result.intervals.get(m, (0, values[j]))[1] - values[j] for j, m in enumerate(METRICS)]
        offset = x + (i - (len(results) - 1) / 2) * width
        label = paper_label(result.model) if _is_table3(outcome) else result.model
        ax.bar(offset, values, width, yerr=[lows, highs], capsize=2, label=label)
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
    title = (
        "Table 3 reproduction (bars: 95% CI; black: paper)"
        if _is_table3(outcome)
        else f"{outcome.axis} (bars: 95% CI; training fraction {max(fractions):g})"
    )
    ax.set_title(title + (f"\n{SYNTHETIC_NOTE}" if outcome.synthetic else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(outcome: Any, base: RaylungConfig, wandb_mode: Mode | None = None) -> dict[str, Path]:
    out = outcome.experiment.local / "benchmark"
    out.mkdir(parents=True, exist_ok=True)
    stem = "table3" if _is_table3(outcome) else outcome.axis.rsplit(".", 1)[-1]
    files = {
        "markdown": out / f"{stem}.md",
        "csv": out / f"{stem}.csv",
        "json": out / f"{stem}.json",
        "chart": out / f"{stem}.png",
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
            {
                "synthetic": outcome.synthetic,
                "axis": outcome.axis,
                "reference": outcome.reference,
                "fractions": outcome.fractions,
                "results": [asdict(r) for r in outcome.results],
            },
            indent=1,
            default=str,
        )
    )
    bar_chart(outcome, files["chart"])
    if len(outcome.fractions) > 1:
        files["fractions"] = fraction_chart(outcome, out / f"{stem}_fractions.png")
    _log_wandb(outcome, base, files, wandb_mode)
    return files


def _log_wandb(outcome: Any, base: RaylungConfig, files: dict[str, Path], mode: Mode | None) -> None:
    mode = mode or resolve_mode(base.wandb)  # the benchmark's decision, made before Ray started
    if mode == "disabled":
        return
    run = Tracker.start(
        init_kwargs(
            base.wandb,
            mode,
            outcome.experiment.wandb_dir,
            group=outcome.experiment.name,
            name=f"{outcome.experiment.name}-table3",
            job_type="benchmark",
        )
    )
    run.log_table("table3", rows(outcome))
    run.log_images({"table3_chart": files["chart"]})
    run.finish()


def print_table(outcome: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    title = "Table 3 on your data" if _is_table3(outcome) else f"{outcome.axis} on your data"
    table = Table(
        title=title + " (test split, 95% CI)" + (f" — {SYNTHETIC_NOTE}" if outcome.synthetic else "")
    )
    shown = rows(outcome)
    columns = [c for c in (shown[0] if shown else {}) if c != "registry name" and not c.startswith("paper ")]
    if _is_table3(outcome):
        columns.append("paper f1")
    for column in columns:
        table.add_column(column)
    for row in shown:
        table.add_row(*[str(row[c]) for c in columns])
    Console(width=max(160, Console().width)).print(table)
