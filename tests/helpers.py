"""Small helpers for tests that start servers on 127.0.0.1."""

import socket
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120, proc=None) -> None:
    """Poll ``url`` until it answers; fail if ``proc`` (a Popen) exits or the time runs out."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or (proc is not None and proc.poll() is not None):
                raise AssertionError(f"{url} did not come up") from None
            time.sleep(0.5)
