"""The typer app: every command's options and help, as thin calls into pool/statusboard.

Exit codes are decided by cli.main (the one boundary); commands return an int
or raise CliError / PoolError / StatusboardError.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from cli import params
from cli.errors import CliError, ExitCode
from pool.spec import MAX_WORKERS
from statusboard import runtime_dir as rdir
from statusboard.errors import InvalidNameError

app = typer.Typer(
    name="poolctl",
    help="Keep a pool of Python worker processes alive and tell the truth about their health.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class Globals:
    name: str
    runtime_dir: str | None
    debug: bool

    @property
    def directory(self) -> Path:
        """The runtime directory; one that exists must be safe (ours, no symlink, 0700-ish)."""
        from cli.stop_cmd import checked_directory

        return checked_directory(self.name, self.runtime_dir)


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


@app.command()
def start(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(metavar="TARGET", help="Worker target: module:function or path/to/file.py:function."),
    ],
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run the supervisor in this terminal.")
    ] = False,
    wait: Annotated[
        float,
        typer.Option(
            callback=params.positive,
            metavar="SECONDS",
            help="Seconds to wait for every worker's first heartbeat.",
        ),
    ] = 30.0,
    **options: Any,
) -> int:
    """Start a pool; return once every worker has sent its first heartbeat."""
    # The pool options (--workers ... --log-format) come from one table, pool/options.py,
    # with PoolSpec's defaults: see _with_pool_options below.
    from pool.spec import PoolSpec

    g: Globals = ctx.obj
    spec = PoolSpec(target=target, name=g.name, **params.spec_values(options))
    return _start(g, spec, foreground=foreground, wait=wait)


def _with_pool_options(command: Callable[..., int]) -> None:
    """Typer reads a command's parameters from its signature: give ``command`` the pool
    options (they arrive in its ``**options``)."""
    own = inspect.signature(command, eval_str=True)
    fixed = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = own.replace(parameters=[*fixed, *params.pool_option_parameters()])  # type: ignore[attr-defined]


_with_pool_options(start)


def _start(g: Globals, spec: Any, *, foreground: bool, wait: float) -> int:
    directory = rdir.ensure(g.directory)
    if not foreground:
        from pool.supervision.lock import StartLock

        # Held until the daemon is ready or has failed: a `stop` meanwhile waits for the
        # supervisor this start launches and stops it, instead of finding nothing yet.
        with StartLock(directory, wait=wait + 10.0):
            return _start_detached(g, spec, directory, wait)
    if _already_running(g, directory):
        return ExitCode.OK
    from pool.integrations.sdnotify import SystemdNotifier
    from pool.integrations.titles import set_title, supervisor_title
    from pool.supervision.supervisor import Supervisor

    set_title(supervisor_title(spec.name))
    systemd = SystemdNotifier.from_environ()  # Type=notify units: READY=1 once every worker beat
    result = Supervisor(spec, runtime_dir=directory, echo_log=True, systemd=systemd).run()
    if not result.ok:
        raise CliError(result.boot_error or f"stop failed: survivors {result.survivors}")
    return ExitCode.OK


def _start_detached(g: Globals, spec: Any, directory: Path, wait: float) -> int:
    from cli.status_cmd import status_main
    from pool.ops.daemon import launch

    if _already_running(g, directory):
        return ExitCode.OK
    launched = launch(spec, directory, wait=wait)
    for note in launched.notes:  # e.g. what was left of a dead supervisor's pool, and killed
        typer.echo(note)
    if not launched.ok:
        raise CliError(f"start failed: {launched.message}")
    status_main(g.name, g.runtime_dir)
    return ExitCode.OK


def _already_running(g: Globals, directory: Path) -> bool:
    """True (and the status printed) when the pool already runs live."""
    from cli.status_cmd import status_main
    from statusboard.probe import probe

    live = probe(directory, g.name)
    if live.document["source"] != "shm":
        return False
    typer.echo(f"pool {g.name} is already running (supervisor pid {live.document['supervisor']['pid']})")
    status_main(g.name, g.runtime_dir)
    return True


@app.command()
def stop(
    ctx: typer.Context,
    timeout: Annotated[
        float | None,
        typer.Option(
            callback=params.positive,
            help="Seconds to wait for the supervisor before killing its process group "
            "(default: its grace + 5).",
        ),
    ] = None,
) -> int:
    """Stop the pool and verify every process is gone (exit 1 naming any survivor)."""
    from cli.stop_cmd import stop_main

    g: Globals = ctx.obj
    return stop_main(g.name, g.runtime_dir, timeout=timeout)


@app.command()
def restart(
    ctx: typer.Context,
    rolling: Annotated[
        bool, typer.Option(help="Replace workers one at a time; the rest keep serving.")
    ] = False,
    wait: Annotated[
        float, typer.Option(callback=params.positive, help="Seconds to wait for readiness.")
    ] = 60.0,
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
    from cli.stop_cmd import grace_of
    from pool.ops.stopper import stop_pool

    outcome = stop_pool(g.directory, timeout=grace_of(g.directory) + 5.0)
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
            callback=params.positive,
            help="A supervisor whose board heartbeat is older than this is frozen. The supervisor "
            "beats every second, so use 2 s or more.",
        ),
    ] = 5.0,
) -> int:
    """Show the pool's verified health. Exit 0 running, 1 stale or failed, 2 degraded, 3 not running, 4 unknown."""
    from cli.status_cmd import status_main

    g: Globals = ctx.obj
    return status_main(g.name, g.runtime_dir, as_json=json_out, supervisor_timeout=supervisor_timeout)


@app.command()
def watch(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option(callback=params.positive, help="Seconds between refreshes.")
    ] = 0.5,
) -> int:
    """A live, refreshing table of the board until Ctrl-C."""
    from cli.live import watch_pool

    g: Globals = ctx.obj
    watch_pool(g.directory, g.name, interval)
    return ExitCode.OK


@app.command()
def scale(
    ctx: typer.Context,
    workers: Annotated[
        int,
        typer.Argument(min=1, max=MAX_WORKERS, help=f"New number of workers (1..{MAX_WORKERS})."),
    ],
    wait: Annotated[
        float, typer.Option(callback=params.positive, help="Seconds to wait until reached.")
    ] = 30.0,
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
    output: Annotated[
        bool,
        typer.Option(
            "--output",
            help="The workers' stdout/stderr (output.log of a detached pool) instead of the supervisor log.",
        ),
    ] = False,
) -> int:
    """Print (or follow) the supervisor log, or with --output the workers' output."""
    from cli.logs import print_log

    g: Globals = ctx.obj
    print_log(g.directory, lines, follow, output=output)
    return ExitCode.OK


@app.command()
def demo(
    seconds: Annotated[float, typer.Option(callback=params.positive, help="How long the demo runs.")] = 14.0,
    workers: Annotated[int, typer.Option("--workers", "-w", min=3, max=16, help="Workers in the demo.")] = 4,
) -> int:
    """Run a self-contained demo pool: a crash, a hang, restarts, a clean stop."""
    from cli.demo import run_demo

    return run_demo(seconds=seconds, workers=workers, started=time.monotonic())


@app.command()
def metrics(
    ctx: typer.Context,
    supervisor_timeout: Annotated[
        float,
        typer.Option(
            callback=params.positive,
            help="A supervisor whose board heartbeat is older than this is frozen (as for status).",
        ),
    ] = 5.0,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE by atomic replace (for node_exporter's textfile collector), not stdout.",
        ),
    ] = None,
) -> int:
    """Print the pool's status in the Prometheus text exposition format.

    The same verified liveness decision as `status`: poolctl_supervisor_up, poolctl_pool_state (running, degraded, failed, stale, stopped, stop_failed, unknown) and, per worker, its state, health, heartbeat age, beats, restarts, recycles, tasks done/failed and memory.

    A stopped or never-started pool is reported too, with exit 0: the metrics say so. Exit 4 only when the runtime state is unreadable: the metrics are printed anyway (state "unknown") and the reason goes to stderr.

    For a cron job or node_exporter's textfile collector (--output). A pool started with --metrics-port serves the same at http://127.0.0.1:PORT/metrics.
    """
    from statusboard.health import StatusCode
    from statusboard.metrics import exposition
    from statusboard.probe import probe

    g: Globals = ctx.obj
    report = probe(rdir.resolve_str(g.name, g.runtime_dir), g.name, supervisor_timeout_s=supervisor_timeout)
    body = exposition(report.document)
    if output is None:
        typer.echo(body.decode(), nl=False)
    else:
        from statusboard.runtime_file import replace_atomically

        try:
            # 0644: node_exporter's textfile collector reads it as another user.
            replace_atomically(output, body, durable=False, mode=0o644)
        except OSError as exc:
            raise CliError(f"cannot write {output}: {exc.strerror or exc}") from exc
    if report.code == StatusCode.UNKNOWN:
        import sys

        sys.stderr.write(f"poolctl: runtime state unreadable: {report.document['reason']}\n")
        return int(StatusCode.UNKNOWN)
    return ExitCode.OK


def _with_start_options(command: Callable[..., int]) -> Callable[..., int]:
    """Give ``command`` start's argument and every start option but NOT_IN_UNIT, with start's
    own declarations (types, ranges, callbacks, help, defaults), so the two cannot drift.
    Typer reads a command's parameters from its signature; they arrive in ``**start_options``."""
    from cli.systemd_unit import NOT_IN_UNIT

    own = inspect.signature(command, eval_str=True)
    ctx, *unit_only = [p for p in own.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    taken = [
        p
        for name, p in inspect.signature(start, eval_str=True).parameters.items()
        if name != "ctx" and name not in NOT_IN_UNIT
    ]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*taken, *unit_only)]
    command.__signature__ = own.replace(parameters=[ctx, *rest])  # type: ignore[attr-defined]
    return command


@app.command("systemd-unit")
@_with_start_options
def systemd_unit(
    ctx: typer.Context,
    watchdog_sec: Annotated[
        float,
        typer.Option(
            callback=params.not_negative,
            help="WatchdogSec=: systemd restarts the pool if the supervisor loop stops pinging "
            "for this long; 0 = no watchdog.",
        ),
    ] = 30.0,
    description: Annotated[
        str | None, typer.Option(help="Description= (default names pool and target).")
    ] = None,
    user: Annotated[str | None, typer.Option(help="User= to run the pool as.")] = None,
    working_directory: Annotated[
        Path | None,
        typer.Option(help="WorkingDirectory= (default: the current directory); targets import from it."),
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", metavar="KEY=VALUE", help="Environment= line (repeatable).")
    ] = None,
    wanted_by: Annotated[str, typer.Option(help="[Install] WantedBy=.")] = "multi-user.target",
    **start_options: Any,
) -> int:
    """Print a systemd service unit that runs this pool (Type=notify, watchdog, clean stop).

    Every `start` option but --foreground (always there) and --wait is accepted here, and
    those given go into ExecStart: `poolctl --name NAME start TARGET --foreground ...`. The supervisor reports READY=1 once every worker has beaten, keeps STATUS= current, pings the watchdog, and stops its workers itself on SIGTERM (KillMode=mixed); TimeoutStopSec is --grace + 10. `systemctl reload` is a rolling restart (SIGHUP).

    Save it as /etc/systemd/system/poolctl-NAME.service, then: systemctl daemon-reload && systemctl enable --now poolctl-NAME
    """
    from cli.systemd_unit import UnitOptions, option_words, poolctl_command, render_unit

    g: Globals = ctx.obj
    target = start_options.pop("target")
    start_args: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name) if param.name else None
        given = source is not None and source.name != "DEFAULT"  # typed (or from the environment)
        if param.name in start_options and given and param.opts:
            option = next((o for o in param.opts if o.startswith("--")), param.opts[0])
            start_args += option_words(option, start_options[param.name])
    environment = []
    for item in env or []:
        key, eq, value = item.partition("=")
        if not eq or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="'--env'")
        environment.append((key, value))
    text = render_unit(
        UnitOptions(
            name=g.name,
            target=target,
            command=poolctl_command(),
            working_directory=os.path.abspath(working_directory or os.getcwd()),
            runtime_dir=os.path.abspath(g.runtime_dir) if g.runtime_dir is not None else None,
            start_args=start_args,
            grace=start_options["grace"],
            watchdog_sec=watchdog_sec,
            description=description,
            user=user,
            wanted_by=wanted_by,
            environment=environment,
        )
    )
    typer.echo(text, nl=False)
    return ExitCode.OK
