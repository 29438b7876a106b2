"""Measure the ablation and Table 3 on the real LC25000 dev images and write docs/results.md.

Runs two real `raylung benchmark` commands on ../shared/data/lc25000_lung_dev (or
$RAYLUNG_SHARED_DATA): search_spaces/ablation.yaml (ResNet-ours and its one-part-removed
variants) and search_spaces/baselines.yaml (the paper's Table 3 models), both reduced to what a
2-core CPU trains (small images, one block per stage), on the same grouped split and seeds, at
several fractions of the training split. Every number in docs/results.md is read from the JSON
those commands write; nothing is typed by hand.

    python benchmarks/results_lc25000.py                       # the defaults used for docs/results.md
    python benchmarks/results_lc25000.py --seeds 0 --fractions 0.25 --epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import RESULTS_DIR, describe_machine

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "results.md"
FIGURES = REPO / "docs" / "results"
METRICS = ("accuracy", "precision", "recall", "f1")


def shared_root() -> Path:
    base = Path(os.environ.get("RAYLUNG_SHARED_DATA", REPO.parent / "shared" / "data"))
    return base / "lc25000_lung_dev"


def reduced(args: argparse.Namespace, storage: Path, tiny_name: str) -> list[str]:
    """The --set overrides that size a benchmark for this machine (same for both spaces)."""
    sets = [
        f"experiment.storage={storage}",
        f"data.root={args.root}",
        "data.layout=auto",
        f"data.cache_dir={storage / 'cache'}",
        f"data.image_size=[{args.size},{args.size}]",
        "data.loader_workers=0",
        "data.augment.policy=light",
        f"train.epochs={args.epochs}",
        "train.patience=3",
        f"train.batch_size={args.batch}",
        f"train.lr={args.lr}",
        "resources.use_gpu=false",
        "resources.cpus_per_worker=1",
        f"search.max_concurrent_trials={args.concurrency}",
        "wandb.mode=offline",
    ]
    if tiny_name:
        sets.append(f"model.name={tiny_name}")
    return sets


def run(space: str, sets: list[str], args: argparse.Namespace) -> tuple[list[str], Path]:
    """Run `raylung benchmark` (unless --reuse) and return (the command, the JSON it wrote)."""
    command = [
        "raylung", "benchmark", f"search_spaces/{space}.yaml",
        "--seeds", args.seeds, "--fractions", args.fractions, "--n-boot", str(args.n_boot),
        "--step-repeats", str(args.step_repeats),
    ]  # fmt: skip
    for value in sets:
        command += ["--set", value]
    stem = "table3" if space == "baselines" else "ablation"
    if args.reuse:  # rewrite the document from the last run's JSON, without training again
        return command, sorted(Path(sets[0].split("=", 1)[1]).glob(f"*-benchmark-*/benchmark/{stem}.json"))[
            -1
        ]
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "raylung", *command[1:]], cwd=REPO, text=True, capture_output=True
    )
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{space}: {time.monotonic() - start:.0f} s")
    found = sorted(Path(sets[0].split("=", 1)[1]).glob(f"*-benchmark-*/benchmark/{stem}.json"))
    return command, found[-1]


def _ci(value: float, interval: list[float] | None, signed: bool = False) -> str:
    fmt = "{:+.3f}" if signed else "{:.3f}"
    text = fmt.format(value)
    if interval and interval[0] == interval[0]:
        text += f" [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"
    return text


def table(saved: dict[str, Any], label: str) -> list[str]:
    reference = saved["reference"]
    header = [
        label, "train fraction", "seeds", *METRICS, f"Δ accuracy vs {reference}",
        f"Δ F1 vs {reference}", "F1 sd over seeds", "params", "GFLOPs", f"step time × {reference}",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in sorted(saved["results"], key=lambda r: (r["fraction"], saved_order(saved, r["model"]))):
        cost = r["cost"] or {}
        cells = [
            r["model"],
            f"{r['fraction']:g}",
            str(len(r["runs"])),
            *[_ci(r["metrics"][m], r["intervals"].get(m)) for m in METRICS],
            _ci(r["delta"]["accuracy"], r["delta_intervals"].get("accuracy"), signed=True),
            _ci(r["delta"]["f1"], r["delta_intervals"].get("f1"), signed=True),
            f"{r['seed_std']['f1']:.3f}",
            f"{cost.get('params', 0):,}",
            f"{cost.get('gflops', 0):.3f}",
            f"{cost['step_ratio']:.2f}" if cost.get("step_ratio") else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def saved_order(saved: dict[str, Any], model: str) -> int:
    order = list(dict.fromkeys(r["model"] for r in saved["results"]))
    return order.index(model)


def findings(saved: dict[str, Any]) -> list[str]:
    """What the numbers show, in words computed from them (no hand-typed number)."""
    out = []
    reference = saved["reference"]
    for fraction in saved["fractions"]:
        rows = [r for r in saved["results"] if r["fraction"] == fraction and r["model"] != reference]
        clear = [
            r
            for r in rows
            if r["delta_intervals"].get("f1") and not _contains_zero(r["delta_intervals"]["f1"])
        ]
        worse = [r["model"] for r in clear if r["delta"]["f1"] < 0]
        better = [r["model"] for r in clear if r["delta"]["f1"] > 0]
        unclear = [r["model"] for r in rows if r not in clear]
        parts = [f"at {fraction:g} of the training split:"]
        parts.append(f"F1 clearly below {reference}: {', '.join(worse) or 'none'};")
        parts.append(f"clearly above: {', '.join(better) or 'none'};")
        parts.append(
            f"CI of the difference contains 0 (no difference shown): {', '.join(unclear) or 'none'}."
        )
        spread = [r["model"] for r in clear if r["seed_std"]["f1"] >= abs(r["delta"]["f1"])]
        if spread:
            parts.append(
                f"Of the clear ones, {', '.join(spread)} differ by less than their F1 spread between "
                "seeds, so the difference rests on single runs."
            )
        out.append("- " + " ".join(parts))
    return out


def _contains_zero(interval: list[float]) -> bool:
    return interval[0] <= 0 <= interval[1]


def split_sizes(runs: dict[str, tuple[list[str], Path]]) -> dict[str, int]:
    """Images per split, and original tiles in test, of the split the benchmarks trained on."""
    import csv

    _, path = next(iter(runs.values()))
    rows = list(csv.DictReader((path.parents[1] / "splits.csv").open()))
    sizes = {split: sum(r["split"] == split for r in rows) for split in ("train", "validation", "test")}
    sizes["test_groups"] = len({r["group"] for r in rows if r["split"] == "test"})
    return sizes


def shown_command(command: list[str]) -> str:
    """The command as a user types it from the repository root, one option per line."""
    local = [c.replace(f"{REPO}/", "").replace(str(REPO.parent), "..") for c in command]
    lines, i = [" ".join(local[:3])], 3
    while i < len(local):
        lines.append(f"{local[i]} {shlex.quote(local[i + 1])}")
        i += 2
    return " \\\n    ".join(lines)


def write_doc(args: argparse.Namespace, runs: dict[str, tuple[list[str], Path]], machine: dict) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    sections = []
    for space, (command, path) in runs.items():
        saved = json.loads(path.read_text())
        for suffix in ("", "_fractions"):
            png = path.with_name(path.stem + suffix + ".png")
            if png.is_file():
                (FIGURES / f"{space}{suffix}.png").write_bytes(png.read_bytes())
        title = "Ablation: which part of ResNet-ours matters" if space == "ablation" else "Table 3 models"
        label = "variant (model.ablation)" if space == "ablation" else "model"
        sections += [
            f"## {title}",
            "",
            "```bash",
            shown_command(command),
            "```",
            "",
            *table(saved, label),
            "",
            f"![{space}: test F1 vs training fraction](results/{space}_fractions.png)",
            "",
            "What this shows (computed from the table):",
            "",
            *findings(saved),
            "",
        ]
    test = split_sizes(runs)
    produced = " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("root", "reuse", "only") and v is not None
    )
    doc = [
        "# Results on real images: LC25000 lung (dev subset)",
        "",
        f"Produced by `python benchmarks/results_lc25000.py {produced}`; every number below is read",
        "from the JSON files the `raylung benchmark` commands wrote, or counted from their split.",
        "",
        "**Data**: the 1,000-image LC25000 lung dev subset in `../shared/data/lc25000_lung_dev`",
        "(224x224 H&E tiles; Borkowski et al. 2019, arXiv:1912.12142), split by raylung into",
        "train/validation/test **grouped by original tile** (manifest `group_id`), the same split for",
        f"every run: {test['train']} / {test['validation']} / {test['test']} images, the test images from",
        f"{test['test_groups']} original tiles. `data.train_fraction` trains on a seeded, grouped,",
        "label-stratified subsample of the training split; validation and test are untouched.",
        "",
        f"**Size**: reduced to what this machine trains ({machine['cpu_count']} CPU cores, torch",
        f"{machine['torch']}): images {args.size}x{args.size}, one bottleneck per stage",
        "(`resnet_ours_tiny`, quarter width, for the ablation; `model.depths=[1,1,1,1]` at full width",
        f"for the Table 3 models), at most {args.epochs} epochs (early stopping, patience 3), batch",
        f"{args.batch}, Adam lr {args.lr}. These are not the paper's ResNet-50-sized models at 320x240:",
        "they show whether each part earns its cost at this scale, on this data.",
        "",
        "**How to read it**: metrics are on the test split, mean over seeds, with [95% bootstrap CI]",
        "resampling whole test groups. Δ is the variant's metric minus the reference's on the same test",
        "images, with a 95% *paired* bootstrap CI: a Δ whose interval contains 0 shows no difference at",
        "this sample size. These intervals resample test images, not training runs: the spread between",
        'seeds is the separate "F1 sd over seeds" column, and where it is large (a run that early',
        "stopping ended near chance) a mean over few seeds moves with one run, whatever its CI says.",
        "params and GFLOPs (one image at the input size) describe the model as built; step time is one",
        "training step relative to the reference, measured side by side on this CPU.",
        "",
        *sections,
        "## What these numbers do not show",
        "",
        "- They are not the paper's setting (private 1280x960 DAPI fluorescence images, ResNet-50-sized",
        "  models, 320x240 input); LC25000 is easy H&E data on which every variant may reach its ceiling.",
        f"- With {test['test']} test images from {test['test_groups']} tiles, differences of a few points",
        "  are within noise; only a CI of the difference that excludes 0 supports a claim, and only for",
        "  this data and size.",
        "- Step-time ratios are for this CPU; on a GPU the depthwise convolutions and FReLU cost",
        "  differently (see docs/performance.md).",
        "",
    ]
    DOC.write_text("\n".join(doc))
    print(f"wrote {DOC}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fractions", default="0.05,0.25,1")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument("--root", type=Path, default=shared_root())
    parser.add_argument("--only", choices=("ablation", "baselines"), default=None)
    parser.add_argument("--reuse", action="store_true", help="Write the document from the last run.")
    args = parser.parse_args()
    if not (args.root / "manifest.csv").is_file():
        sys.exit(f"LC25000 dev set not found at {args.root} (set RAYLUNG_SHARED_DATA)")
    storage = RESULTS_DIR / "lc25000"
    spaces = {"ablation": "resnet_ours_tiny", "baselines": ""}
    runs = {}
    for space, tiny in spaces.items():
        if args.only and space != args.only:
            continue
        sets = reduced(args, storage / space, tiny)
        if space == "baselines":
            sets.append("model.depths=[1,1,1,1]")
        runs[space] = run(space, sets, args)
    machine = describe_machine()
    (RESULTS_DIR / "results_lc25000.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "args": {k: str(v) for k, v in vars(args).items()},
                "runs": {k: str(p) for k, (_, p) in runs.items()},
            },
            indent=1,
        )  # fmt: skip
    )
    write_doc(args, runs, machine)


if __name__ == "__main__":
    main()
