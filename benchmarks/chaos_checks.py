"""What must hold after a chaos run, as pure functions over what the run left behind.

Each ``check_*`` takes plain data (epoch lists, trial states, tensors, study rows) and returns a
:class:`Check`; the ``read_*`` functions gather that data from an experiment folder, so the
unit tests can feed every check a hand-built broken history (a duplicated epoch, a missing
one, a changed tensor, a duplicated study trial) and see it fail: no check passes for lack of
anything to look at.

1. every ``raylung tune`` process exited 0 (the one the injector killed excepted);
2. every trial reached a terminal state (TERMINATED; an ERROR is a trial the faults broke);
3. no epoch lost or counted twice in any trial's history: its checkpoint, Tune's result.json
   and the W&B history ``wandb sync`` would upload;
4. the best export equals, tensor for tensor, the checkpoint best.json names;
5. the Optuna study holds every finished trial exactly once;
6. the storage copy of the study held every finished trial when the driver was killed.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

EXITS, TERMINAL, EPOCHS, BEST_EXPORT, STUDY, STUDY_COPY = (
    "tune_exits",
    "terminal_trials",
    "epochs_once",
    "best_export",
    "study_once",
    "study_copy_at_kill",
)
CHECK_NAMES = (EXITS, TERMINAL, EPOCHS, BEST_EXPORT, STUDY, STUDY_COPY)
TITLES = {
    EXITS: "every tune process exited 0",
    TERMINAL: "every trial reached a terminal state",
    EPOCHS: "no epoch lost or counted twice (checkpoint, result.json, W&B)",
    BEST_EXPORT: "best export equals the checkpoint best.json names",
    STUDY: "optuna.db holds every finished trial exactly once",
    STUDY_COPY: "storage copy of optuna.db held every finished trial at the driver kill",
}
FINISHED_OPTUNA = ("COMPLETE", "PRUNED", "FAIL")
FINISHED_TUNE = ("TERMINATED", "ERROR")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    @property
    def title(self) -> str:
        return TITLES.get(self.name, self.name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"title": self.title}


# --- 1. exits --------------------------------------------------------------------------------


def check_exits(processes: Sequence[Mapping[str, Any]]) -> Check:
    """`processes`: {"role", "rc", "killed"} per tune process; a killed one is not judged."""
    judged = [p for p in processes if not p.get("killed")]
    bad = [f"{p['role']} exited {p['rc']}" for p in judged if p.get("rc") != 0]
    if not judged:
        return Check(EXITS, False, "no tune process ran to its end")
    killed = len(processes) - len(judged)
    detail = "; ".join(bad) or f"{len(judged)} exited 0 ({killed} killed by the injector)"
    return Check(EXITS, not bad, detail)


# --- 2. terminal states ----------------------------------------------------------------------


def check_terminal(statuses: Mapping[str, str], expected: int, source: str = "") -> Check:
    """`statuses`: trial id -> Tune's status in the final experiment state (`source`: its file)."""
    bad = {t: s for t, s in sorted(statuses.items()) if s != "TERMINATED"}
    problems = [f"{t}: {s}" for t, s in bad.items()]
    if len(statuses) != expected:
        problems.append(f"{len(statuses)} trials, expected {expected}")
    detail = "; ".join(problems) or f"{len(statuses)} trials TERMINATED"
    return Check(TERMINAL, not problems, detail + (f" (in {source})" if source else ""))


# --- 3. epochs -------------------------------------------------------------------------------


def epoch_problems(epochs: Sequence[int]) -> list[str]:
    """What is wrong with one history's epoch column: it must read 1, 2, ..., n (n >= 1)."""
    if not epochs:
        return ["no epochs"]
    seen, problems = set(), []
    for epoch in epochs:
        if epoch in seen:
            problems.append(f"epoch {epoch} twice")
        seen.add(epoch)
    missing = sorted(set(range(1, max(epochs) + 1)) - seen)
    if missing:
        problems.append(f"epochs {missing} missing")
    if not problems and list(epochs) != sorted(epochs):
        problems.append("epochs out of order")
    return problems


def check_epochs(
    histories: Mapping[str, Mapping[str, Sequence[int]]],
    complete: Mapping[str, bool],
    trained: Mapping[str, int] | None = None,
) -> Check:
    """`histories`: trial id -> {source: epoch column}, sources "checkpoint", "result.json",
    "wandb". Each must read 1..n; the others must end at the checkpoint's last epoch, or one
    before it for a trial stopped early (its last epoch may train after Tune stopped it);
    `complete`: trial id -> whether it trained every epoch; `trained`: trial id -> epochs the
    ledger saw it train: a trial that trained none and kept none (it errored before its first
    epoch) has nothing to lose and is only counted."""
    problems, idle = [], []
    if not histories:
        return Check(EPOCHS, False, "no trial histories")
    for trial, sources in sorted(histories.items()):
        if trained is not None and not trained.get(trial) and not any(sources.values()):
            idle.append(trial)
            continue
        for source in ("checkpoint", "result.json", "wandb"):
            epochs = list(sources.get(source) or [])
            problems += [f"{trial} {source}: {p}" for p in epoch_problems(epochs)]
        kept = max(sources.get("checkpoint") or [0])
        for source in ("result.json", "wandb"):
            last = max(sources.get(source) or [0])
            slack = 0 if complete.get(trial) else 1
            if not kept - slack <= last <= kept:
                problems.append(f"{trial} {source}: ends at epoch {last}, the checkpoint at {kept}")
    detail = "; ".join(problems[:8]) + (f" (+{len(problems) - 8} more)" if len(problems) > 8 else "")
    checked = len(histories) - len(idle)
    detail = detail or f"{checked} trials, 3 sources each, every epoch once"
    if idle:
        detail += f" ({len(idle)} trained no epoch)"
    return Check(EPOCHS, not problems and checked > 0, detail)


# --- 4. best export --------------------------------------------------------------------------


def check_best_export(
    named: Mapping[str, Any] | None, exported: Mapping[str, Any] | None, where: str
) -> Check:
    """`named`, `exported`: state dicts (name -> tensor) of best.json's checkpoint and export."""
    import torch

    if named is None or exported is None:
        return Check(BEST_EXPORT, False, f"missing: {where}")
    problems = []
    if set(named) != set(exported):
        problems.append(f"keys differ: {sorted(set(named) ^ set(exported))[:5]}")
    for key in sorted(set(named) & set(exported)):
        a, b = named[key], exported[key]
        if a.shape != b.shape or a.dtype != b.dtype or not torch.equal(a, b):
            problems.append(f"tensor {key} differs")
    if not named:
        problems.append("no tensors")
    detail = "; ".join(problems[:5]) or f"{len(named)} tensors equal ({where})"
    return Check(BEST_EXPORT, not problems, detail)


# --- 5, 6. the Optuna study ------------------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def matches(params: Mapping[str, Any], study_params: Mapping[str, Any]) -> bool:
    return set(params) == set(study_params) and all(_same(params[k], study_params[k]) for k in params)


def check_study(tune_trials: Mapping[str, Mapping[str, Any]], study: Sequence[Mapping[str, Any]]) -> Check:
    """`tune_trials`: finished trial id -> {"status": TERMINATED | ERROR, "params": sampled};
    `study`: the study's trials as {"number", "state", "params"}.

    Each finished trial must match (by its parameters) exactly one finished study trial, in the
    state that agrees with Tune's (TERMINATED: COMPLETE or PRUNED; ERROR: FAIL), and no
    COMPLETE or PRUNED study trial may be left over (TPE would learn from it). A FAIL left over
    is a suggestion no trial ever ran (its driver died first), closed so it is not RUNNING
    forever: noted, not an error."""
    problems, used = [], set()
    if not tune_trials:
        problems.append("no finished trials")
    finished = [t for t in study if t["state"] in FINISHED_OPTUNA]
    for trial, record in sorted(tune_trials.items()):
        hits = [t for t in finished if matches(record["params"], t["params"])]
        used.update(t["number"] for t in hits)
        agreeing = ("FAIL",) if record["status"] == "ERROR" else ("COMPLETE", "PRUNED")
        if len(hits) != 1:
            problems.append(f"{trial}: in {len(hits)} finished study trials")
        elif hits[0]["state"] not in agreeing:
            problems.append(
                f"{trial} is {record['status']}, its study trial {hits[0]['number']} {hits[0]['state']}"
            )
    left = [t for t in finished if t["number"] not in used]
    extra = [t["number"] for t in left if t["state"] != "FAIL"]
    if extra:
        problems.append(f"study trials {extra} match no finished trial")
    closed = [t["number"] for t in left if t["state"] == "FAIL"]
    detail = "; ".join(problems) or f"{len(tune_trials)} finished trials, each once in the study"
    if closed:
        detail += f" (study trials {closed}: never ran, closed as FAIL)"
    return Check(STUDY, not problems, detail)


def check_study_copy(at_kill: Mapping[str, Any] | None) -> Check:
    """`at_kill`: {"driver": [numbers finished in the driver's study], "storage": [numbers
    finished in the storage copy]}, read ~5 s after the first trial finished, as the driver
    was killed."""
    if not at_kill:
        return Check(STUDY_COPY, False, "the driver was never killed: nothing recorded")
    driver, storage = set(at_kill.get("driver") or []), set(at_kill.get("storage") or [])
    if not driver:
        return Check(STUDY_COPY, False, "the driver's study held no finished trial at the kill")
    missing = sorted(driver - storage)
    detail = (
        f"storage copy lacked finished trials {missing} of {sorted(driver)}"
        if missing
        else f"storage copy held all {len(driver)} finished trials"
    )
    return Check(STUDY_COPY, not missing, detail)


# --- reading what the run left behind ----------------------------------------------------------


def study_trials(db: Path) -> list[dict[str, Any]]:
    """Every trial of every study in an Optuna sqlite file, params in their external form."""
    if not Path(db).is_file():
        return []
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_compatibility_check=True)
    rows = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        rows += [{"number": t.number, "state": t.state.name, "params": t.params} for t in study.trials]
    storage.remove_session()
    return rows


def finished_numbers(db: Path) -> list[int]:
    """Finished trial numbers, read straight from sqlite (read-only, while a driver writes)."""
    if not Path(db).is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            states = ",".join(f"'{s}'" for s in FINISHED_OPTUNA)
            return sorted(n for (n,) in conn.execute(f"SELECT number FROM trials WHERE state IN ({states})"))
    except sqlite3.Error:
        return []


def tune_trials(tune_dir: Path) -> dict[str, dict[str, Any]]:
    """trial id -> {"status", "config"} from Tune's newest experiment state file: the one of the
    latest driver session, by the start time in its name (Tune copies every session's file to
    storage together, so their times on disk are alike)."""
    states = sorted(Path(tune_dir).glob("experiment_state-*.json"))
    if not states:
        return {}
    data = json.loads(states[-1].read_text())
    trials = {}
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0] if isinstance(entry, list) else entry)
        trials[state["trial_id"]] = {
            "status": state.get("status"),
            "config": state.get("config") or {},
            "state_file": states[-1].name,
        }
    return trials


def result_epochs(trial_dir: Path) -> list[int]:
    """The epoch column of Tune's result.json for one trial."""
    path = Path(trial_dir) / "result.json"
    if not path.is_file():
        return []
    epochs = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "epoch" in row and not row.get("restated"):  # a restated row repeats a kept epoch
            epochs.append(int(row["epoch"]))
    return epochs


def checkpoint_epochs(trials_storage: Path, trial_id: str) -> list[int]:
    """The epoch column of the history kept in the trial's latest checkpoint."""
    history = checkpoint_history(trials_storage, trial_id)
    return [int(row["epoch"]) for row in history]


def checkpoint_history(trials_storage: Path, trial_id: str) -> list[dict[str, Any]]:
    run = Path(trials_storage) / trial_id
    snapshot = run / "checkpoint_manager_snapshot.json"
    folders = sorted(run.glob("checkpoint_*"))
    if snapshot.is_file():
        try:
            data = json.loads(snapshot.read_text())
            latest = data.get("latest_checkpoint_result") or {}
            path = (latest.get("checkpoint") or {}).get("path")
            if path:
                folders = [Path(str(path).removeprefix("file://"))]
        except (json.JSONDecodeError, AttributeError):
            pass
    for folder in reversed(folders):
        state = folder / "state.json"
        if state.is_file():
            return json.loads(state.read_text()).get("history", [])
    return []


def wandb_histories(wandb_dir: Path) -> dict[str, list[int]]:
    """run id -> the epoch column ``wandb sync`` would upload for it.

    ``wandb sync`` uploads each offline run folder as a whole run: of several folders with one
    run id (a trial restarted by a resume), the last one synced replaces the others
    (wandb/wandb#3841, #5865), so what W&B ends up with is the newest folder's history. Folders
    under ``superseded/`` are left out (the resumed run moved them aside, sync skips them),
    and so are rows flagged ``restated`` (a repeat of an epoch already kept)."""
    sys.path.insert(0, str(REPO / "tests"))
    from wandb_records import read_records

    newest: dict[str, Path] = {}
    folders = [
        p for p in Path(wandb_dir).rglob("offline-run-*") if p.is_dir() and "superseded" not in p.parts
    ]
    for folder in sorted(folders, key=lambda p: p.name):  # offline-run-YYYYMMDD_HHMMSS-<id>
        for file in folder.glob("*.wandb"):
            newest[file.stem.removeprefix("run-")] = file
    histories = {}
    for run_id, file in newest.items():
        epochs = []
        for record in read_records(file, strict=False):  # a killed driver's run file may be torn
            if record.WhichOneof("record_type") != "history":
                continue
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            if "epoch" in row and not row.get("restated"):
                epochs.append(int(row["epoch"]))
        histories[run_id] = epochs
    return histories


def load_tensors(folder: Path) -> dict[str, Any] | None:
    """A model folder's weights (``model.safetensors``: no pickle; a ``.pt`` state dict is read
    with ``torch.load(weights_only=True)``)."""
    folder = Path(str(folder).removeprefix("file://"))
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    for name in ("model.pt", "weights.pt"):
        if (folder / name).is_file():
            import torch

            return torch.load(folder / name, map_location="cpu", weights_only=True)
    return None
