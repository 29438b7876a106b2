"""MODEL_CARD.md: what an export is for, and what it was measured to do, from recorded facts only.

Every number in the card is read from the export's own files (manifest.json, config.yaml,
metrics.json) and, once the model was evaluated on its test split, from that evaluation
(``evaluation_test.json``). Nothing is typed by hand, so the card cannot drift from the
model it describes. The card is regenerated whenever the evaluation is recorded; it is not
among the manifest's hashed files for that reason.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

from raylung.artifacts.loader import CONFIG_YAML, MANIFEST_FILE, METRICS_FILE, to_json
from raylung.config import RaylungConfig

MODEL_CARD = "MODEL_CARD.md"
TEST_EVALUATION = "evaluation_test.json"
METRIC_ROWS = ("accuracy", "precision", "recall", "specificity", "f1", "auroc")

INTENDED_USE = """\
- **For research.** A tile-level classifier of lung histopathology images, cancer (positive)
  vs non-cancer, trained with raylung to study Kim & Kang (2023)'s attention ResNet.
- **Not a diagnostic device.** It has not been validated clinically and must not be used to
  diagnose, treat or triage patients. A pathologist's reading is the reference.
- **Only for images like its training data**: the same staining, scanner, magnification and
  tile size (below). Its behaviour on other data is unknown; evaluate it there first.
- Probabilities are calibrated on the validation split only; the threshold was chosen there by
  the rule stated below. Both may not transfer to another site's data."""


def data_facts(config: RaylungConfig) -> dict[str, Any]:
    """Layout, split sizes per subclass and group counts, read from the run's splits file."""
    from raylung.data import SplitSet

    data = config.data
    facts: dict[str, Any] = {
        "root": str(data.root),
        "layout": data.layout,
        "grouping": f"group_regex {data.group_regex!r}" if data.group_regex else "the layout's own groups",
        "splits_file": data.splits_file,
    }
    try:
        split_set = SplitSet.load(data.splits_file, root=Path(data.root).expanduser())
    except Exception as exc:  # noqa: BLE001 - the card says the counts are unknown, and why
        facts["counts_unavailable"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        return facts
    facts["counts"] = split_set.counts()
    facts["groups"] = {name: len({s.group for s in samples}) for name, samples in split_set.items()}
    return facts


def environment() -> dict[str, Any]:
    """Versions and hardware of the machine that wrote the export."""
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def record_test_evaluation(export_dir: Path, evaluation: dict[str, Any]) -> Path:
    """Keep the test evaluation with the export and regenerate its card."""
    (Path(export_dir) / TEST_EVALUATION).write_text(to_json(evaluation))
    return write_model_card(export_dir)


def write_model_card(export_dir: Path) -> Path:
    directory = Path(export_dir)
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    config = yaml.safe_load((directory / CONFIG_YAML).read_text())
    training = json.loads((directory / METRICS_FILE).read_text())
    evaluation_file = directory / TEST_EVALUATION
    evaluation = json.loads(evaluation_file.read_text()) if evaluation_file.is_file() else None
    path = directory / MODEL_CARD
    path.write_text(render(manifest, config, training, evaluation))
    return path


def render(
    manifest: dict[str, Any], config: dict[str, Any], training: dict[str, Any], evaluation: dict | None
) -> str:
    lines = [f"# Model card: {manifest['model']} (raylung {manifest.get('raylung_version')})", ""]
    if manifest.get("synthetic_data"):
        lines += ["> **Trained on raylung's synthetic demo data: its numbers mean nothing clinically.**", ""]
    lines += ["## Intended use and limits", "", INTENDED_USE, ""]
    lines += _model(manifest) + _data(manifest) + _training(config, manifest, training)
    lines += _test(evaluation) + _calibration(manifest) + _integrity(manifest)
    return "\n".join(lines).rstrip() + "\n"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return (
        "n/a" if value is None else f"{value:,}" if isinstance(value, int) and value >= 10_000 else str(value)
    )


def _model(manifest: dict[str, Any]) -> list[str]:
    spec, point = manifest.get("input", {}), manifest.get("operating_point", {})
    pipeline = manifest.get("pipeline", {}).get("model", {})
    target = f", target {point['target']}" if point.get("target") is not None else ""
    return [
        "## Model",
        "",
        f"- Architecture: `{manifest['model']}`, {_number(pipeline.get('params'))} parameters, "
        f"fingerprint `{pipeline.get('fingerprint', 'n/a')}`",
        f"- Input: {spec.get('channels')} image of {spec.get('image_size')} (width, height), "
        f"normalised with mean {spec.get('mean')} and std {spec.get('std')}",
        f"- Output: one logit; {manifest.get('output', {}).get('probability')}",
        f"- Temperature: {_number(manifest.get('calibration', {}).get('temperature'))}",
        f"- Threshold: {_number(manifest.get('threshold'))} (rule `{point.get('rule', 'fixed')}`{target}, "
        f"chosen on the {point.get('split', 'validation')} split: sensitivity "
        f"{_number(point.get('sensitivity'))}, specificity {_number(point.get('specificity'))} there"
        + (f"; {point['reason']}" if point.get("reason") else "")
        + ")",
        "",
    ]


def _data(manifest: dict[str, Any]) -> list[str]:
    facts = manifest.get("data", {})
    root = facts.get("root", manifest.get("data_root"))
    where = f"- Root: `{root}`, layout `{facts.get('layout')}`"
    lines = ["## Data", "", f"{where}; groups (no group straddles splits): {facts.get('grouping')}"]
    counts = facts.get("counts")
    if not counts:
        return [*lines, f"- Split counts unavailable: {facts.get('counts_unavailable', 'not recorded')}", ""]
    subclasses = sorted({k for row in counts.values() for k in row if k.startswith("subclass:")})
    header = ["split", "images", "groups", "cancer", "non_cancer", *(s.split(":", 1)[1] for s in subclasses)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in counts.items():
        cells = [
            name,
            row.get("total"),
            facts.get("groups", {}).get(name),
            row.get("cancer"),
            row.get("non_cancer"),
        ]
        cells += [row.get(s, 0) for s in subclasses]
        lines.append("| " + " | ".join(_number(c) for c in cells) + " |")
    return [*lines, ""]


def _training(config: dict[str, Any], manifest: dict[str, Any], training: dict[str, Any]) -> list[str]:
    train, pipeline = config.get("train", {}), manifest.get("pipeline", {})
    best = training.get("best") or {}
    augment = ", ".join(f"{k} {v:g}" for k, v in pipeline.get("augment", {}).items()) or "none"
    return [
        "## Training",
        "",
        f"- Optimizer {train.get('optimizer')}, lr {train.get('lr')}, batch {train.get('batch_size')}, "
        f"up to {train.get('epochs')} epochs (patience {train.get('patience')}), seed {train.get('seed')}",
        f"- Augmentation as built: {augment}",
        f"- Effective pipeline digest `{pipeline.get('digest', 'n/a')}`",
        f"- Exported: epoch {training.get('epochs_completed')}; best epoch {training.get('best_epoch')} "
        f"by {training.get('monitor')} = {_number(training.get('best_metric'))}"
        + (" (stopped early)" if training.get("stopped_early") else ""),
        f"- Validation at the best epoch: accuracy {_number(best.get('val_accuracy'))}, "
        f"F1 {_number(best.get('val_f1'))}, AUROC {_number(best.get('val_auroc'))}",
        f"- Workers {best.get('world_size', 'n/a')} on {best.get('nodes', 'n/a')} node(s); "
        f"exported with {_environment_line(manifest.get('environment', {}))}",
        "",
    ]


def _environment_line(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or "no GPU"
    versions = f"Python {env.get('python')}, torch {env.get('torch')} (CUDA {env.get('cuda')})"
    return f"{versions}, {gpu}, {env.get('platform')}"


def _test(evaluation: dict | None) -> list[str]:
    if evaluation is None:
        return [
            "## Test results",
            "",
            "Not evaluated yet: `raylung evaluate EXPORT --split test --update-card`.",
            "",
        ]
    lines = [
        "## Test results",
        "",
        f"{evaluation['n']} test images in {evaluation['n_groups']} groups; 95% intervals.",
    ]
    lines += [f"> {w}" for w in evaluation.get("warnings", [])]
    for at in evaluation.get("at_thresholds", []):
        lines += ["", f"At threshold {at['threshold']:.4f} ({at['source']}):", "",
                  "| metric | value | 95% CI | interval |", "|---|---|---|---|"]  # fmt: skip
        for name in METRIC_ROWS:
            if name not in at["metrics"]:
                continue
            low, high = at["confidence_intervals"].get(name, (None, None))
            method = at["interval_methods"].get(name, "")
            lines.append(
                f"| {name} | {_number(at['metrics'][name])} | {_number(low)} - {_number(high)} | {method} |"
            )
    cal = evaluation.get("calibration", {})
    ece = f"ECE {_number(cal.get('ece_raw'))} raw, {_number(cal.get('ece_calibrated'))} calibrated"
    brier = f"Brier {_number(cal.get('brier_raw'))} raw, {_number(cal.get('brier_calibrated'))} calibrated"
    lines += ["", f"Calibration on test: {ece}; {brier}."]
    if evaluation.get("groups"):
        group = evaluation["groups"]
        shown = ", ".join(f"{k} {_number(v)}" for k, v in group["metrics"].items())
        lines += ["", f"Per group ({group['n']} groups, {group['aggregation']}): {shown}."]
    if evaluation.get("per_subclass"):
        lines += ["", "| subclass | n | accuracy | recall or specificity |", "|---|---|---|---|"]
        for name, row in evaluation["per_subclass"].items():
            rate = f"{row['rate_name']} {_number(row['rate'])}" if row.get("rate_name") else "mixed"
            lines.append(f"| {name} | {row['n']} | {_number(row['accuracy'])} | {rate} |")
    return [*lines, ""]


def _calibration(manifest: dict[str, Any]) -> list[str]:
    cal = manifest.get("calibration", {})
    if cal.get("method") != "temperature":
        return ["## Calibration", "", f"Not calibrated: {cal.get('reason', 'no record')}.", ""]
    return [
        "## Calibration",
        "",
        f"Temperature scaling fitted on the {cal.get('fitted_on')} split ({cal.get('n')} images): "
        f"T = {_number(cal.get('temperature'))}; ECE {_number(cal.get('ece_before'))} -> "
        f"{_number(cal.get('ece_after'))}, Brier {_number(cal.get('brier_before'))} -> "
        f"{_number(cal.get('brier_after'))} ({cal.get('ece_bins')} bins).",
        "",
    ]


def _integrity(manifest: dict[str, Any]) -> list[str]:
    origin = f"Created {manifest.get('created')} from `{manifest.get('source_checkpoint')}`"
    versions = f"raylung {manifest.get('raylung_version')}, torch {manifest.get('torch_version')}"
    lines = ["## Files and versions", "", f"{origin}; {versions}.", "", "| file | sha256 |", "|---|---|"]
    for name, entry in manifest.get("files", {}).items():
        lines.append(f"| {name} | `{entry['sha256']}` |")
    return [*lines, ""]
