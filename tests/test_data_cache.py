"""The resized on-disk cache: correctness, invalidation, concurrent builders, location."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from data_factory import make_folder_tree, write_image

from raylung.config import AugmentConfig, DataConfig
from raylung.data import ImageCache, LungDataset, cache_root, discover, load_image

SIZE = (32, 24)


def _cfg(root: Path, cache_dir: Path, **kw) -> DataConfig:
    return DataConfig(root=root, cache_dir=cache_dir, image_size=SIZE, **kw)


@pytest.mark.parametrize("train", [False, True])
def test_cached_tensors_equal_fresh_ones(tmp_path: Path, train: bool) -> None:
    root = make_folder_tree(tmp_path / "d", {"cancer": 2, "non_cancer": 2}, copies=1, suffix=".jpg")
    # a larger source so that the cache really resizes (and JPEG decodes at reduced scale)
    big = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    write_image(root / "cancer" / "big.jpg", big)
    augment = AugmentConfig(policy="heavy")
    samples = discover(_cfg(root, tmp_path / "c"))
    cached_cfg = _cfg(root, tmp_path / "c", augment=augment)
    cached = LungDataset(samples, cached_cfg, train=train, seed=3)
    fresh = LungDataset(samples, cached_cfg.model_copy(update={"cache": False}), train=train, seed=3)
    assert len(list((tmp_path / "c").rglob("*.npy"))) == len(samples)
    for index in range(len(samples)):
        assert torch.equal(cached[index][0], fresh[index][0])


def test_touch_modify_and_size_change_invalidate(tmp_path: Path) -> None:
    source = write_image(tmp_path / "a.png", seed=1)
    cache = ImageCache(_cfg(tmp_path, tmp_path / "c"))
    entry = cache.entry(source)
    first = cache.get(source)
    assert entry.is_file() and np.array_equal(first, load_image(source, 3, SIZE))

    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touch
    assert cache.entry(source) != entry
    assert cache._ensure(source)[1] is True  # rebuilt

    write_image(source, seed=2)  # new content
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 9_000_000_000))
    rebuilt = cache.get(source)
    assert not np.array_equal(rebuilt, first)
    assert np.array_equal(rebuilt, load_image(source, 3, SIZE))

    bigger = ImageCache(DataConfig(cache_dir=tmp_path / "c", image_size=(64, 48)))
    assert bigger.entry(source) != cache.entry(source)
    assert bigger.get(source).shape == (48, 64, 3)
    assert cache.get(source).shape == (24, 32, 3)
    assert cache._ensure(source)[1] is False  # reused


def _build(cache_dir: str, paths: list[str], queue, barrier) -> None:
    cfg = DataConfig(cache_dir=Path(cache_dir), image_size=SIZE)
    cache = ImageCache(cfg)
    barrier.wait(60)  # both processes have imported everything: start together
    result = cache.build(paths, workers=2)
    queue.put((result.built, result.reused, len(result.bad)))


def test_two_processes_build_the_same_cache_safely(tmp_path: Path) -> None:
    paths = [str(write_image(tmp_path / "d" / f"{i}.png", size=(192, 144), seed=i)) for i in range(60)]
    context = multiprocessing.get_context("spawn")
    queue, barrier = context.Queue(), context.Barrier(2)
    args = (str(tmp_path / "c"), paths, queue, barrier)
    workers = [context.Process(target=_build, args=args) for _ in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
        assert process.exitcode == 0
    results = [queue.get(timeout=10) for _ in workers]
    assert sum(built for built, _, _ in results) == len(paths)  # each image decoded exactly once
    assert all(bad == 0 for _, _, bad in results)
    cache = ImageCache(DataConfig(cache_dir=tmp_path / "c", image_size=SIZE))
    for path in paths:
        assert np.array_equal(np.load(cache.entry(path)), load_image(path, 3, SIZE))
    assert not list((tmp_path / "c").rglob("*.tmp"))


def test_cache_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLUNG_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(DataConfig()).parent == tmp_path / "env"
    assert cache_root(DataConfig(cache_dir=tmp_path / "cfg")).parent == tmp_path / "cfg"
    monkeypatch.delenv("RAYLUNG_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(DataConfig()).parent == tmp_path / "home" / ".cache" / "raylung"


def test_damaged_entry_is_rebuilt(tmp_path: Path) -> None:
    source = write_image(tmp_path / "a.png")
    cache = ImageCache(_cfg(tmp_path, tmp_path / "c"))
    cache.get(source)
    cache.entry(source).write_bytes(b"junk")
    assert np.array_equal(cache.get(source), load_image(source, 3, SIZE))
