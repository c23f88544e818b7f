"""The `poolctl` entry point and the one place exceptions become exit codes.

Every command raises (CliError, PoolError, StatusboardError ...) or returns an
exit code; this module maps them: one line on stderr, the traceback only with
--debug, and click's usage errors as ONE line naming the option and value
(exit 2) instead of a usage block or a rich panel.
"""

from __future__ import annotations

import sys

from cli.errors import ExitCode


def run(argv: list[str] | None = None) -> None:
    """Console-script entry: never returns."""
    sys.exit(main(sys.argv[1:] if argv is None else argv))


def main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        from cli.fast import parse_fast

        fast = parse_fast(argv)
        if fast is None:
            return _run_typer(argv)
        command, options = fast
        name = str(options["name"])
        runtime_dir = options["runtime_dir"] if isinstance(options["runtime_dir"], str) else None
        if command == "stop":
            from cli.stop_cmd import stop_main

            timeout = options.get("timeout")
            return stop_main(name, runtime_dir, timeout=timeout if isinstance(timeout, float) else None)
        from cli.status_cmd import status_main

        supervisor_timeout = options.get("supervisor_timeout")
        return status_main(
            name,
            runtime_dir,
            as_json=bool(options.get("as_json")),
            supervisor_timeout=supervisor_timeout if isinstance(supervisor_timeout, float) else None,
        )
    except KeyboardInterrupt:
        _error("interrupted", debug)
        return ExitCode.INTERRUPTED
    except BaseException as exc:  # the boundary: everything else becomes one line
        if isinstance(exc, SystemExit):
            return exc.code if isinstance(exc.code, int) else ExitCode.FAILED
        return _report(exc, debug)


def _run_typer(argv: list[str]) -> int:
    import typer
    from typer.main import get_command

    from cli.app import app

    command = get_command(app)
    try:
        result = command.main(args=argv, prog_name="poolctl", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("poolctl: aborted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:
        # click's UsageError family (vendored inside typer since 0.2x): exit code 2.
        if getattr(exc, "exit_code", None) != ExitCode.USAGE or not hasattr(exc, "format_message"):
            raise
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and context is not None:
            sys.stdout.write(context.get_help() + "\n")
        else:
            sys.stderr.write(f"poolctl: error: {_one_line(exc.format_message())}{_bad_value(exc)}\n")
        return ExitCode.USAGE
    return result if isinstance(result, int) else ExitCode.OK


def _bad_value(exc: Exception) -> str:
    """', got VALUE' when typer's message leaves the value out (its pydantic range/type errors do)."""
    errors = getattr(exc.__cause__, "errors", None)
    if not callable(errors):
        return ""
    try:
        value = errors()[0]["input"]
    except Exception:
        return ""
    shown = repr(value)
    return "" if shown in exc.format_message() else f", got {shown}"  # type: ignore[attr-defined]


def _report(exc: BaseException, debug: bool) -> int:
    from cli.errors import CliError

    if isinstance(exc, CliError):
        _error(str(exc), debug)
        return exc.code
    from pool.errors import PoolError
    from statusboard.errors import StatusboardError

    if isinstance(exc, PoolError | StatusboardError):
        _error(str(exc), debug)
        return ExitCode.FAILED
    _error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", debug)
    return ExitCode.FAILED


def _error(message: str, debug: bool) -> None:
    sys.stderr.write(f"poolctl: error: {_one_line(message)}\n")
    if debug and sys.exc_info()[0] is not None:
        import traceback

        traceback.print_exc(file=sys.stderr)


def _one_line(message: str) -> str:
    return " ".join(message.split())
