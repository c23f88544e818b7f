"""The `poolctl status` fast path: recognise a plain status call before typer loads.

typer stays the only definition of the command and its help: anything this
parser does not fully understand (--help, an unknown option, a bad value) is
left to typer, which reports it properly. Importing typer costs ~48 ms here,
more than the whole status check.
"""

from __future__ import annotations

import math

_GLOBAL_VALUE = ("--name", "--runtime-dir")
_STATUS_VALUE = ("--supervisor-timeout",)


def parse_status(argv: list[str]) -> dict[str, object] | None:
    """Options of a `[globals] status [--json] [--supervisor-timeout S]` call, else None."""
    options: dict[str, object] = {
        "name": "default",
        "runtime_dir": None,
        "debug": False,
        "as_json": False,
        "supervisor_timeout": 5.0,
    }
    seen_status = False
    i = 0
    while i < len(argv):
        token = argv[i]
        key, eq, inline = token.partition("=")
        allowed = _STATUS_VALUE if seen_status else _GLOBAL_VALUE
        if key in allowed:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if key == "--supervisor-timeout":
                try:
                    timeout = float(value)
                except ValueError:
                    return None
                if not math.isfinite(timeout) or timeout <= 0:
                    return None
                options["supervisor_timeout"] = timeout
            elif key == "--name" and not _valid_name(value):
                return None  # typer reports it as a usage error (exit 2; status's 1 means "stale")
            else:
                options[key[2:].replace("-", "_")] = value
        elif token == "--debug" and not seen_status:
            options["debug"] = True
        elif token == "status" and not seen_status:
            seen_status = True
        elif token == "--json" and seen_status:
            options["as_json"] = True
        else:
            return None
        i += 1
    return options if seen_status else None


def _valid_name(name: str) -> bool:
    from statusboard.errors import InvalidNameError
    from statusboard.runtime_dir import validate_name

    try:
        validate_name(name)
    except InvalidNameError:
        return False
    return True
