"""The run's log file: raylung's and Ray's log lines, with Ray's kept off the user's terminal.

A raylung command shows its progress, tables and one-line errors. Ray adds lines of its own from
two places, and once a run's log is open (:func:`write_to`, ``<run or experiment dir>/raylung.log``)
both go there instead of the console:

* the driver's ``ray`` loggers: ``ray.init``'s banner, Tune's and Train's INFO lines such as "A run
  snapshot was found in storage folder ...". Ray gives the ``ray`` logger a console handler of its
  own and stops propagation, so the run log's handler is added there and Ray's console handler
  is removed;
* the output of the job's Ray processes on every node (Train controllers and workers, Tune
  trials, the C++ core workers' ERROR lines, the raylet's warnings), which
  ``ray.init(log_to_driver=True)`` streams to the driver, and the errors the cluster pushes to
  the driver (e.g. "N PYTHON worker processes have been started"). Ray prints both through one
  function, ``print_to_stdstream``; it is wrapped so that each line goes to the run log, whole
  (no deduplication) and with Ray's ``(ActorName pid=..., ip=...)`` prefix.

raylung's own log records go to the run log too and stay on the console, also those of its code
running inside Ray's processes (the training loop's "resumed from checkpoint after epoch 3"):
:func:`setup_worker_logging`, Ray's ``worker_process_setup_hook``, writes them in the console's
format, by which the driver tells them from Ray's lines and logs them again as its own. With
``--verbose`` (:func:`set_verbose`) Ray's console output is left as Ray makes it, and the run log
still gets everything. Nothing is rerouted until a run log is open, so a plain ``connect()``
behaves like ``ray.init``.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path
from typing import Any

RUN_LOG_FILE = "raylung.log"
# raylung's records, as the console shows them; in Ray's processes too (setup_worker_logging).
CONSOLE_FORMAT = "%(levelname)s %(name)s: %(message)s"
_RAYLUNG_LINE = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) (raylung(?:\.\w+)*): (.*)", re.DOTALL)

log = logging.getLogger(__name__)

# Ray's driver-side printer of other processes' output, and the name its handler has on Ray's
# stream dispatcher (ray/_private/worker.py: `connect` adds it, `shutdown` removes it).
_RAY_PRINTER = "print_to_stdstream"
_RAY_PRINTER_HANDLER = "ray_print_logs"


class _RunLog(logging.Handler):
    """One handler on every routed logger; the file behind it changes from run to run.

    ``ray.init`` sets its own formatter on every handler of the ``ray`` logger, so the file keeps
    a formatter of its own, which ``setFormatter`` on this handler does not touch."""

    def __init__(self) -> None:
        super().__init__()
        self.path: Path | None = None
        self._file: logging.FileHandler | None = None

    def open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(path, encoding="utf-8")  # appends: a resumed run continues its log
        file.setFormatter(_FileFormatter())
        with self.lock:
            previous, self._file, self.path = self._file, file, path
        if previous is not None:
            previous.close()

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)


class _FileFormatter(logging.Formatter):
    """Time, level, logger and message; a line from another Ray process ends with its source."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        source = getattr(record, "ray_source", None)
        return f"{text}  {source}" if source else text


_run_log = _RunLog()
_verbose = False


def setup_worker_logging() -> None:
    """In each Ray process of the job (Ray's ``worker_process_setup_hook``): raylung's records
    go to its stderr, which Ray streams to the driver, in the console's format.

    Ray Train's worker logging prints every record as a bare message; in this format the
    driver tells raylung's lines from Ray's. The level stays the process's (Ray Train's INFO)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    logger = logging.getLogger("raylung")
    logger.addHandler(handler)
    logger.propagate = False  # else Ray Train's root handler prints each record a second time


def set_verbose(verbose: bool) -> None:
    """``--verbose``: Ray's own lines stay on the console as well (the run log gets them anyway)."""
    global _verbose
    _verbose = verbose


def current_path() -> Path | None:
    """The open run log, if any."""
    return _run_log.path


def write_to(path: Path) -> None:
    """From now on, write raylung's and Ray's log lines to `path` (appending), Ray's only there.

    Called once a run's directory exists, before Ray starts; a later call (the next run in the
    same process) moves all of it to the new file."""
    _run_log.open(path)
    raylung_logger = logging.getLogger("raylung")
    if _run_log not in raylung_logger.handlers:
        raylung_logger.addHandler(_run_log)
    if "ray" in sys.modules:
        route_ray_output()
    log.info("Ray's log lines: %s%s", path, "" if _verbose else " (--verbose also shows them here)")


def record_error(message: str, error: BaseException) -> None:
    """Write `error` with its traceback (Ray's, of every process it passed through) to the run log
    only: the console says the same in one line. A no-op until a run log is open."""
    record = logging.makeLogRecord(
        {
            "name": "raylung",
            "levelname": "ERROR",
            "levelno": logging.ERROR,
            "msg": message,
            "exc_info": (type(error), error, error.__traceback__),
        }
    )
    _run_log.handle(record)


def route_ray_output() -> None:
    """Send Ray's loggers and its printer of other processes' output to the run log.

    Run after ``ray.init`` too: it may start the printer, and loggers appear as Ray is imported.
    A no-op until a run log is open."""
    if _run_log.path is None:
        return
    _route_ray_loggers()
    _wrap_ray_printer()


def _route_ray_loggers() -> None:
    names = ["ray", *(name for name in list(logging.root.manager.loggerDict) if name.startswith("ray."))]
    for name in names:
        logger = logging.getLogger(name)
        # A logger that propagates reaches the "ray" logger's run log; one that stops (Ray's own,
        # "ray.data") needs its own.
        if (name == "ray" or not logger.propagate) and _run_log not in logger.handlers:
            logger.addHandler(_run_log)
        if not _verbose:
            for handler in [h for h in logger.handlers if _is_console(h)]:
                logger.removeHandler(handler)


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _wrap_ray_printer() -> None:
    """Replace Ray's printer of other processes' output (worker logs, raylet lines, pushed errors)
    with one that writes them to the run log. A private Ray function: if it moves, Ray's lines
    simply stay on the console, which tests/test_console.py notices."""
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:  # pragma: no cover - depends on Ray's internals
        log.debug("Ray's output printer not found: Ray's lines stay on the console")
        return
    original = getattr(ray_worker, _RAY_PRINTER, None)
    if original is None:  # pragma: no cover
        return
    if not getattr(original, "_raylung", False):
        printer = functools.partial(_print_ray_output, original)
        printer._raylung = True  # type: ignore[attr-defined]
        setattr(ray_worker, _RAY_PRINTER, printer)
    # An already started printer holds Ray's function: hand it ours.
    if any(name == _RAY_PRINTER_HANDLER for name, _ in dispatcher.handlers):
        ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)
        dispatcher.remove_handler(_RAY_PRINTER_HANDLER)
        dispatcher.add_handler(
            _RAY_PRINTER_HANDLER,
            functools.partial(getattr(ray_worker, _RAY_PRINTER), ignore_prefix=ignore_prefix),
        )


def _print_ray_output(ray_print: Any, data: dict[str, Any], ignore_prefix: bool) -> None:
    """Lines of other Ray processes: all to the run log, raylung's also to the console as its
    own; Ray's to the console only with --verbose or when no run log is open."""
    if _verbose or _run_log.path is None:
        ray_print(data, ignore_prefix=ignore_prefix)
    if _run_log.path is None:
        return
    lines = data.get("lines", [])
    if data.get("pid") == "autoscaler":
        # The autoscaler's whole log streams here every few seconds; Ray shows only its events.
        from ray._private.worker import filter_autoscaler_events

        lines = filter_autoscaler_events(lines)
    source = _source(data)
    stream = "STDERR" if data.get("is_err") else "STDOUT"
    for line in lines:
        raylung = _RAYLUNG_LINE.fullmatch(line)
        if raylung is None:  # Ray's: named by its process, as Ray's console prefixes it
            fields = {"name": source, "levelname": stream, "levelno": logging.INFO, "msg": line}
            _run_log.handle(logging.makeLogRecord(fields))
            continue
        level, name, message = raylung.groups()
        levelno = logging.getLevelName(level)
        record = logging.makeLogRecord(
            {"name": name, "levelname": level, "levelno": levelno, "msg": message, "ray_source": source}
        )
        logger = logging.getLogger(name)
        if _verbose or not logger.isEnabledFor(levelno):  # with --verbose, Ray's printer showed it
            _run_log.handle(record)
        else:
            logger.handle(record)  # the console, as raylung's own, and the run log


def _source(data: dict[str, Any]) -> str:
    """Ray's own prefix for a line: "(raylet)", "(RayTrainWorker pid=12, ip=10.0.0.2)"."""
    pid = data.get("pid")
    if pid in ("raylet", "autoscaler"):
        return f"({pid})"
    name = data.get("actor_name") or data.get("task_name")
    ip = data.get("ip")
    where = f", ip={ip}" if ip and ip != data.get("localhost") else ""
    return f"({name + ' ' if name else ''}pid={pid}{where})"
