"""The trivial WSGI app gunicorn's sync workers serve in the ``supervisor`` and ``cli`` groups.

``GET /hang`` blocks the worker forever (no more heartbeats: gunicorn's
``--timeout`` case) after writing its pid to ``hung.pid`` in the worker's cwd,
which is the peer's temp dir. Anything else answers 200 at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

HANG_FILE = "hung.pid"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/hang":
        with open(HANG_FILE + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(HANG_FILE + ".tmp", HANG_FILE)
        while True:
            time.sleep(3600)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
