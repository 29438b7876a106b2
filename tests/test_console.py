"""What a raylung command prints: its progress, tables and errors, not Ray's own log lines.

Ray's lines (its loggers in the driver, the output of its processes on every node, the errors
the cluster pushes) go to the run's ``raylung.log``; ``--verbose`` shows them on the console too.
A local Ray, and a cluster raylung attaches to, announce their dashboard, which answers.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import subprocess
import sys
import urllib.request
from urllib.parse import urlparse

import pytest
from conftest import ray_env
from run_factory import write_tiny_yaml

from raylung.cluster import run_log

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Ray's lines as they reached the console before: each pattern is one kind of them.
RAY_NOISE = {
    "Train's PreemptionWatcher ERROR": re.compile(r"PreemptionWatcher"),
    "Train's run-snapshot notice": re.compile(r"run snapshot was found"),
    "the raylet's worker-pool warning": re.compile(r"worker processes have been started"),
    "another Ray process's output": re.compile(r"^\((?:[\w.]+ )?pid=\d+|^\((?:raylet|autoscaler)"),
    "Ray's Python log prefix": re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\s+[A-Z]+ \S+\.py:\d+ -- "),
    "Ray's C++ log prefix": re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [DIWEF] \d+ \d+\]"),
    "ray.init's banner": re.compile(r"(?:Started a local Ray instance|Connected to Ray cluster)\."),
}


def ray_noise(console: str) -> dict[str, list[str]]:
    """The console's lines that are Ray's, by kind."""
    lines = [ANSI.sub("", line).strip() for line in console.splitlines()]
    found = {kind: [line for line in lines if pattern.search(line)] for kind, pattern in RAY_NOISE.items()}
    return {kind: hits for kind, hits in found.items() if hits}


def raylung(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI; its console output, stdout and stderr as the user sees them together."""
    done = subprocess.run(
        [sys.executable, "-m", "raylung", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or dict(os.environ),
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:]
    return done.stdout


@pytest.mark.slow
def test_ray_lines_go_to_the_run_log_and_the_console_keeps_raylungs(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=2)
    run_dir = tmp_path / "run"
    console = raylung("train", str(config), "--output", str(run_dir))

    assert ray_noise(console) == {}, console
    # raylung's own lines stay: epoch progress, the training loop's log lines (from a Ray
    # worker), the table, and where Ray's lines went.
    assert "epoch 1: train_loss" in console and "epoch 2: train_loss" in console
    assert "INFO raylung.train.loop: training on 1 worker(s)" in console
    if platform.libc_ver()[0] == "glibc":  # the worker keeps freed memory (raylung.train.host_memory)
        assert "freed memory kept in the process" in console
    assert "Best epoch (validation)" in console
    log_file = run_dir / run_log.RUN_LOG_FILE
    assert f"Ray's log lines: {log_file}" in console
    # Every Ray line the console lacks is in the run log: the driver's Ray loggers, other
    # processes' output with their prefix, and raylung's worker lines with their source.
    text = log_file.read_text()
    assert "INFO ray._private.worker: Connected to Ray cluster." in text
    assert re.search(r"STDERR \(TrainController pid=\d+\): Started training worker group", text)
    assert re.search(r"INFO raylung.train.loop: training on 1 worker\(s\).*\(RayTrainWorker pid=\d+\)", text)


@pytest.mark.slow
def test_verbose_shows_rays_lines_on_the_console_too(ray_address, demo_root, tmp_path):
    config = write_tiny_yaml(tmp_path / "tiny.yaml", demo_root, tmp_path, epochs=1)
    run_dir = tmp_path / "run"
    console = raylung("--verbose", "train", str(config), "--output", str(run_dir))

    noise = ray_noise(console)
    assert "ray.init's banner" in noise and "another Ray process's output" in noise, console
    assert any("(TrainController pid=" in line for line in noise["another Ray process's output"])
    assert "epoch 1: train_loss" in console
    text = (run_dir / run_log.RUN_LOG_FILE).read_text()
    assert "Connected to Ray cluster." in text and "(TrainController pid=" in text


@pytest.fixture
def restored_logging():
    """The run log and the loggers it touches, as they were (this test runs in pytest's process)."""
    loggers = [logging.getLogger(name) for name in ("ray", "raylung")]
    saved = [(logger, list(logger.handlers), logger.propagate) for logger in loggers]
    path, file, verbose = run_log._run_log.path, run_log._run_log._file, run_log._verbose
    yield
    if run_log._run_log._file not in (None, file):
        run_log._run_log._file.close()
    run_log._run_log.path, run_log._run_log._file, run_log._verbose = path, file, verbose
    for logger, handlers, propagate in saved:
        logger.handlers[:] = handlers
        logger.propagate = propagate


def test_ray_output_is_sorted_into_the_run_log_and_raylungs_console(tmp_path, restored_logging, caplog):
    """Without a cluster: what the driver receives from other processes goes where it belongs."""
    import ray  # noqa: F401 - its loggers, as a driver has them

    printed: list[dict] = []
    log_file = tmp_path / run_log.RUN_LOG_FILE
    run_log.set_verbose(False)
    run_log.write_to(log_file)
    batch = {
        "pid": 12,
        "ip": "10.0.0.2",
        "localhost": "10.0.0.1",
        "actor_name": "RayTrainWorker",
        "is_err": True,
        "lines": [
            "Setting up process group",
            "INFO raylung.train.loop: resumed from checkpoint after epoch 3",
        ],
    }
    with caplog.at_level(logging.INFO, logger="raylung"):
        run_log._print_ray_output(lambda data, ignore_prefix: printed.append(data), batch, False)
        logging.getLogger("ray.tune.tune").info("Wrote the latest version of all result files")

    assert printed == []  # Ray's printer: not called
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name == "raylung.train.loop"] == [
        ("raylung.train.loop", "resumed from checkpoint after epoch 3")
    ]
    text = log_file.read_text()
    assert "STDERR (RayTrainWorker pid=12, ip=10.0.0.2): Setting up process group" in text
    assert "INFO raylung.train.loop: resumed from checkpoint after epoch 3  (RayTrainWorker pid=12" in text
    assert "INFO ray.tune.tune: Wrote the latest version of all result files" in text

    run_log.set_verbose(True)
    run_log._print_ray_output(lambda data, ignore_prefix: printed.append(data), batch, False)
    assert printed == [batch]  # --verbose: Ray prints it as it would


def _connect_and_report(env: dict[str, str], address: str | None) -> subprocess.Popen:
    """A driver that connects as raylung does, then waits on stdin (a local Ray lives as long)."""
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
        "from raylung.cluster.connect import RayTarget, connect\n"
        f"connect(RayTarget(address={address!r}, num_cpus=1))\n"
        "print('connected', flush=True)\n"
        "sys.stdin.read()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _dashboard_from(proc: subprocess.Popen) -> str:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.strip() == "connected":
            break
    found = [m.group(1) for m in map(re.compile(r"Ray dashboard: (\S+)").search, lines) if m]
    assert len(found) == 1, "".join(lines)
    return found[0]


def _answers(url: str) -> int:
    assert urlparse(url).hostname in ("127.0.0.1", "localhost"), url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy
    with opener.open(url, timeout=30) as response:
        return response.status


@pytest.mark.parametrize("attached", [False, True], ids=["local", "attached"])
def test_the_ray_dashboard_url_is_printed_and_answers(attached, request):
    env = ray_env()
    env.pop("RAY_ADDRESS", None)
    address = request.getfixturevalue("ray_address") if attached else None
    proc = _connect_and_report(env, address)
    try:
        url = _dashboard_from(proc)
        assert re.fullmatch(r"http://[\w.]+:\d+", url), url
        assert _answers(url) == 200
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stdout.read()


def test_a_missing_dashboard_is_said_not_an_url():
    from raylung.cluster.connect import dashboard_url

    class Context:
        dashboard_url = ""

    assert dashboard_url(Context()) is None
    Context.dashboard_url = "127.0.0.1:8265"
    assert dashboard_url(Context()) == "http://127.0.0.1:8265"
