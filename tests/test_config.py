"""Config and search-space validation: one clear line per error, naming the key and file line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from raylung.config import RaylungConfig
from raylung.config.loading import apply_params, load_config
from raylung.errors import ConfigError
from raylung.tune.tuner import check_grid

REPO = Path(__file__).resolve().parents[1]


def error_of(text: str, allow_search: bool = True, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(text=text, path="space.yaml", allow_search=allow_search, overrides=overrides or [])
    return str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "train:\n  lr: 0.1\n  epoch: 3\n",
            "space.yaml:3: train.epoch: unknown key 'epoch' (did you mean 'epochs'?)",
        ),
        ("modle:\n  name: resnet50\n", "space.yaml:1: modle: unknown key 'modle' (did you mean 'model'?)"),
        (
            "train:\n  lr: {loguniform: [1.0e-3, 1.0e-5]}\n",
            "space.yaml:2: train.lr: loguniform needs low < high",
        ),
        ("train:\n  lr: {loguniform: [0, 1.0e-3]}\n", "space.yaml:2: train.lr: loguniform needs low > 0"),
        ("train:\n  lr: {uniform: [-1, 0.1]}\n", "space.yaml:2: train.lr: Input should be greater than 0"),
        ("train:\n  epochs: {int: [1, 3.5]}\n", "train.epochs is not searchable"),
        ("data:\n  root: {choice: [a, b]}\n", "space.yaml:2: data.root is not searchable"),
        ("model:\n  name: resnet99\n", "space.yaml:2: model.name: unknown model 'resnet99'"),
        (
            "model:\n  eca_k: {choice: [3, 4]}\n",
            "eca_k must be an odd positive int or 'adaptive', got 4 [value 4",
        ),
        ("model:\n  eca_k: 4\n", "space.yaml:2: model.eca_k: eca_k must be an odd positive int"),
        ("data:\n  split: {train: 0.8, validation: 0.3, test: 0.1}\n", "split fractions must sum to 1"),
        ("train:\n  lr: [1,\n", "space.yaml:3: invalid YAML"),
        ("train:\n  lr: {uniform: [0.1, 0.2], when: {model.eca_k: 3}}\n", "`when` refers to 'model.eca_k'"),
        ("train:\n  lr: {choice: []}\n", "choice needs a non-empty list"),
        (
            "train:\n  batch_size: 6\nresources:\n  num_workers: 4\n",
            "must be divisible by resources.num_workers",
        ),
        ("train:\n  lr: 1\n  lr: 2\n", "line 3: duplicate key 'train.lr'"),
    ],
)
def test_bad_config_gives_one_clear_line(text, expected):
    message = error_of(text)
    assert expected in message
    assert "Traceback" not in message and len(message.splitlines()) == 1


def test_every_bad_candidate_of_a_distribution_is_reported():
    message = error_of("model:\n  eca_k: {choice: [3, 4, 6]}\n")
    assert "got 4" in message and "got 6" in message and len(message.splitlines()) == 2


def test_override_errors_name_the_override():
    message = error_of("train:\n  lr: 0.1\n", overrides=["train.lr=-3"])
    assert message.startswith("--set #1: train.lr:")


def test_fixed_run_rejects_a_search_space():
    message = error_of("train:\n  lr: {loguniform: [1.0e-5, 1.0e-3]}\n", allow_search=False)
    assert "train.lr (space.yaml:2)" in message and "raylung tune" in message


SMOKE_LIKE = (
    "data:\n  augment:\n    policy: {choice: [none, light, custom]}\n"
    "    intensity_jitter: {uniform: [0.0, 0.5], when: {data.augment.policy: custom}}\n"
)


def test_fixed_run_needs_no_value_for_a_parameter_its_fixed_values_switch_off():
    loaded = load_config(text=SMOKE_LIKE, overrides=["data.augment.policy=light"], allow_search=False)
    default = load_config(text="").config.data.augment.intensity_jitter
    assert loaded.config.data.augment.policy == "light" and not loaded.space.distributions
    assert loaded.config.data.augment.intensity_jitter == default


def test_fixed_run_still_asks_for_a_parameter_its_fixed_values_switch_on():
    message = error_of(SMOKE_LIKE, allow_search=False, overrides=["data.augment.policy=custom"])
    assert "data.augment.intensity_jitter (space.yaml:4)" in message and "policy" not in message


def test_yaml_1_1_exponent_strings_are_numbers():
    loaded = load_config(text="train:\n  lr: 1e-4\n", overrides=["train.weight_decay=1e-5"])
    assert loaded.config.train.lr == pytest.approx(1e-4)
    assert loaded.config.train.weight_decay == pytest.approx(1e-5)


def test_conditional_parameter_is_sampled_only_when_its_condition_holds():
    loaded = load_config(
        text="data:\n  augment:\n    policy: {choice: [light, custom]}\n"
        "    noise: {uniform: [0.1, 0.3], when: {data.augment.policy: custom}}\n"
    )
    seen = set()
    for seed in range(12):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        loaded.space.define_by_run(trial)
        params = loaded.space.decode(trial.params)
        assert ("data.augment.noise" in params) == (params["data.augment.policy"] == "custom")
        config = apply_params(loaded.config, params)
        if params["data.augment.policy"] == "custom":
            assert 0.1 <= config.data.augment.noise <= 0.3
        seen.add(params["data.augment.policy"])
    assert seen == {"light", "custom"}


def test_list_choices_round_trip_through_optuna():
    loaded = load_config(text="model:\n  stem_channels: {choice: [[16, 32], [32, 64]]}\n")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    loaded.space.define_by_run(trial)
    params = loaded.space.decode(trial.params)
    assert params["model.stem_channels"] in ([16, 32], [32, 64])
    assert apply_params(loaded.config, params).model.stem_channels in ((16, 32), (32, 64))


@pytest.mark.parametrize("name", ["smoke", "ours", "baselines"])
def test_shipped_search_spaces_are_valid(name):
    loaded = load_config(REPO / "search_spaces" / f"{name}.yaml")
    check_grid(loaded)
    assert loaded.space, name
    assert isinstance(loaded.config, RaylungConfig)


def test_ours_searches_what_the_paper_tunes_at_table_2_defaults():
    loaded = load_config(REPO / "search_spaces" / "ours.yaml")
    paths = set(loaded.space.paths)
    assert {"model.eca_k", "model.stem_channels", "train.lr", "data.augment.policy"} <= paths
    cfg = loaded.config
    assert (
        cfg.data.image_size,
        cfg.train.batch_size,
        cfg.train.optimizer,
        cfg.train.epochs,
        cfg.train.patience,
    ) == ((320, 240), 8, "adam", 20, 5)
    eca = next(d for d in loaded.space.distributions if d.path == "model.eca_k")
    assert "adaptive" in eca.choices and all(k % 2 for k in eca.choices if isinstance(k, int))


def test_grid_search_must_cover_the_grid_exactly():
    text = "model:\n  name: {choice: [resnet50, resnet_ours50]}\nsearch:\n  sampler: grid\n  num_samples: 3\n"
    with pytest.raises(ConfigError, match="the grid has 2 combinations"):
        check_grid(load_config(text=text, path="g.yaml"))


def test_cli_reports_bad_yaml_in_one_line_and_exit_status_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment:\n  name: x\ntrain:\n  lr: {loguniform: [1.0e-3, 1.0e-5]}\n")
    done = subprocess.run([sys.executable, "-m", "raylung", "tune", str(bad)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "bad.yaml:4: train.lr: loguniform needs low < high" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
