"""The synthetic demo set: layout, marker, determinism, concurrency and learnability."""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from raylung.config import DataConfig
from raylung.data import (
    discover_all,
    ensure_demo_data,
    is_synthetic,
    load_image,
    make_demo_dataset,
    resolve_splits,
)
from raylung.errors import DataError


def _digest(root: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*.png")):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_layout_marker_and_determinism(tmp_path: Path) -> None:
    root = make_demo_dataset(tmp_path / "a", per_subclass=4, size=(48, 36), seed=1)
    assert is_synthetic(root) and is_synthetic(root / "train" / "good_cancer")
    assert not is_synthetic(tmp_path)
    found = discover_all(DataConfig(root=root))
    assert found.layout == "paper"
    counts = resolve_splits(DataConfig(root=root)).counts()
    assert {k: v["total"] for k, v in counts.items()} == {"train": 16, "validation": 8, "test": 8}
    assert counts["train"]["subclass:bad_non_cancer"] == 4
    image = load_image(found.samples[0].path, in_chans=3)
    assert image.shape == (36, 48, 3)
    assert image[..., 2].mean() > image[..., 0].mean()  # blue-dominant DAPI-like
    assert _digest(root) == _digest(make_demo_dataset(tmp_path / "b", per_subclass=4, size=(48, 36), seed=1))
    assert _digest(root) != _digest(make_demo_dataset(tmp_path / "c", per_subclass=4, size=(48, 36), seed=2))


def test_refuses_to_write_into_real_data(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("x")
    with pytest.raises(DataError, match="not raylung demo data"):
        make_demo_dataset(tmp_path)


def _ensure(root: str, queue) -> None:
    queue.put(str(ensure_demo_data(DataConfig(root=Path(root), demo=True))))


def test_ensure_demo_data_concurrently(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    assert ensure_demo_data(DataConfig(root=target)) == target and not target.exists()  # demo off
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_ensure, args=(str(target), queue)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert {queue.get(timeout=5) for _ in processes} == {str(target)}
    assert is_synthetic(target)
    assert len(list(target.rglob("*.png"))) == 4 * (40 + 20 + 20)  # per subclass: train, validation, test
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def _features(path: str) -> list[float]:
    blue = load_image(path, in_chans=3)[..., 2].astype(np.float32) / 255
    return [blue.mean(), (blue > 0.3).mean(), np.percentile(blue, 99)]


def test_learnable_but_not_trivial(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    root = make_demo_dataset(tmp_path / "d", per_subclass=40, size=(80, 60), seed=0)
    splits = resolve_splits(DataConfig(root=root))
    train, test = splits["train"], splits["test"] + splits["validation"]
    scaler = StandardScaler().fit([_features(s.path) for s in train])
    features = scaler.transform([_features(s.path) for s in train])
    model = LogisticRegression().fit(features, [s.label for s in train])
    accuracy = model.score(scaler.transform([_features(s.path) for s in test]), [s.label for s in test])
    assert 0.7 < accuracy < 1.0, accuracy
