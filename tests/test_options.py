"""One table of pool options (pool/options.py): PoolSpec, `start` and `systemd-unit` agree
with it, so an option cannot be added to one and forgotten in another."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer.main

from cli import params
from cli.app import app
from pool.options import NOT_OPTIONS, POOL_OPTIONS
from pool.spec import PoolSpec

# A value other than the default for each option, as typed on a command line and as PoolSpec holds it.
NON_DEFAULT = {
    "workers": ("3", 3),
    "heartbeat_timeout": ("7.5", 7.5),
    "grace": ("2", 2.0),
    "restart": ("transient", "transient"),
    "max_restarts": ("9", 9),
    "restart_window": ("30", 30.0),
    "flush_interval": ("4", 4.0),
    "start_method": ("forkserver", "forkserver"),
    "max_rss": ("512M", 512 << 20),
    "max_age": ("3600", 3600.0),
    "max_age_jitter": ("60", 60.0),
    "rss_interval": ("0.5", 0.5),
    "metrics_port": ("9100", 9100),
    "metrics_host": ("0.0.0.0", "0.0.0.0"),
    "log_format": ("json", "json"),
}


def _command(name: str) -> Any:
    group: Any = typer.main.get_command(app)
    return group.commands[name]


def test_every_spec_field_is_an_option_or_deliberately_not() -> None:
    fields = {f.name for f in dataclasses.fields(PoolSpec)}
    options = [o.field for o in POOL_OPTIONS]
    assert len(options) == len(set(options)), "an option listed twice"
    assert set(options) | set(NOT_OPTIONS) == fields, "a PoolSpec field is neither an option nor excluded"
    assert not set(options) & set(NOT_OPTIONS)
    assert set(NON_DEFAULT) == set(options), "this test's table misses an option"


def test_start_offers_exactly_the_table_with_the_specs_defaults() -> None:
    start = _command("start")
    by_name = {p.name: p for p in start.params}
    assert set(by_name) - {"target", "foreground", "wait"} == {o.field for o in POOL_OPTIONS}
    spec_defaults = {f.name: f.default for f in dataclasses.fields(PoolSpec)}
    for option in POOL_OPTIONS:
        param = by_name[option.field]
        assert option.flag in param.opts
        default = param.default.value if hasattr(param.default, "value") else param.default
        expected = spec_defaults[option.field]
        assert default == (expected.value if hasattr(expected, "value") else expected), option.field


@pytest.mark.parametrize("command", ["start", "systemd-unit"])
def test_each_option_given_reaches_the_spec(command: str) -> None:
    """Parse a command line with every option set to a non-default value (no pool starts:
    the parsed values are turned into a PoolSpec as start does)."""
    cmd = _command(command)
    argv = ["m:f"]
    for option in POOL_OPTIONS:
        argv += [option.flag, NON_DEFAULT[option.field][0]]
    ctx = cmd.make_context(command, argv, resilient_parsing=False)
    values = {k: v for k, v in ctx.params.items() if k not in ("target", "foreground", "wait")}
    spec = PoolSpec(target="m:f", **params.spec_values(values))
    for option in POOL_OPTIONS:
        got = getattr(spec, option.field)
        got = got.value if hasattr(got, "value") else got
        assert got == NON_DEFAULT[option.field][1], option.field
