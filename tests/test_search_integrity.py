"""Every trial runs exactly the pipeline its parameters say, checked before any compute.

These tests look at what a user gets, not at the parameters: the augmentation transforms as
built, the model as built (parameters, fingerprint), the trials `--dry-run` lists, and what a
failed start leaves behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raylung.config import AugmentConfig, RaylungConfig
from raylung.config.loading import load_config, trial_config
from raylung.config.search_space import get_path
from raylung.data.policies import POLICIES, STRENGTH_FIELDS
from raylung.plan.dry_run import plan_trials
from raylung.plan.effective import effective_pipeline
from raylung.plan.space_check import SpaceCheckError, check_space, require_sound_space

REPO = Path(__file__).resolve().parents[1]
SPACES = REPO / "search_spaces"
POLICY = "data.augment.policy"


def built(policy: str) -> dict[str, float]:
    """The transforms a named policy documents (docs/data.md's table), as built: p > 0 only."""
    return {name: p for name, p in POLICIES[policy].items() if p > 0}


# --- the two defects, as a user sees them ------------------------------------------------------


def test_named_policies_of_ours_yaml_keep_every_documented_transform():
    trials = plan_trials(load_config(SPACES / "ours.yaml"))
    assert len(trials) == 48
    by_policy: dict[str, int] = {}
    for trial in trials:
        policy = trial.params[POLICY]
        by_policy[policy] = by_policy.get(policy, 0) + 1
        if policy == "custom":
            custom = {
                k.rsplit(".", 1)[-1]: v for k, v in trial.params.items() if k.startswith("data.augment.")
            }
            assert trial.pipeline.augment == {k: v for k, v in custom.items() if k != "policy" and v > 0}
        else:
            assert trial.pipeline.augment == built(policy), (policy, trial.pipeline.augment)
            assert not any(k.startswith("data.augment.") and k != POLICY for k in trial.params)
    assert set(by_policy) == {"light", "medium", "heavy", "custom"}


def test_a_light_trial_of_ours_yaml_trains_rotate90_brightness_and_intensity_jitter():
    loaded = load_config(SPACES / "ours.yaml")
    cfg = trial_config(loaded.config, loaded.space, {POLICY: "light", "model.eca_k": 5, "train.lr": 1e-4})
    augment = effective_pipeline(cfg).augment
    assert augment["rotate90"] == 0.5
    assert augment["brightness_contrast"] == 0.2
    assert augment["intensity_jitter"] == 0.2
    # the base config the experiment stores holds no candidate of an inactive branch
    stored = loaded.config.model_dump(mode="json")["data"]["augment"]
    assert all(stored[name] is None for name in STRENGTH_FIELDS), stored


def test_a_stale_value_of_an_inactive_parameter_never_reaches_the_trial():
    """Even a base that holds a value for a conditional field (an older base_config.json) is
    reset: the inactive parameter keeps its schema default."""
    loaded = load_config(SPACES / "ours.yaml")
    poisoned = loaded.config.model_copy(
        update={"data": loaded.config.data.model_copy(update={"augment": AugmentConfig(rotate90=0.0)})}
    )
    cfg = trial_config(poisoned, loaded.space, {POLICY: "heavy", "model.eca_k": 3, "train.lr": 1e-4})
    assert effective_pipeline(cfg).augment == built("heavy")


def test_the_two_stem_choices_of_smoke_yaml_build_different_models():
    loaded = load_config(SPACES / "smoke.yaml")
    stems = next(d for d in loaded.space.distributions if d.path == "model.stem_channels").choices
    models = [
        effective_pipeline(
            trial_config(loaded.config, loaded.space, {POLICY: "none", "model.stem_channels": stem})
        ).model
        for stem in stems
    ]
    assert len({m.fingerprint for m in models}) == len(stems)
    assert len({m.params for m in models}) == len(stems)
    assert [m.arch["stem_channels"] for m in models] == [[8, 16], [16, 32]]


def test_a_stem_search_the_tiny_model_cannot_see_is_an_error_naming_its_line():
    text = (SPACES / "smoke.yaml").read_text().replace("[[32, 64], [64, 128]]", "[[8, 16], [16, 32]]")
    loaded = load_config(text=text, path="smoke.yaml")
    with pytest.raises(SpaceCheckError) as info:
        require_sound_space(loaded)
    message = str(info.value)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith("stem_channels:"))
    assert f"smoke.yaml:{line}: model.stem_channels:" in message
    assert "every value builds the same pipeline" in message and "stem_channels [8, 8]" in message


def test_two_choices_that_build_the_same_model_are_a_warning_naming_both():
    loaded = load_config(
        text="model:\n  name: resnet_ours_tiny\n  stem_channels: {choice: [[8, 8], [16, 16], [32, 64]]}\n"
    )
    problems = check_space(loaded)
    assert [p.level for p in problems] == ["warning"]
    assert "[8, 8]" in problems[0].message and "[16, 16]" in problems[0].message


def test_a_transform_that_cannot_act_on_the_input_is_a_no_op_parameter():
    loaded = load_config(
        text="data:\n  in_chans: 1\n  augment:\n    policy: custom\n    hed_jitter: {uniform: [0.1, 0.5]}\n"
    )
    problems = check_space(loaded)
    assert [(p.level, p.path) for p in problems] == [("error", "data.augment.hed_jitter")]
    assert "1-channel" in problems[0].message


def test_a_combination_a_model_cannot_build_is_caught_before_any_trial():
    loaded = load_config(
        text="model:\n  name: {choice: [resnet_ours_tiny, resnet50]}\n  eca_k: {choice: [3, 5]}\n"
    )
    errors = [p for p in check_space(loaded) if p.level == "error"]
    assert errors and "resnet50" in str(errors[0]) and "eca_k" in str(errors[0])


@pytest.mark.parametrize("name", ["smoke", "ours", "baselines"])
def test_shipped_spaces_pass_their_own_check(name):
    assert check_space(load_config(SPACES / f"{name}.yaml")) == []


# --- the DSL, property-tested ------------------------------------------------------------------

STRENGTHS = st.sampled_from(STRENGTH_FIELDS)


@st.composite
def spaces(draw) -> tuple[str, dict]:
    """A random search space with conditional, and nested conditional, strengths."""
    policies = draw(st.lists(st.sampled_from(["none", "light", "medium", "heavy", "custom"]), min_size=2,
                             max_size=5, unique=True))  # fmt: skip
    lines = ["data:", "  augment:", f"    policy: {{choice: {json.dumps(policies)}}}"]
    # A second choice, itself conditional on the policy: conditions on conditions.
    gate_when = draw(st.lists(st.sampled_from(policies), min_size=1, max_size=len(policies), unique=True))
    lines.append(f"    hflip: {{choice: [0.0, 1.0], when: {{data.augment.policy: {json.dumps(gate_when)}}}}}")
    fields = draw(st.lists(STRENGTHS.filter(lambda f: f != "hflip"), min_size=1, max_size=4, unique=True))
    conditions = {}
    for name in fields:
        low = draw(st.sampled_from([0.0, 0.1, 0.3]))
        nested = draw(st.booleans())
        if nested:
            when = {"data.augment.hflip": [1.0]}
        else:
            when = {POLICY: draw(st.lists(st.sampled_from(policies), min_size=1, unique=True))}
        conditions[f"data.augment.{name}"] = when
        lines.append(f"    {name}: {{uniform: [{low}, 0.9], when: {json.dumps(when)}}}")
    return "\n".join(lines) + "\n", conditions


def _holds(when: dict, params: dict, all_conditions: dict) -> bool:
    for path, allowed in when.items():
        if path not in params or params[path] not in allowed:
            return False
    return True


def _fixed_yaml(values: dict) -> str:
    rows = ["data:", "  augment:"]
    rows += [f"    {path.rsplit('.', 1)[-1]}: {json.dumps(v)}" for path, v in values.items()]
    return "\n".join(rows) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces(), st.integers(0, 2**16))
def test_inactive_parameters_never_leak_and_tune_equals_plain_train(space_and_conditions, seed):
    text, conditions = space_and_conditions
    loaded = load_config(text=text)
    defaults = RaylungConfig().model_dump(mode="json")
    base = loaded.config.model_dump(mode="json")
    for path in conditions:  # the stored base holds no candidate of a conditional parameter
        assert get_path(base, path) == get_path(defaults, path), path

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(4):
        trial = study.ask()
        loaded.space.define_by_run(trial)
        values = loaded.space.decode(trial.params)
        cfg = trial_config(loaded.config, loaded.space, values)
        dumped = cfg.model_dump(mode="json")
        for path, when in conditions.items():
            active = _holds(when, values, conditions)
            assert (path in values) == active, (path, values)
            expected = values[path] if active else get_path(defaults, path)
            assert get_path(dumped, path) == expected, (path, values)
        # `raylung train` with the same values fixed builds the very same pipeline
        plain = load_config(text=_fixed_yaml(values), allow_search=False).config
        assert effective_pipeline(plain) == effective_pipeline(cfg)


@pytest.mark.parametrize("policy", ["light", "medium", "heavy"])
def test_a_fixed_policy_resolves_alike_in_tune_and_train(policy):
    loaded = load_config(SPACES / "ours.yaml", [f"data.augment.policy={policy}"])
    plain = load_config(text=f"data:\n  augment:\n    policy: {policy}\n", allow_search=False).config
    for trial in plan_trials(loaded)[:6]:
        assert trial.pipeline.augment == effective_pipeline(plain).augment == built(policy)


# --- the command line --------------------------------------------------------------------------


def raylung(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raylung", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(("name", "count"), [("smoke", 4), ("ours", 48), ("baselines", 5)])
def test_dry_run_lists_the_trials_and_passes_its_check(name, count, tmp_path):
    out = tmp_path / "trials.jsonl"
    done = raylung("tune", str(SPACES / f"{name}.yaml"), "--dry-run", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"trials written to {out}" in done.stdout.replace("\n", "")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == count
    for row in rows:
        assert {"params", "augment", "model"} <= set(row)
        assert {"name", "params", "fingerprint"} <= set(row["model"])
    assert not (tmp_path / "experiments").exists()  # nothing made but the file asked for
    if name == "baselines":
        assert sorted(r["model"]["name"] for r in rows) == sorted(
            ["resnet50", "resnet50c", "resnet50d", "resnext50_32x4d", "resnet_ours50"]
        )


def test_dry_run_draws_what_the_search_draws():
    """Same sampler, seed and define-by-run space as the tune's searcher: the trials match."""
    from raylung.plan.sampler import make_sampler

    loaded = load_config(SPACES / "ours.yaml")
    search = loaded.config.search
    study = optuna.create_study(
        sampler=make_sampler("tpe", search.seed, search.n_startup_trials, loaded.space)
    )
    planned = plan_trials(loaded)
    for trial in planned[: search.n_startup_trials]:
        asked = study.ask()
        loaded.space.define_by_run(asked)
        assert loaded.space.decode(asked.params) == trial.params


def test_dry_run_of_a_no_op_parameter_exits_non_zero_naming_it(tmp_path):
    space = tmp_path / "noop.yaml"
    space.write_text(
        textwrap.dedent("""\
        model:
          name: resnet_ours_tiny
          stem_channels: {choice: [[8, 16], [16, 32]]}
        train:
          lr: {loguniform: [1.0e-4, 1.0e-2]}
        """)
    )
    done = raylung("tune", str(space), "--dry-run", "--out", str(tmp_path / "t.jsonl"), cwd=tmp_path)
    assert done.returncode == 2
    assert "noop.yaml:3: model.stem_channels:" in done.stdout.replace("\n", " ")
    assert "Traceback" not in done.stderr


_START = """
import json, sys
from raylung.cli.main import main
sys.argv = ["raylung", *sys.argv[1:]]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
ray = sys.modules.get("ray")
print(json.dumps({"rc": code, "ray_started": bool(ray and ray.is_initialized())}))
"""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.root=/nonexistent/lung", "data.demo=false"], "data root /nonexistent/lung does not exist"),
        (["model.stem_channels={choice: [[8, 16], [16, 32]]}"], "model.stem_channels"),
    ],
)
def test_a_failed_start_leaves_no_experiment_and_starts_no_ray(tmp_path, overrides, expected):
    storage = tmp_path / "experiments"
    args = ["tune", str(SPACES / "smoke.yaml"), "--set", f"experiment.storage={storage}", "--set",
            "wandb.mode=offline"]  # fmt: skip
    for override in overrides:
        args += ["--set", override]
    done = subprocess.run(
        [sys.executable, "-c", _START, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"rc": 2, "ray_started": False}, done.stderr
    assert expected in done.stderr.replace("\n", " ")
    assert not storage.exists() or not any(storage.iterdir())
