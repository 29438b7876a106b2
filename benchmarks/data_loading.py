"""Data loading throughput vs the model's training step: does the loader keep up?

Measures images/s of the full training input path (decode or cache read -> augment ->
normalise -> batch of 8) with and without the resized cache, at 1 and 2 DataLoader workers, on
the LC25000 dev images at their own 224x224 and on 1280x960 JPEG copies (the paper's size;
written to a temp dir here, never into the repo). Beside it, images/s of one training step of
``create_model("resnet_ours50")`` at batch 8, 3x240x320. Target: loader >= 3x the train step.

Loader and model are timed one after the other on the same machine, not concurrently; during
real training they share the CPU cores (on a GPU machine they do not compete).

    python benchmarks/data_loading.py [--images 256] [--repeats 3] [--policy light]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import describe_machine, median_seconds, print_table, save_json  # noqa: E402

from raylung.config import AugmentConfig, DataConfig  # noqa: E402
from raylung.data import ImageCache, LungDataset, discover, worker_init_fn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_SIZE = (1280, 960)
BATCH = 8


def lc25000_root() -> Path:
    shared = Path(os.environ.get("RAYLUNG_SHARED_DATA", REPO.parent / "shared" / "data"))
    root = shared / "lc25000_lung_dev"
    if not (root / "manifest.csv").is_file():
        sys.exit(f"LC25000 dev set not found at {root} (set RAYLUNG_SHARED_DATA)")
    return root


def paper_size_copies(sources: list[str], out: Path) -> Path:
    """1280x960 JPEG copies (quality 90, with mild sensor-like noise so files are not unrealistically
    compressible) in ``out/<cancer|non_cancer>/``."""
    import cv2

    rng = np.random.default_rng(0)
    for source in sources:
        label = Path(source).parent.name
        image = cv2.imread(source, cv2.IMREAD_COLOR)
        big = cv2.resize(image, PAPER_SIZE, interpolation=cv2.INTER_CUBIC).astype(np.int16)
        big = np.clip(big + rng.normal(0, 2.0, big.shape), 0, 255).astype(np.uint8)
        target = out / label / (Path(source).stem + ".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return out


def loader_images_per_second(dataset: LungDataset, workers: int, repeats: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        generator=torch.Generator().manual_seed(0),
    )
    epoch = [0]

    def one_epoch() -> None:
        dataset.set_epoch(epoch[0])
        epoch[0] += 1
        for _ in loader:
            pass

    seconds, _ = median_seconds(one_epoch, repeats=repeats, warmup=1)  # warmup starts the workers
    return len(dataset) / seconds


def train_step_images_per_second(repeats: int) -> tuple[float, str]:
    try:
        from raylung.models import create_model

        model, name = create_model("resnet_ours50"), "raylung resnet_ours50"
    except ImportError:  # raylung.models not there yet: a same-size stand-in
        import timm

        model, name = timm.create_model("resnet50", num_classes=1), "timm resnet50 (stand-in)"
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(BATCH, 3, 240, 320)
    labels = torch.randint(0, 2, (BATCH,)).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images).reshape(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
        optimizer.step()

    seconds, _ = median_seconds(step, repeats=repeats, warmup=2)
    return BATCH / seconds, name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images per source (LC25000 has 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per measurement")
    parser.add_argument("--step-repeats", type=int, default=5, help="timed train steps")
    parser.add_argument("--policy", default="light", help="augmentation policy while loading")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/)")
    args = parser.parse_args()

    root = lc25000_root()
    samples_all = discover(DataConfig(root=root))
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(samples_all), size=min(args.images, len(samples_all)), replace=False))
    lc_samples = [samples_all[i] for i in chosen]
    augment = AugmentConfig(policy=args.policy)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="raylung-bench-") as tmp:
        start = time.perf_counter()
        big_root = paper_size_copies([s.path for s in lc_samples], Path(tmp) / "paper_size")
        big_samples = discover(DataConfig(root=big_root))
        copy_seconds = time.perf_counter() - start
        mean_bytes = float(np.mean([os.path.getsize(s.path) for s in big_samples]))
        sources = {"LC25000 224x224": lc_samples, "1280x960 copies": big_samples}
        for source, samples in sources.items():
            for cache in (False, True):
                cfg = DataConfig(root=root, cache=cache, cache_dir=Path(tmp) / "cache", augment=augment)
                build_seconds = None
                if cache:
                    start = time.perf_counter()
                    ImageCache(cfg).build([s.path for s in samples])
                    build_seconds = time.perf_counter() - start
                dataset = LungDataset(samples, cfg, train=True, seed=0, prepare=False)
                for workers in (1, 2):
                    speed = loader_images_per_second(dataset, workers, args.repeats)
                    results.append({"source": source, "cache": cache, "workers": workers,
                                    "images_per_s": speed, "cache_build_s": build_seconds})  # fmt: skip
                    print(f"{source} cache={cache} workers={workers}: {speed:.1f} images/s", flush=True)
    step_speed, model_name = train_step_images_per_second(args.step_repeats)
    for r in results:
        r["ratio_to_train_step"] = r["images_per_s"] / step_speed
        rows.append([r["source"], "on" if r["cache"] else "off", r["workers"], r["images_per_s"],
                     r["ratio_to_train_step"], "yes" if r["ratio_to_train_step"] >= 3 else "NO"])  # fmt: skip
    rows.append([f"train step: {model_name}, batch {BATCH}, 3x240x320", "", "", step_speed, 1.0, ""])
    print_table(
        f"Data loading vs training step (policy {args.policy}, {len(lc_samples)} images per source)",
        ["source", "cache", "workers", "images/s", "x train step", ">= 3x"],
        rows,
    )
    save_json(
        "data_loading",
        {
            "images_per_source": len(lc_samples),
            "policy": args.policy,
            "batch": BATCH,
            "paper_size_copy_seconds": copy_seconds,
            "paper_size_mean_file_bytes": mean_bytes,
            "loader": results,
            "train_step": {"model": model_name, "images_per_s": step_speed},
            "note": "loader and model timed separately on the same CPU; see module docstring",
            "machine_summary": describe_machine()["processor"],
        },
        args.out,
    )


if __name__ == "__main__":
    main()
