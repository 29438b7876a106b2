"""A stand-in for an unreachable (or reachable) W&B server: a real TCP socket on 127.0.0.1.

Modes: ``refuse`` (a port bound but not listening: the kernel refuses every connection),
``silent`` (accepts, reads, never answers), ``close`` (accepts, then closes without a reply),
``http-401`` / ``http-502`` (answers that status). Nothing leaves the machine.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

REASONS = {401: "Unauthorized", 502: "Bad Gateway"}


class FakeWandbServer:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        if mode != "refuse":
            self._sock.listen(16)
            self._sock.settimeout(0.2)
            threading.Thread(target=self._serve, name=f"fake-wandb-{mode}", daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "silent":
                self._held.append(conn)  # kept open, never answered
                continue
            conn.settimeout(2)
            try:
                conn.recv(65536)
                if self.mode.startswith("http-"):
                    code = int(self.mode.removeprefix("http-"))
                    body = b"{}"
                    conn.sendall(
                        f"HTTP/1.1 {code} {REASONS.get(code, 'Status')}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                        + body
                    )
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        for conn in self._held:
            conn.close()
        self._sock.close()

    def __enter__(self) -> FakeWandbServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
