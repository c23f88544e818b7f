"""Typer parameters shared by commands: the value checks, and the pool options of
`start` (and so of `systemd-unit`), built from the one table in pool/options.py."""

from __future__ import annotations

import inspect
import math
from enum import StrEnum
from typing import Annotated, Any

import typer

from pool.options import POOL_OPTIONS, PoolOption
from pool.spec import MAX_WORKERS


def size(value: str | None) -> int | None:
    if value is None:
        return None
    from pool.errors import SpecError
    from pool.spec import parse_size

    try:
        parsed = parse_size(value)
    except SpecError:
        raise typer.BadParameter(f"expected a size such as 512M or 2G, got {value!r}") from None
    if parsed < 1 << 20:
        raise typer.BadParameter(f"must be at least 1M, got {value!r}")
    return parsed


def size_text(value: str | None) -> str | None:
    """A size option kept as written (for a command line we print), once it is known valid."""
    size(value)
    return value


def not_negative(value: float | None) -> float | None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a finite number >= 0, got {value:g}")
    return value


def positive(value: float | None) -> float | None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise typer.BadParameter(f"must be a finite number > 0, got {value:g}")
    return value


def _choices(option: PoolOption) -> type[StrEnum]:
    enum = StrEnum(option.field.title().replace("_", ""), {c: c for c in option.choices})  # type: ignore[misc]
    return enum


def _annotation(option: PoolOption) -> tuple[Any, Any]:
    """(annotated type, default) of one pool option, as typer reads it."""
    names = [option.flag, *([option.short] if option.short else [])]
    kind, default, help_ = option.kind, option.default, option.help
    if kind == "workers":
        return Annotated[int, typer.Option(*names, min=1, max=MAX_WORKERS, metavar="N", help=help_)], default
    if kind == "count":
        return Annotated[int, typer.Option(*names, min=0, metavar="COUNT", help=help_)], default
    if kind in ("seconds", "seconds_or_zero"):
        check = positive if kind == "seconds" else not_negative
        hint = float | None if default is None else float
        return Annotated[hint, typer.Option(*names, callback=check, metavar="SECONDS", help=help_)], default
    if kind == "size":
        return Annotated[
            str | None, typer.Option(*names, callback=size_text, metavar="SIZE", help=help_)
        ], None
    if kind == "port":
        return Annotated[
            int | None, typer.Option(*names, min=0, max=65535, metavar="PORT", help=help_)
        ], default
    if kind == "choice":
        enum = _choices(option)
        return Annotated[enum, typer.Option(*names, help=help_)], enum(default)
    return Annotated[str, typer.Option(*names, metavar="TEXT", help=help_)], default


def pool_option_parameters() -> list[inspect.Parameter]:
    """Keyword parameters for every pool option, in the table's order."""
    params = []
    for option in POOL_OPTIONS:
        annotation, default = _annotation(option)
        params.append(
            inspect.Parameter(
                option.field, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def spec_values(options: dict[str, Any]) -> dict[str, Any]:
    """The PoolSpec keyword arguments for the pool options a command received."""
    values = {}
    for option in POOL_OPTIONS:
        if option.field not in options:
            continue
        value = options[option.field]
        if option.kind == "choice" and value is not None:
            value = str(value.value if isinstance(value, StrEnum) else value)
        elif option.kind == "size":
            value = size(value)
        values[option.field] = value
    return values
