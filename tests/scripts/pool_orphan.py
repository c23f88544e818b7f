"""A program using pool.Pool, for the test that SIGKILLs it.

    python pool_orphan.py START_METHOD RUNTIME_DIR busy|idle

Starts a two-worker Pool, with both workers inside a long task when ``busy``,
prints one JSON line ``{"workers": [pids], "helpers": [pids], "board": path}``
(helpers: multiprocess's forkserver and resource tracker, when running), then
waits to be killed. The ``__main__`` guard is required: forkserver workers
import this file as ``__mp_main__``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # pool_tasks


def main() -> None:
    import multiprocess.forkserver
    import multiprocess.resource_tracker
    import pool_tasks

    import statusboard
    from pool import Pool

    method, runtime_dir, mode = sys.argv[1:4]
    p = Pool(2, name="orphan", runtime_dir=runtime_dir, start_method=method)
    if mode == "busy":
        for _ in range(4):
            p.submit(pool_tasks.sleep_and_return, 60)
    deadline = time.monotonic() + 20
    with statusboard.attach(runtime_dir) as reader:
        while True:
            workers = reader.snapshot().workers()
            if mode == "idle" or all(w["task"] is not None for w in workers):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"tasks did not start: {workers}")
            time.sleep(0.01)
    helpers = [
        multiprocess.forkserver._forkserver._forkserver_pid,
        multiprocess.resource_tracker._resource_tracker._pid,
    ]
    info = {
        "workers": [w["pid"] for w in workers],
        "helpers": [pid for pid in helpers if pid],
        "board": str(p._supervisor.board.path),
    }
    print(json.dumps(info), flush=True)
    time.sleep(120)


if __name__ == "__main__":
    main()
