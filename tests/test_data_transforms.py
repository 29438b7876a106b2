"""Pipelines, policies, HED jitter and seeded determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_factory import make_folder_tree

from raylung.config import AugmentConfig, DataConfig
from raylung.data import LungDataset, build_transform, discover, resolve_strengths, worker_init_fn
from raylung.data.pipeline_plan import IMAGENET_MEAN, IMAGENET_STD
from raylung.data.stain import HEDJitter, hed_to_rgb, rgb_to_hed

SIZE = (32, 24)


def _image(seed: int = 0, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def test_eval_pipeline_resizes_and_normalises() -> None:
    transform = build_transform(DataConfig(image_size=SIZE), train=False)
    out = transform(np.full((48, 64, 3), 128, dtype=np.uint8))
    assert out.shape == (3, 24, 32) and out.dtype == torch.float32
    expected = [(128 / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected), atol=1e-5)
    gray = build_transform(DataConfig(image_size=SIZE, in_chans=1, mean=(0.5,), std=(0.25,)), train=False)
    assert torch.allclose(gray(np.full((24, 32, 1), 255, np.uint8)), torch.full((1, 24, 32), 2.0))


def test_policy_table_and_overrides() -> None:
    assert set(resolve_strengths(AugmentConfig(policy="none")).values()) == {0.0}
    light = resolve_strengths(AugmentConfig(policy="light", blur=0.3))
    assert light["hflip"] == 0.5 and light["blur"] == 0.3
    custom = resolve_strengths(AugmentConfig(policy="custom", noise=0.7))
    assert custom["noise"] == 0.7 and sum(custom.values()) == pytest.approx(0.7)
    heavy = resolve_strengths(AugmentConfig(policy="heavy"))
    medium = resolve_strengths(AugmentConfig(policy="medium"))
    assert all(heavy[k] >= medium[k] for k in heavy)


def test_augmentation_is_deterministic_under_a_seed() -> None:
    cfg = DataConfig(image_size=SIZE, augment=AugmentConfig(policy="heavy"))
    transform = build_transform(cfg, train=True)
    image = _image()
    transform.reseed(7, 0, 3)
    first = transform(image)
    transform.reseed(7, 0, 3)
    assert torch.equal(first, transform(image))
    transform.reseed(8, 0, 3)
    assert not torch.equal(first, transform(image))


def test_each_transform_draws_independently() -> None:
    # albumentations' own Compose(seed=) gives equal-p transforms the same draws
    cfg = DataConfig(image_size=SIZE, augment=AugmentConfig(policy="custom", hflip=0.5, vflip=0.5))
    transform = build_transform(cfg, train=True)
    image = _image()
    outcomes = set()
    for index in range(40):
        transform.reseed(0, 0, index)
        out = transform.augment(image)
        outcomes.add((np.array_equal(out, image[:, ::-1]), np.array_equal(out, image[::-1])))
    assert {(True, False), (False, True)} <= outcomes


def test_rotate90_keeps_non_square_shapes() -> None:
    cfg = DataConfig(image_size=SIZE, augment=AugmentConfig(policy="custom", rotate90=1.0))
    transform = build_transform(cfg, train=True)
    image = _image()
    transform.reseed(0)
    out = transform.augment(image)
    assert out.shape == image.shape and np.array_equal(out, image[::-1, ::-1])


def test_hed_roundtrip_and_fluorescence_passthrough() -> None:
    image = _image(1)
    assert np.abs(hed_to_rgb(rgb_to_hed(image)).astype(int) - image).max() <= 1
    jitter = HEDJitter(scale=0.2, shift=0.1, p=1.0)
    jitter.set_random_seed(0)
    bright = np.clip(image.astype(int) + 150, 0, 255).astype(np.uint8)
    assert not np.array_equal(jitter(image=bright)["image"], bright)
    dark = (image // 8).astype(np.uint8)  # dark field: no transmitted light to unmix
    assert np.array_equal(jitter(image=dark)["image"], dark)
    gray = bright[:, :, :1]
    assert np.array_equal(jitter(image=gray)["image"], gray)


def test_every_strength_changes_the_image_when_forced() -> None:
    base = np.clip(_image(2).astype(int) // 2 + 100, 0, 255).astype(np.uint8)  # brightfield-like
    for name in AugmentConfig.model_fields:
        if name == "policy":
            continue
        cfg = DataConfig(image_size=SIZE, augment=AugmentConfig(policy="custom", **{name: 1.0}))
        transform = build_transform(cfg, train=True)
        changed = False
        for seed in range(3):
            transform.reseed(seed)
            changed |= not np.array_equal(transform.augment(base), base)
        assert changed, name


def test_dataset_batches_reproduce_per_seed_and_epoch(tmp_path: Path) -> None:
    root = make_folder_tree(tmp_path / "d", {"cancer": 3, "non_cancer": 3}, copies=1)
    cfg = DataConfig(root=root, image_size=SIZE, cache=False, augment=AugmentConfig(policy="heavy"))
    samples = discover(cfg)
    one, two = LungDataset(samples, cfg, train=True, seed=5), LungDataset(samples, cfg, train=True, seed=5)
    assert all(torch.equal(one[i][0], two[i][0]) for i in range(len(one)))
    one.set_epoch(1)
    assert not torch.equal(one[0][0], two[0][0])
    other = LungDataset(samples, cfg, train=True, seed=6)
    assert not torch.equal(other[0][0], two[0][0])
    image, label, index = two[2]
    assert image.shape == (3, 24, 32) and label.dtype == torch.float32 and label.ndim == 0 and index == 2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cache", [False, True])
def test_loader_workers_do_not_change_the_batch(tmp_path: Path, cache: bool) -> None:
    # the cache build / validation pass runs OpenCV in threads of this process before the loader
    # forks its workers: that must neither deadlock them nor change what they produce
    root = make_folder_tree(tmp_path / "d", {"cancer": 4, "non_cancer": 4}, copies=1)
    augment = AugmentConfig(policy="medium")
    cfg = DataConfig(root=root, image_size=SIZE, cache=cache, cache_dir=tmp_path / "c", augment=augment)
    dataset = LungDataset(discover(cfg), cfg, train=True, seed=1)
    dataset.set_epoch(3)

    def batch(workers: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=8,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=worker_init_fn,
        )
        return next(iter(loader))[0]

    assert torch.equal(batch(0), batch(2))
