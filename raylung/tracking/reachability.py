"""Is the W&B server there? One bounded GET, asked on the driver before Ray starts.

On an air-gapped or hospital cluster ``wandb.init`` waits out its own network timeouts inside
a Ray worker, and Ray Train's retries wait them out again, before anything trains. A single
GET of the server's base URL, bounded as a whole (name lookup included), tells in seconds.
Any HTTP answer, even 401 or 404, or a TLS certificate W&B may still accept, means a server
is there; a refusal, silence, an unknown host, or a gateway (502/503/504) with nothing behind
it means runs cannot start online. Proxies are honoured as W&B honours them (``HTTPS_PROXY``,
``HTTP_PROXY``, ``NO_PROXY``).
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

PROBE_TIMEOUT_S = 5.0
# Answers of a proxy or load balancer that has no server behind it.
GATEWAY_CODES = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    reason: str  # human words that finish "W&B server URL ...": "refused the connection"
    seconds: float


def check_server(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> Reachability:
    """One GET of `url`, answered within `timeout_s` seconds in all (a daemon thread bounds
    name lookup and any proxy hop, which socket timeouts alone do not)."""
    started = time.monotonic()
    answer: list[tuple[bool, str]] = []

    def ask() -> None:
        answer.append(_get(url, timeout_s))

    thread = threading.Thread(target=ask, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    reachable, reason = answer[0] if answer else (False, f"did not answer within {timeout_s:g} s")
    return Reachability(reachable, reason, time.monotonic() - started)


def _get(url: str, timeout_s: float) -> tuple[bool, str]:
    request = urllib.request.Request(url, method="GET", headers={"User-Agent": "raylung-probe"})
    try:
        # A fresh opener reads the proxy variables now (urlopen's shared one kept its first view).
        with urllib.request.build_opener().open(request, timeout=timeout_s) as response:
            return True, f"answered {response.status}"
    except urllib.error.HTTPError as exc:
        if exc.code in GATEWAY_CODES:
            return (
                False,
                f"answered {exc.code} {GATEWAY_CODES[exc.code]} (a gateway with no server behind it)",
            )
        return True, f"answered {exc.code}"
    except urllib.error.URLError as exc:
        return _why(exc.reason, timeout_s)
    except (OSError, http.client.HTTPException) as exc:
        return _why(exc, timeout_s)


def _why(error: object, timeout_s: float) -> tuple[bool, str]:
    """What a failed connection says, in words (and whether a server was there after all)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return True, "answered (its TLS certificate is not trusted here)"
    if isinstance(error, socket.gaierror):
        return False, "unknown host"
    if isinstance(error, TimeoutError | socket.timeout):
        return False, f"did not answer within {timeout_s:g} s"
    if isinstance(error, ConnectionRefusedError):
        return False, "refused the connection"
    if isinstance(error, http.client.RemoteDisconnected | ConnectionResetError | http.client.BadStatusLine):
        return False, "closed the connection without a reply"
    if isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return False, "network unreachable" if error.errno == errno.ENETUNREACH else "host unreachable"
    if isinstance(error, str) and "timed out" in error:
        return False, f"did not answer within {timeout_s:g} s"
    return False, f"could not be reached ({error})"
