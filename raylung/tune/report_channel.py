"""A one-slot channel from a trial's Train controller to the trial itself, over loopback.

A trial's reports start in its Ray Train controller (a ``UserCallback`` runs there) and must
reach the trial's own thread, which alone may call ``tune.report``. Ray's ``Queue`` would carry
them, but it is an actor: one more process for every trial, about a CPU-second of Python and
Ray imports at the trial's start. Ray Train pins the controller to the node of the process that
fits it (the trial's actor), so a socket on the loopback interface reaches it as well: the
trial listens, the controller's callback connects once per report, sends the metrics as JSON
and waits until the trial has taken them into its single slot, as a full ``Queue(maxsize=1)``
would make it wait. A random key per channel, sent first and compared in constant time, keeps
any other local process from putting reports in a trial's slot.
"""

from __future__ import annotations

import hmac
import json
import queue
import secrets
import socket
import struct
import threading
from typing import Any

__all__ = ["ReportChannel", "send_report"]

KEY_BYTES = 32
_LENGTH = struct.Struct("!I")
_TAKEN = b"T"
_POLL_S = 0.25  # how often the listener looks up from accept() to see whether it was closed


class ReportChannel:
    """The trial's end: a listener thread puts each report it receives into a one-item slot."""

    def __init__(self) -> None:
        self.authkey = secrets.token_bytes(KEY_BYTES)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(_POLL_S)
        self.address: tuple[str, int] = self._server.getsockname()[:2]
        self._slot: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raylung-report-channel", daemon=True)
        self._thread.start()

    def get(self) -> Any:
        """The next report (or whatever :meth:`put` put), waiting for it."""
        return self._slot.get()

    def put(self, item: Any) -> None:
        """Put an item from this process (the end-of-run marker), behind any report taken."""
        self._slot.put(item)

    def close(self) -> None:
        """Stop listening. A report sent afterwards is refused, as a stopped trial's would be."""
        self._closed.set()
        self._thread.join(timeout=5 * _POLL_S)
        self._server.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed under us
                return
            with connection:
                self._receive(connection)

    def _receive(self, connection: socket.socket) -> None:
        connection.settimeout(10.0)  # a sender writes its key and report at once
        try:
            key = _read_exactly(connection, KEY_BYTES)
            if not hmac.compare_digest(key, self.authkey):
                return  # not this trial's controller: nothing is taken
            (length,) = _LENGTH.unpack(_read_exactly(connection, _LENGTH.size))
            item = json.loads(_read_exactly(connection, length))
        except (OSError, EOFError, ValueError):
            return
        self._slot.put(item)  # waits while the trial still holds the previous report
        try:
            connection.sendall(_TAKEN)
        except OSError:
            pass


def send_report(address: tuple[str, int], authkey: bytes, item: dict[str, Any]) -> bool:
    """The controller's end: hand `item` to the trial; returns once the trial took it.

    False when nobody listens any more (Tune stopped the trial, ASHA, and its process went with
    the channel) or the key is not the channel's. The caller drops the report, as the stopped
    trial would have."""
    payload = json.dumps(item, default=_plain).encode()
    try:
        with socket.create_connection(address, timeout=10.0) as connection:
            connection.sendall(authkey + _LENGTH.pack(len(payload)) + payload)
            connection.settimeout(None)  # the trial may hold its slot for as long as Tune takes
            return connection.recv(1) == _TAKEN
    except OSError:
        return False


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError("the sender closed the connection")
        data += chunk
    return bytes(data)


def _plain(value: Any) -> Any:
    """numpy scalars (which JSON does not know) as Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"a report value of type {type(value).__name__} cannot be sent to the trial")
