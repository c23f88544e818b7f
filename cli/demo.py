"""`poolctl demo`: a real pool, a crash, a hang, a clean stop, in ~15 s, no input needed.

The demo supervisor runs detached in a private runtime directory (exactly what
`poolctl start` runs); this process only watches: it prints every line the
supervisor logs (so events show up in any output, terminal or not) and, on a
terminal, a live table of the board. It ends with a verified `stop` and
removes its runtime directory.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cli.errors import CliError, ExitCode
from statusboard.probe import probe

DEMO_NAME = "demo"
REFRESH_S = 0.25


def run_demo(*, seconds: float, workers: int, started: float) -> int:
    from pool.ops.daemon import launch
    from pool.ops.stopper import stop_pool
    from pool.spec import PoolSpec

    directory = Path(tempfile.mkdtemp(prefix="poolctl-demo-"))
    spec = PoolSpec(
        target="pool.ops.demo_worker:work",
        workers=workers,
        name=DEMO_NAME,
        heartbeat_timeout=2.0,
        grace=2.0,
        flush_interval=1.0,
    )
    out = _Output()
    try:
        out.line(
            f"poolctl demo: {workers} workers, heartbeat timeout 2s; worker 1 will crash, worker 2 will hang"
        )
        launched = launch(spec, directory, wait=30.0)
        if not launched.ok:
            raise CliError(f"demo failed to start: {launched.message}")
        log = _LogTail(directory / "supervisor.log")
        try:
            with out.live() as show:
                while time.monotonic() - started < seconds:
                    for line in log.new_lines():
                        out.line(line)
                    show(probe(directory, DEMO_NAME).document)
                    time.sleep(REFRESH_S)
        except KeyboardInterrupt:
            out.line("interrupted: stopping the demo pool")
        outcome = stop_pool(directory, timeout=10.0)
        for line in log.new_lines():
            out.line(line)
        final = probe(directory, DEMO_NAME).document
        out.line(f"demo pool {final['state']}: {outcome.message}")
        if not outcome.ok:
            raise CliError(outcome.message)
        return ExitCode.OK
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _LogTail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = 0

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.position)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.position += len(complete)
        return [line for line in complete.decode(errors="replace").splitlines() if line.strip()]


class _Output:
    """Event lines always; a live rich table only on a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._live: Any = None

    def line(self, text: str) -> None:
        if self._live is not None:
            self._live.console.print(text, highlight=False, markup=False)
        else:
            print(text, flush=True)

    def live(self) -> Any:
        output = self

        class _Context:
            def __enter__(self) -> Any:
                if not output.tty:
                    return lambda document: None
                from rich.live import Live

                from cli.rich_view import status_table

                output._live = Live(auto_refresh=False)
                output._live.__enter__()
                return lambda document: output._live.update(status_table(document), refresh=True)

            def __exit__(self, *exc: object) -> None:
                if output._live is not None:
                    output._live.__exit__(*exc)
                    output._live = None

        return _Context()
