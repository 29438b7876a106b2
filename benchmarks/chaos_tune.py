"""The chaos run (issue 18): a real ``raylung tune`` on a two-raylet cluster, under faults.

A dedicated cluster on loopback (tests/ray_cluster.py: ``ray start --head`` and ``ray start
--address``, one CPU each, ports of their own) runs ``raylung tune`` as a subprocess in its own
process group: search_spaces/smoke.yaml's tiny model on small images of the LC25000 dev set
(or the demo data), ASHA on, a checkpoint every epoch, W&B offline, storage a ``file://`` URI.
While it runs, :mod:`chaos_faults` (seeded, every wait bounded):

1. SIGKILLs a random Ray Train worker soon after the first epoch is reported (more of them
   later in the full run);
2. kills the whole worker node (every process of its raylet) and joins a fresh one 15 s later;
3. kills the tune driver's process group once: as soon as the Optuna study holds a finished
   trial, plus 5 s for a copy of the study to reach storage; then runs
   ``raylung tune --resume <experiment>``;
4. makes storage unwritable for a window (20 s; 10 s in ``--quick``) once the resumed search
   trains again, checking that a write really fails inside it.

An epoch ledger outside storage (:mod:`chaos_ledger`, a Ray Train callback the cluster's
``RAY_TRAIN_CALLBACKS`` names) counts the epochs actually trained. At the end the checks of
:mod:`chaos_checks` are printed as a table (``--json``: as JSON), with the figures: faults by
kind, trials completed / pruned, epochs trained / kept / recomputed, worker-group starts and
the wall time (``--baseline`` runs the same search, same seed, without faults).

    python benchmarks/chaos_tune.py                  # 12 trials x 4 epochs, every fault
    python benchmarks/chaos_tune.py --baseline       # the same search without faults
    python benchmarks/chaos_tune.py --quick --json   # tests/test_chaos.py's size
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO / "tests"))

# Ray reads its auth mode when first imported; the chaos cluster uses a token of its own.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))

import chaos_checks as checks  # noqa: E402
from chaos_faults import DRIVER_KILL, FaultLog, Injector, wait_for  # noqa: E402
from chaos_ledger import CALLBACK_PATH, LEDGER_ENV, read_ledger  # noqa: E402
from chaos_report import collect, finished_in_study, print_report  # noqa: E402
from ray_cluster import RayTestCluster, ray_env  # noqa: E402

SMOKE = REPO / "search_spaces" / "smoke.yaml"
LC25000 = Path(os.environ.get("RAYLUNG_SHARED_DATA", REPO.parent / "shared" / "data")) / "lc25000_lung_dev"
NAME = "chaos"


@dataclass(frozen=True)
class Settings:
    trials: int = 12
    epochs: int = 4
    concurrency: int = 2
    max_steps_per_epoch: int = 20
    seed: int = 0
    freeze_s: float = 20.0
    node_restart_s: float = 15.0
    study_copy_wait_s: float = 5.0
    extra_worker_kills: int = 3  # after the first, spread over the rest of the run
    asha: bool = True  # off in QUICK: it could end 4 trials before the node kill and freeze hit a run
    timeout_s: float = 3600.0  # the whole run, every tune process together


QUICK = Settings(
    trials=4, epochs=3, max_steps_per_epoch=20, freeze_s=10.0, extra_worker_kills=0, timeout_s=900, asha=False
)


@dataclass
class Paths:
    work: Path

    @property
    def storage(self) -> Path:
        return self.work / "storage"

    @property
    def home(self) -> Path:  # the tune's HOME: URI experiments keep driver-side files under it
        return self.work / "home"

    @property
    def ledger(self) -> Path:
        return self.work / "ledger.jsonl"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def experiment(self) -> str | None:
        found = sorted(p.name for p in self.storage.glob(f"{NAME}-*") if p.is_dir())
        return found[-1] if found else None

    def local(self, name: str) -> Path:
        return self.home / ".raylung" / "experiments" / name


# --- the cluster and the tune processes ----------------------------------------------------


def cluster_env(paths: Paths) -> dict[str, str]:
    """Every Ray process of the chaos cluster imports this checkout's raylung and builds the ledger."""
    env = ray_env()
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(BENCH_DIR)]),
        RAY_TRAIN_CALLBACKS=CALLBACK_PATH,
        HOME=str(paths.home),
        COLUMNS="160",
    )
    env[LEDGER_ENV] = str(paths.ledger)
    return env


def overrides(settings: Settings, paths: Paths, data_root: Path) -> list[str]:
    return [
        f"experiment.name={NAME}",
        f"experiment.storage=file://{paths.storage}",
        f"data.root={data_root}",
        "data.demo=false",
        f"data.cache_dir={paths.work / 'cache'}",
        f"train.epochs={settings.epochs}",
        f"train.max_steps_per_epoch={settings.max_steps_per_epoch}",
        "train.max_failures=20",
        f"search.num_samples={settings.trials}",
        f"search.max_concurrent_trials={settings.concurrency}",
        f"search.seed={settings.seed}",
        f"search.asha.enabled={str(settings.asha).lower()}",
        "wandb.mode=offline",
    ]


class TuneProcesses:
    """The `raylung tune` subprocesses of the run, each in a process group of its own."""

    def __init__(self, env: dict[str, str], paths: Paths, address: str, log: FaultLog) -> None:
        self.env, self.paths, self.address, self.log = env, paths, address, log
        self.records: list[dict[str, Any]] = []
        self.current: subprocess.Popen | None = None

    def start(self, role: str, args: list[str]) -> subprocess.Popen:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.paths.logs / f"{len(self.records) + 1}-{role}.log", "w")  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "raylung",
            "tune",
            *args,
            "--address",
            self.address,
            "--resource-wait",
            "300",
        ]
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.paths.work,
            start_new_session=True,
        )
        self.records.append(
            {"role": role, "pid": process.pid, "rc": None, "killed": False, "log": log.name, "t": self._now()}
        )
        self.current = process
        return process

    def finish(self, process: subprocess.Popen, killed: bool = False) -> None:
        record = next(r for r in self.records if r["pid"] == process.pid)
        record.update(rc=process.returncode, killed=killed, t_end=self._now())

    def _now(self) -> float:
        """Seconds since the run began, on the fault log's clock."""
        return round(time.monotonic() - self.log.start, 1)

    def wait(self, process: subprocess.Popen, deadline: float) -> None:
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
            self.finish(process)
            self.records[-1]["rc"] = "timeout"
            return
        self.finish(process)


# --- the run -----------------------------------------------------------------------------------


def first_report_after(paths: Paths, since: float) -> bool:
    return any(e["event"] == "reported" and e["t"] >= since for e in read_ledger(paths.ledger))


class TimedFaults(threading.Thread):
    """Worker kill, node kill, storage freeze and the extra worker kills, in that order; each
    waits (boundedly) for a moment when it hits training, not an idle cluster."""

    def __init__(
        self, injector: Injector, paths: Paths, settings: Settings, resumed: threading.Event
    ) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.injector, self.paths, self.settings, self.resumed = injector, paths, settings, resumed
        self.resume_started = 0.0
        self.stop = threading.Event()

    def _wait(self, condition, timeout_s: float) -> bool:
        """True once `condition()` holds; False on timeout or when the run is over."""
        return bool(wait_for(lambda: self.stop.is_set() or condition(), timeout_s, 0.25)) and not (
            self.stop.is_set()
        )

    def run(self) -> None:
        inj, s, cluster = self.injector, self.settings, self.injector.cluster
        # 1. a Train worker, just after the first epoch was reported: its trial resumes mid-run
        if not self._wait(lambda: first_report_after(self.paths, 0), 900):
            return
        inj.pause(0.2, 2)
        inj.kill_train_worker(wait_s=120)
        # 2. the worker node, while a Train worker runs there
        inj.pause(2, 6)
        on_worker_node = lambda: any(node is not None for node in cluster.train_worker_pids().values())  # noqa: E731
        self._wait(on_worker_node, 120)
        if not self.stop.is_set():
            inj.kill_worker_node(s.node_restart_s)
        # 3. storage, once the resumed search trains again
        if self._wait(self.resumed.is_set, 900) and self._wait(
            lambda: first_report_after(self.paths, self.resume_started), 600
        ):
            inj.pause(1, 4)
            inj.freeze_storage(s.freeze_s)
        # 4. more Train workers, spread over the rest of the run
        for _ in range(s.extra_worker_kills):
            if self.stop.wait(inj.rng.uniform(15, 40)):
                return
            inj.kill_train_worker(wait_s=30)


def run_tune(settings: Settings, work: Path, data_root: Path, faults: bool) -> dict[str, Any]:
    """One chaos (or baseline) run from a fresh cluster; returns checks, figures and records."""
    paths = Paths(work)
    for folder in (paths.storage, paths.home, paths.logs):
        folder.mkdir(parents=True, exist_ok=True)
    env = cluster_env(paths)
    cluster = RayTestCluster(env, temp_dir=Path(tempfile.mkdtemp(prefix="rl-chaos-", dir="/tmp")))
    log = FaultLog()
    injector = Injector(cluster, paths.storage, settings.seed, log)
    at_kill: dict[str, Any] | None = None
    resumed = threading.Event()
    timed = TimedFaults(injector, paths, settings, resumed)
    start = time.monotonic()  # the wall time runs from `ray start` to the last tune's exit
    try:
        cluster.start()
        log.add("cluster_up", address=cluster.address)
        procs = TuneProcesses(env, paths, cluster.address, log)
        deadline = time.monotonic() + settings.timeout_s
        first = procs.start("tune", [str(SMOKE), *set_args(overrides(settings, paths, data_root))])
        if faults:
            timed.start()
            at_kill = kill_driver_after_first_finished(first, procs, paths, injector, settings, deadline)
        if at_kill is None:
            procs.wait(first, deadline)
        else:
            time.sleep(3)  # the killed driver's actors go with its job
            timed.resume_started = time.time()
            resumed.set()
            name = paths.experiment()
            second = procs.start("resume", ["--resume", f"file://{paths.storage / name}"])
            procs.wait(second, deadline)
        wall_s = time.monotonic() - start
    finally:
        timed.stop.set()
        if timed.is_alive():
            timed.join(timeout=120)
        injector.thaw_storage()
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)  # Ray's session folder: logs, sockets
    report = collect(settings, paths, procs.records, at_kill, log, faults)
    report["wall_s"] = round(wall_s, 1)
    report["settings"] = asdict(settings) | {"data": str(data_root), "faults": faults}
    report["work"] = str(work)
    return report


def set_args(values: list[str]) -> list[str]:
    """`--set a=1 --set b=2 ...`, as the CLI takes overrides."""
    return [arg for value in values for arg in ("--set", value)]


def kill_driver_after_first_finished(
    process: subprocess.Popen,
    procs: TuneProcesses,
    paths: Paths,
    injector: Injector,
    settings: Settings,
    deadline: float,
) -> dict[str, Any] | None:
    """As soon as the driver's Optuna study holds a finished trial, wait for a copy of the
    study to reach storage, note what each copy holds, and SIGKILL the driver's group."""

    def first_finished() -> bool:
        if process.poll() is not None:
            return True
        name = paths.experiment()
        return bool(name and finished_in_study(paths, name))

    wait_for(first_finished, max(1.0, deadline - time.monotonic()), 0.5)
    if process.poll() is not None:
        injector.log.add(DRIVER_KILL, ok=False, reason=f"the tune ended first (rc {process.returncode})")
        procs.finish(process)
        return None
    time.sleep(settings.study_copy_wait_s)
    name = paths.experiment()
    at_kill = {
        "driver": finished_in_study(paths, name),
        "storage": checks.finished_numbers(paths.storage / name / "optuna.db"),
    }
    injector.kill_driver(process, **at_kill)
    procs.finish(process, killed=True)
    return at_kill


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="4 trials x 3 epochs, no ASHA, 10 s freeze (the test's size)"
    )
    parser.add_argument("--baseline", action="store_true", help="the same search, same seed, without faults")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", choices=("lc25000", "demo"), default="lc25000" if LC25000.is_dir() else "demo"
    )
    parser.add_argument("--work", type=Path, help="run folder (default: a fresh temp folder)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON, not tables")
    parser.add_argument("--out", type=Path, help="also write the report here")
    parser.add_argument("--recheck", type=Path, help="run the checks again on a finished run's report")
    args = parser.parse_args(argv)
    if args.recheck:
        return recheck(args.recheck, args.json)

    settings = replace(QUICK if args.quick else Settings(), seed=args.seed)
    if args.trials:
        settings = replace(settings, trials=args.trials)
    if args.epochs:
        settings = replace(settings, epochs=args.epochs)
    work = args.work or Path(tempfile.mkdtemp(prefix="raylung-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    data_root = LC25000 if args.data == "lc25000" else demo_data(work)
    report = run_tune(settings, work.resolve(), data_root, faults=not args.baseline)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 0 if all(c["passed"] for c in report["checks"]) else 1


def recheck(path: Path, as_json: bool) -> int:
    """The checks and figures of a finished run again, from its folder (for developing them)."""
    old = json.loads(path.read_text())
    settings = Settings(**{k: v for k, v in old["settings"].items() if k in Settings.__dataclass_fields__})
    log = FaultLog()
    log.events = old.get("faults", [])
    kill = next((e for e in log.events if e["kind"] == DRIVER_KILL and e["ok"]), None)
    at_kill = {"driver": kill["driver"], "storage": kill["storage"]} if kill else None
    faults = old["settings"]["faults"]
    report = collect(settings, Paths(Path(old["work"])), old["processes"], at_kill, log, faults)
    report.update(wall_s=old["wall_s"], settings=old["settings"], work=old["work"])
    print(json.dumps(report, default=str)) if as_json else print_report(report)
    return 0 if all(c["passed"] for c in report["checks"]) else 1


def demo_data(work: Path) -> Path:
    from raylung.data import make_demo_dataset

    return make_demo_dataset(work / "demo_data", per_subclass=30)


if __name__ == "__main__":
    sys.exit(main())
