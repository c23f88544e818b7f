"""PoolSpec validation: every bad value is refused where it enters, naming field and value."""

from __future__ import annotations

import math

import pytest

from pool.errors import SpecError
from pool.spec import MAX_WORKERS, PoolSpec, RestartPolicy, check_target


def spec(**overrides):
    return PoolSpec(**{"target": "targets:well_behaved", **overrides})


@pytest.mark.parametrize("value", [0, -1, MAX_WORKERS + 1, 2.0, "2", True, None])
def test_workers_out_of_range_or_not_an_int(value):
    with pytest.raises(SpecError) as err:
        spec(workers=value)
    message = str(err.value)
    assert message.startswith("workers:")
    assert repr(value) in message
    assert f"1..{MAX_WORKERS}" in message


@pytest.mark.parametrize("value", [1, MAX_WORKERS])
def test_workers_bounds_are_inclusive(value):
    assert spec(workers=value).workers == value


@pytest.mark.parametrize(
    "field", ["heartbeat_timeout", "grace", "restart_window", "flush_interval", "backoff_base"]
)
@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, -0.5, "1", True])
def test_durations_must_be_positive_finite_numbers(field, value):
    with pytest.raises(SpecError) as err:
        spec(**{field: value})
    message = str(err.value)
    assert message.startswith(f"{field}:")
    assert repr(value) in message
    assert "> 0" in message


def test_small_fractional_durations_are_accepted():
    s = spec(heartbeat_timeout=0.05, grace=0.01, flush_interval=0.1)
    assert (s.heartbeat_timeout, s.grace, s.flush_interval) == (0.05, 0.01, 0.1)


@pytest.mark.parametrize("value", ["sometimes", "Permanent", "", "one_for_one"])
def test_unknown_restart_policy(value):
    with pytest.raises(SpecError) as err:
        spec(restart=value)
    message = str(err.value)
    assert message.startswith("restart:")
    assert repr(value) in message
    assert "permanent" in message and "transient" in message and "temporary" in message


@pytest.mark.parametrize("value", ["permanent", "transient", "temporary"])
def test_restart_policy_strings_become_the_enum(value):
    policy = spec(restart=value).restart
    assert policy is RestartPolicy(value)


@pytest.mark.parametrize("value", [-1, 1.5, "3", None])
def test_max_restarts_must_be_a_non_negative_int(value):
    with pytest.raises(SpecError) as err:
        spec(max_restarts=value)
    assert str(err.value).startswith("max_restarts:")
    assert repr(value) in str(err.value)


def test_max_restarts_zero_is_allowed():
    assert spec(max_restarts=0).max_restarts == 0


@pytest.mark.parametrize("value", ["threads", "FORK", ""])
def test_unknown_start_method(value):
    with pytest.raises(SpecError) as err:
        spec(start_method=value)
    assert str(err.value).startswith("start_method:")
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    "target",
    ["nocolon", "a:", ":f", "a:1x", "a:b:c", "a:b-c", "a:b.", "a:.b", "", 42, None],
)
def test_malformed_targets(target):
    with pytest.raises(SpecError) as err:
        spec(target=target)
    message = str(err.value)
    assert message.startswith("target:")
    assert repr(target) in message
    with pytest.raises(SpecError):
        check_target(target)


@pytest.mark.parametrize(
    ("target", "parts"),
    [
        ("a:b", ("a", "b")),
        ("pkg.mod:work", ("pkg.mod", "work")),
        ("pkg.mod:Worker.run", ("pkg.mod", "Worker.run")),
        ("path/to/file.py:work", ("path/to/file.py", "work")),
        ("/abs/app.py:_private", ("/abs/app.py", "_private")),
    ],
)
def test_well_formed_targets(target, parts):
    assert check_target(target) == parts
    assert spec(target=target).target == target


def test_spec_error_is_a_value_error_and_spec_is_frozen():
    assert issubclass(SpecError, ValueError)
    s = spec()
    with pytest.raises(AttributeError):
        s.workers = 3  # type: ignore[misc]


def test_defaults_are_sane():
    s = PoolSpec(target="app:work")
    assert s.workers == 1
    assert s.restart is RestartPolicy.PERMANENT
    assert s.start_method == "auto"
    assert s.heartbeat_timeout > 0 and s.grace > 0 and s.max_restarts >= 0
