"""The typer app: every command's options and help, as thin calls into pool/statusboard.

Exit codes are decided by cli.main (the one boundary); commands return an int
or raise CliError / PoolError / StatusboardError.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.errors import CliError, ExitCode
from statusboard import runtime_dir as rdir
from statusboard.errors import InvalidNameError

app = typer.Typer(
    name="poolctl",
    help="Keep a pool of Python worker processes alive and tell the truth about their health.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Policy(StrEnum):
    permanent = "permanent"
    transient = "transient"
    temporary = "temporary"


class StartMethod(StrEnum):
    auto = "auto"
    fork = "fork"
    forkserver = "forkserver"
    spawn = "spawn"


@dataclass
class Globals:
    name: str
    runtime_dir: str | None
    debug: bool

    @property
    def directory(self) -> Path:
        """The runtime directory; one that exists must be safe (ours, no symlink, 0700-ish)."""
        path = rdir.resolve(self.name, self.runtime_dir)
        if os.path.lexists(path):
            rdir.check(path)
        return path


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"poolctl {version('poolctl')}")
        raise typer.Exit(0)


def _check_name(value: str) -> str:
    try:
        return rdir.validate_name(value)
    except InvalidNameError as exc:
        raise typer.BadParameter(str(exc)) from None


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    from pool.errors import SpecError
    from pool.spec import parse_size

    try:
        size = parse_size(value)
    except SpecError:
        raise typer.BadParameter(f"expected a size such as 512M or 2G, got {value!r}") from None
    if size < 1 << 20:
        raise typer.BadParameter(f"must be at least 1M, got {value!r}")
    return size


def _not_negative(value: float | None) -> float | None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a finite number >= 0, got {value:g}")
    return value


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _positive(value: float | None) -> float | None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a finite number > 0, got {value:g}")
    return value


@app.callback()
def main(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Option(
            "--name", "-n", help="Pool name (one runtime directory per name).", callback=_check_name
        ),
    ] = "default",
    runtime_dir: Annotated[
        str | None,
        typer.Option(
            "--runtime-dir",
            help="Runtime directory (default: $POOLCTL_RUNTIME_DIR/NAME, "
            "$XDG_RUNTIME_DIR/poolctl/NAME or ~/.local/state/poolctl/NAME).",
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Print full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Keep a pool of Python worker processes alive and tell the truth about their health."""
    ctx.obj = Globals(name, runtime_dir, debug)


Workers = Annotated[
    int, typer.Option("--workers", "-w", min=1, max=1024, help="Number of workers (1..1024).")
]


@app.command()
def start(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="Worker target: module:function or path/to/file.py:function.")
    ],
    workers: Workers = 1,
    heartbeat_timeout: Annotated[
        float,
        typer.Option(
            callback=_positive, help="Seconds without a heartbeat before a worker is hung and replaced."
        ),
    ] = 30.0,
    grace: Annotated[
        float, typer.Option(callback=_positive, help="Seconds a stopping worker gets before SIGKILL.")
    ] = 5.0,
    restart: Annotated[
        Policy,
        typer.Option(
            help="permanent: always restart; transient: only after an abnormal exit; temporary: never."
        ),
    ] = Policy.permanent,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="A slot restarted more than this often within --restart-window fails.")
    ] = 5,
    restart_window: Annotated[float, typer.Option(callback=_positive, help="Seconds.")] = 60.0,
    flush_interval: Annotated[
        float,
        typer.Option(callback=_positive, help="Seconds between runtime.json flushes (also on every change)."),
    ] = 10.0,
    start_method: Annotated[
        StartMethod, typer.Option(help="How workers start; auto = fork from the single-threaded supervisor.")
    ] = StartMethod.auto,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run the supervisor in this terminal.")
    ] = False,
    wait: Annotated[
        float, typer.Option(callback=_positive, help="Seconds to wait for every worker's first heartbeat.")
    ] = 30.0,
    max_rss: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE",
            help="Recycle a worker whose resident memory passes this (512M, 2G): "
            "a graceful replacement, not a crash.",
        ),
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(callback=_positive, help="Recycle a worker after this many seconds (plus jitter)."),
    ] = None,
    max_age_jitter: Annotated[
        float | None,
        typer.Option(
            callback=_not_negative,
            help="Up to this many seconds added at random to each worker's --max-age "
            "(default: a tenth of it), so workers do not all recycle at once.",
        ),
    ] = None,
    rss_interval: Annotated[
        float,
        typer.Option(
            callback=_not_negative,
            help="Seconds between samples of each worker's memory (RSS, from /proc); 0 = off.",
        ),
    ] = 1.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics from the supervisor.",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(help="supervisor.log lines: text, or json (one object per line, for log shippers)."),
    ] = LogFormat.text,
) -> int:
    """Start a pool; return once every worker has sent its first heartbeat."""
    from pool.spec import PoolSpec, RestartPolicy

    g: Globals = ctx.obj
    spec = PoolSpec(
        target=target,
        workers=workers,
        name=g.name,
        heartbeat_timeout=heartbeat_timeout,
        grace=grace,
        restart=RestartPolicy(restart.value),
        max_restarts=max_restarts,
        restart_window=restart_window,
        flush_interval=flush_interval,
        start_method=start_method.value,
        max_rss=_size(max_rss),
        max_age=max_age,
        max_age_jitter=max_age_jitter,
        rss_interval=rss_interval,
        metrics_port=metrics_port,
        log_format=log_format.value,
    )
    return _start(g, spec, foreground=foreground, wait=wait)


def _start(g: Globals, spec: Any, *, foreground: bool, wait: float) -> int:
    from cli.status_cmd import status_main
    from statusboard.probe import probe

    directory = rdir.ensure(g.directory)
    live = probe(directory, g.name)
    if live.document["source"] == "shm":
        typer.echo(f"pool {g.name} is already running (supervisor pid {live.document['supervisor']['pid']})")
        status_main(g.name, g.runtime_dir)
        return ExitCode.OK
    if foreground:
        from pool.supervisor import Supervisor
        from pool.titles import set_title, supervisor_title

        set_title(supervisor_title(spec.name))
        result = Supervisor(spec, runtime_dir=directory, echo_log=True).run()
        if not result.ok:
            raise CliError(result.boot_error or f"stop failed: survivors {result.survivors}")
        return ExitCode.OK
    from pool.daemon import launch

    launched = launch(spec, directory, wait=wait)
    if not launched.ok:
        raise CliError(f"start failed: {launched.message}")
    status_main(g.name, g.runtime_dir)
    return ExitCode.OK


@app.command()
def stop(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(
            callback=_positive,
            help="Seconds to wait for the supervisor before killing its process group "
            "(default: its grace + 5).",
        ),
    ] = None,
) -> int:
    """Stop the pool and verify every process is gone (exit 1 naming any survivor)."""
    from pool.stopper import stop_pool

    g: Globals = ctx.obj
    outcome = stop_pool(g.directory, timeout=timeout if timeout is not None else _grace(g) + 5.0)
    if not outcome.ok:
        raise CliError(outcome.message)
    typer.echo(f"pool {g.name}: {outcome.message}")
    return ExitCode.OK


def _grace(g: Globals) -> float:
    from statusboard import runtime_file
    from statusboard.errors import RuntimeFileError

    try:
        value = runtime_file.read(g.directory).get("grace_s")
    except RuntimeFileError:
        return 5.0
    return float(value) if isinstance(value, int | float) else 5.0


@app.command()
def restart(
    ctx: typer.Context,
    rolling: Annotated[
        bool, typer.Option(help="Replace workers one at a time; the rest keep serving.")
    ] = False,
    wait: Annotated[float, typer.Option(callback=_positive, help="Seconds to wait for readiness.")] = 60.0,
) -> int:
    """Stop and start the pool with the same settings (or --rolling: one worker at a time)."""
    from pool.spec import PoolSpec
    from statusboard import runtime_file

    g: Globals = ctx.obj
    document = runtime_file.read(g.directory)
    if rolling:
        from cli.live import rolling_restart

        rolling_restart(g.directory, g.name, document, wait)
        from cli.status_cmd import status_main

        status_main(g.name, g.runtime_dir)
        return ExitCode.OK
    spec_doc = document.get("spec")
    if not isinstance(spec_doc, dict):
        raise CliError(f"{g.directory}/runtime.json records no pool settings; use start")
    from pool.stopper import stop_pool

    outcome = stop_pool(g.directory, timeout=_grace(g) + 5.0)
    if not outcome.ok:
        raise CliError(outcome.message)
    return _start(g, PoolSpec(**spec_doc), foreground=False, wait=wait)


@app.command()
def status(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    supervisor_timeout: Annotated[
        float,
        typer.Option(
            callback=_positive,
            help="A supervisor whose board heartbeat is older than this is frozen. The supervisor "
            "beats every second, so use 2 s or more.",
        ),
    ] = 5.0,
) -> int:
    """Show the pool's verified health. Exit 0 running, 1 stale, 2 degraded, 3 not running, 4 unknown."""
    from cli.status_cmd import status_main

    g: Globals = ctx.obj
    return status_main(g.name, g.runtime_dir, as_json=json_out, supervisor_timeout=supervisor_timeout)


@app.command()
def watch(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(callback=_positive, help="Seconds between refreshes.")] = 0.5,
) -> int:
    """A live, refreshing table of the board until Ctrl-C."""
    from cli.live import watch_pool

    g: Globals = ctx.obj
    watch_pool(g.directory, g.name, interval)
    return ExitCode.OK


@app.command()
def scale(
    ctx: typer.Context,
    workers: Annotated[int, typer.Argument(min=1, max=1024, help="New number of workers (1..1024).")],
    wait: Annotated[float, typer.Option(callback=_positive, help="Seconds to wait until reached.")] = 30.0,
) -> int:
    """Change the number of workers live; return when it is reached."""
    from cli.live import scale_pool

    g: Globals = ctx.obj
    scale_pool(g.directory, g.name, workers, wait)
    typer.echo(f"pool {g.name}: {workers} workers running")
    return ExitCode.OK


@app.command()
def logs(
    ctx: typer.Context,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many last lines to print.")] = 20,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new lines until Ctrl-C.")
    ] = False,
) -> int:
    """Print (or follow) the supervisor log."""
    from cli.logs import print_log

    g: Globals = ctx.obj
    print_log(g.directory, lines, follow)
    return ExitCode.OK


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(callback=_positive, help="How long the demo runs.")] = 14.0,
    workers: Annotated[int, typer.Option("--workers", "-w", min=3, max=16, help="Workers in the demo.")] = 4,
) -> int:
    """Run a self-contained demo pool: a crash, a hang, restarts, a clean stop."""
    from cli.demo import run_demo

    return run_demo(seconds=seconds, workers=workers, started=time.monotonic())
