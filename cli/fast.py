"""The fast path: recognise a plain `status` or `stop` call before typer loads.

typer stays the only definition of the commands and their help: anything this
parser does not fully understand (--help, an unknown option, a bad value) is
left to typer, which reports it properly. Importing typer and building its
command tree costs ~100 ms here, more than the whole status check.
"""

from __future__ import annotations

import math

_GLOBAL_VALUE = ("--name", "--runtime-dir")
# command -> (its options taking a positive number of seconds, its flags)
_COMMANDS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "status": ({"--supervisor-timeout": "supervisor_timeout"}, {"--json": "as_json"}),
    "stop": ({"--timeout": "timeout"}, {}),
}


def parse_fast(argv: list[str]) -> tuple[str, dict[str, object]] | None:
    """(command, options) of a plain `[globals] status|stop [options]` call, else None."""
    options: dict[str, object] = {"name": "default", "runtime_dir": None, "debug": False}
    command: str | None = None
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, inline = token.partition("=")
        seconds, flags = _COMMANDS[command] if command else ({}, {})
        if key in (seconds if command else _GLOBAL_VALUE):
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if command:
                number = _seconds(value)
                if number is None:
                    return None
                options[seconds[key]] = number
            elif key == "--name" and not _valid_name(value):
                return None  # typer reports it as a usage error (exit 2; status's 1 means "stale")
            else:
                options[key[2:].replace("-", "_")] = value
        elif token == "--debug" and not command:
            options["debug"] = True
        elif token in _COMMANDS and not command:
            command = token
        elif token in flags:
            options[flags[token]] = True
        else:
            return None
        i += 1
    return (command, options) if command else None


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _valid_name(name: str) -> bool:
    from statusboard.errors import InvalidNameError
    from statusboard.runtime_dir import validate_name

    try:
        validate_name(name)
    except InvalidNameError:
        return False
    return True
