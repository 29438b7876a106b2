"""The chaos run (benchmarks/chaos_tune.py), CI-sized, and its checks against broken histories.

The run: 4 trials x 3 epochs (ASHA off) of search_spaces/smoke.yaml's tiny model on a dedicated
two-raylet cluster, with a Ray Train worker SIGKILLed, the worker node killed and replaced,
the tune driver killed and resumed, and storage unwritable for 10 s; one test per check, so a
failure names the check. Each check is first shown to fail on hand-built bad input, so none
can pass for lack of anything to look at.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT, ray_env

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import chaos_checks as checks  # noqa: E402

# --- each check fails on a broken history ------------------------------------------------------


def test_exits_fail_on_a_nonzero_exit_and_ignore_the_killed_driver():
    killed = {"role": "tune", "rc": -9, "killed": True}
    assert checks.check_exits([killed, {"role": "resume", "rc": 0}]).passed
    assert not checks.check_exits([killed, {"role": "resume", "rc": 1}]).passed
    assert not checks.check_exits([killed]).passed  # nothing ran to its end
    assert not checks.check_exits([{"role": "resume", "rc": "timeout"}]).passed


def test_terminal_fails_on_an_errored_or_missing_trial():
    assert checks.check_terminal({"a": "TERMINATED", "b": "TERMINATED"}, 2).passed
    assert not checks.check_terminal({"a": "TERMINATED", "b": "ERROR"}, 2).passed
    assert not checks.check_terminal({"a": "TERMINATED", "b": "RUNNING"}, 2).passed
    assert not checks.check_terminal({"a": "TERMINATED"}, 2).passed


GOOD = {"checkpoint": [1, 2, 3], "result.json": [1, 2, 3], "wandb": [1, 2, 3]}


@pytest.mark.parametrize(
    "source, epochs",
    [
        ("checkpoint", [1, 2, 2, 3]),  # an epoch counted twice
        ("result.json", [1, 3]),  # an epoch lost
        ("wandb", [1, 2, 3, 3]),
        ("wandb", [2, 3]),
        ("wandb", []),  # a history that never reached W&B
        ("result.json", [1]),  # ends two epochs before the checkpoint
    ],
)
def test_epochs_fail_on_a_duplicated_or_missing_epoch(source, epochs):
    assert checks.check_epochs({"t1": GOOD}, {"t1": True}).passed
    broken = {**GOOD, source: epochs}
    assert not checks.check_epochs({"t1": GOOD, "t2": broken}, {"t1": True, "t2": True}).passed


def test_epochs_skip_only_a_trial_that_trained_nothing():
    empty = {"checkpoint": [], "result.json": [], "wandb": []}
    histories = {"t1": GOOD, "t2": empty}
    assert checks.check_epochs(histories, {"t1": True}, trained={"t1": 3, "t2": 0}).passed
    assert not checks.check_epochs(histories, {"t1": True}, trained={"t1": 3, "t2": 2}).passed  # lost
    assert not checks.check_epochs({"t2": empty}, {}, trained={"t2": 0}).passed  # nothing checked


def test_epochs_allow_a_stopped_trial_one_epoch_beyond_what_tune_heard():
    stopped = {"checkpoint": [1, 2], "result.json": [1], "wandb": [1]}
    assert checks.check_epochs({"t": stopped}, {"t": False}).passed
    assert not checks.check_epochs({"t": stopped}, {"t": True}).passed
    assert not checks.check_epochs({}, {}).passed


def test_best_export_fails_on_a_changed_or_missing_tensor():
    weights = {"conv.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    same = {k: v.clone() for k, v in weights.items()}
    assert checks.check_best_export(weights, same, "t").passed
    changed = {**same, "fc.bias": torch.tensor([0.0, 1e-6])}
    assert not checks.check_best_export(weights, changed, "t").passed
    assert not checks.check_best_export(weights, {"conv.weight": same["conv.weight"]}, "t").passed
    assert not checks.check_best_export(weights, {**same, "fc.bias": same["fc.bias"].double()}, "t").passed
    assert not checks.check_best_export(None, same, "t").passed
    assert not checks.check_best_export({}, {}, "t").passed


def _study(*rows):
    return [{"number": n, "state": state, "params": params} for n, state, params in rows]


def test_study_fails_on_a_duplicated_or_missing_trial():
    a, b = {"lr": 0.01, "model.eca_k": "3"}, {"lr": 0.002, "model.eca_k": "5"}
    tune = {"t1": {"status": "TERMINATED", "params": a}, "t2": {"status": "TERMINATED", "params": b}}
    never_ran = {"lr": 0.5, "model.eca_k": "3"}
    good = _study((0, "COMPLETE", a), (1, "PRUNED", b), (2, "RUNNING", never_ran), (3, "FAIL", never_ran))
    assert checks.check_study(tune, good).passed
    duplicated = _study((0, "COMPLETE", a), (1, "PRUNED", b), (2, "COMPLETE", dict(a)))
    assert not checks.check_study(tune, duplicated).passed
    missing = _study((0, "COMPLETE", a), (1, "RUNNING", b))  # t2 finished, its study trial never told
    assert not checks.check_study(tune, missing).passed
    extra = _study((0, "COMPLETE", a), (1, "PRUNED", b), (2, "COMPLETE", never_ran))
    assert not checks.check_study(tune, extra).passed
    errored = {**tune, "t2": {"status": "ERROR", "params": b}}
    assert checks.check_study(errored, _study((0, "COMPLETE", a), (1, "FAIL", b))).passed
    disagreeing = checks.check_study(errored, _study((0, "COMPLETE", a), (1, "PRUNED", b)))
    assert not disagreeing.passed and "t2 is ERROR, its study trial 1 PRUNED" in disagreeing.detail
    assert not checks.check_study({}, []).passed


def test_study_copy_fails_when_storage_lacked_a_finished_trial():
    assert checks.check_study_copy({"driver": [0], "storage": [0]}).passed
    assert not checks.check_study_copy({"driver": [0, 1], "storage": [0]}).passed
    assert not checks.check_study_copy({"driver": [0], "storage": []}).passed
    assert not checks.check_study_copy({"driver": [], "storage": []}).passed
    assert not checks.check_study_copy(None).passed


def test_epoch_problems_name_what_is_wrong():
    assert checks.epoch_problems([1, 2, 3]) == []
    assert checks.epoch_problems([1, 1, 2]) == ["epoch 1 twice"]
    assert checks.epoch_problems([1, 3]) == ["epochs [2] missing"]
    assert checks.epoch_problems([2, 1]) == ["epochs out of order"]
    assert checks.epoch_problems([]) == ["no epochs"]


# --- what the checks read -----------------------------------------------------------------


def write_run_file(path, rows: list[dict]) -> None:
    """A minimal offline `.wandb` file: one history record per row (LevelDB log framing)."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    data = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
    for step, row in enumerate(rows, 1):
        record = wandb_internal_pb2.Record()
        record.history.step.num = step
        for key, value in row.items():
            item = record.history.item.add()
            item.key, item.value_json = key, json.dumps(value)
        payload = record.SerializeToString()
        checksum = zlib.crc32(payload, zlib.crc32(bytes([1]))) & 0xFFFFFFFF
        data += struct.pack("<IHB", checksum, len(payload), 1) + payload
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_wandb_history_is_the_newest_folder_of_each_run(tmp_path):
    root = tmp_path / "wandb"
    write_run_file(root / "offline-run-20260101_000001-t1" / "run-t1.wandb", [{"epoch": 1}, {"epoch": 2}])
    write_run_file(root / "offline-run-20260101_000500-t1" / "run-t1.wandb", [{"epoch": 3}])  # a resume
    write_run_file(root / "offline-run-20260101_000002-t2" / "run-t2.wandb", [{"epoch": 1}, {"epoch": 2}])
    superseded = root / "superseded" / "offline-run-20260101_000900-t2" / "run-t2.wandb"
    write_run_file(superseded, [{"epoch": 1}])
    kept = root / "offline-run-20260101_000600-t3" / "run-t3.wandb"
    write_run_file(kept, [{"epoch": 1}, {"epoch": 2}, {"epoch": 2, "restated": 1}])
    with kept.open("ab") as handle:  # a driver killed mid-write leaves a torn record
        handle.write(b"\x00\x01\x02\x03\x40\x00\x01torn")
    histories = checks.wandb_histories(root)
    assert histories == {"t1": [3], "t2": [1, 2], "t3": [1, 2]}
    assert not checks.check_epochs(
        {"t1": {"checkpoint": [1, 2, 3], "result.json": [1, 2, 3], "wandb": histories["t1"]}}, {"t1": True}
    ).passed


def test_result_json_and_tune_state_are_read_as_written(tmp_path):
    trial = tmp_path / "tune" / "t1"
    trial.mkdir(parents=True)
    rows = [{"epoch": 1}, {"epoch": 2}, {"epoch": 2, "restated": 1}, {"done": True}]
    (trial / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    assert checks.result_epochs(trial) == [1, 2]
    for stamp, status in (("2026-12-07_09-59-59", "RUNNING"), ("2026-12-07_10-00-01", "TERMINATED")):
        state = json.dumps({"trial_id": "t1", "status": status, "config": {"train.lr": 0.01}})
        (tmp_path / "tune" / f"experiment_state-{stamp}.json").write_text(
            json.dumps({"trial_data": [[state, "{}"]]})
        )
    trials = checks.tune_trials(tmp_path / "tune")
    assert trials["t1"]["status"] == "TERMINATED" and trials["t1"]["config"] == {"train.lr": 0.01}


# --- the chaos run ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chaos_report(tmp_path_factory, lc25000_root):
    """One CI-sized chaos run (a subprocess with a cluster of its own), read back as JSON."""
    work = tmp_path_factory.mktemp("chaos")  # kept by pytest (its last 3 sessions): logs, ledger, storage
    out = work / "report.json"
    env = ray_env()
    env.pop("RAY_ADDRESS", None)  # the run starts and attaches to its own cluster
    env["RAYLUNG_SHARED_DATA"] = str(lc25000_root.parent)
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "chaos_tune.py"), "--quick", "--json"]
        + ["--work", str(work / "run"), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    if not out.is_file():
        pytest.fail(
            f"the chaos run wrote no report (rc {done.returncode}):\n"
            + done.stdout[-4000:]
            + done.stderr[-4000:]
        )
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.multinode
@pytest.mark.shared_data
@pytest.mark.parametrize("name", checks.CHECK_NAMES)
def test_chaos_run(chaos_report, name):
    by_name = {c["name"]: c for c in chaos_report["checks"]}
    assert name in by_name, f"check {name} did not run: {chaos_report['checks']}"
    check = by_name[name]
    assert check["passed"], f"{check['title']}: {check['detail']} (run kept in {chaos_report['work']})"


@pytest.mark.slow
@pytest.mark.multinode
@pytest.mark.shared_data
def test_chaos_run_injected_every_fault(chaos_report):
    faults = chaos_report["figures"]["faults"]
    assert faults["driver_kill"] == 1 and faults["node_kill"] == 1, chaos_report["faults"]
    assert faults["worker_kill"] >= 1 and faults["storage_freeze"] == 1, chaos_report["faults"]
    freeze = next(e for e in chaos_report["faults"] if e["kind"] == "storage_freeze")
    assert freeze["write_blocked"] and freeze["writable_after"]
    assert chaos_report["figures"]["epochs_trained"] >= chaos_report["figures"]["epochs_kept"] > 0
