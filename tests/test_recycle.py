"""Worker recycling (issue 9), with real worker processes and the real /proc.

A worker past ``max_rss`` or ``max_age`` (plus jitter) is replaced gracefully, one
at a time, never leaving fewer than N-1 workers serving, and the replacement is
not a crash: ``restarts`` and the restart budget do not see it, ``recycled`` does.
RSS is sampled from /proc onto the board (``rss_bytes``), or not at all with
``rss_interval=0``. The pure pieces (size parsing, the jitter draw, the N-1 gate)
are checked without processes at the end.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
import targets
from cli_targets import Cli, wait_for
from scripts import supkit
from scripts.supkit import wait_until

import statusboard
from pool.errors import SpecError
from pool.spec import PoolSpec, format_size, parse_size
from pool.supervision.recycle import age_limit, may_start, over_rss
from pool.supervision.supervisor import Supervisor
from statusboard.probe import probe
from statusboard.states import WorkerState as S

pytestmark = [pytest.mark.usefixtures("supervised"), pytest.mark.timeout(60)]
MIB = 1 << 20
MAX_RSS = 64 * MIB
GROWTH = 96 * MIB  # what targets.grow_on_cue holds after its cue
RECYCLED_RE = re.compile(r"worker (\d+) \(pid (\d+)\) recycled: (.*) \(recycle (\d+); not a crash\)$")


def stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def recycles(runtime: Path) -> list[re.Match[str]]:
    return [m for line in supkit.read_log(runtime).splitlines() if (m := RECYCLED_RE.search(line))]


def attach(runtime: Path) -> Any:
    """A board reader, once the supervisor (started without waiting) has written runtime.json."""

    def attached():
        try:
            return statusboard.attach(runtime)
        except (statusboard.StatusboardError, FileNotFoundError):
            return None

    return wait_until(attached, 10, "the board to be attachable")


def close_to(board_rss: int, pid: int) -> bool:
    """The board's figure agrees with psutil's reading of the same process (within 10%, 4 MiB)."""
    actual = psutil.Process(pid).memory_info().rss
    return abs(board_rss - actual) <= max(4 * MIB, actual // 10)


class OutOfService:
    """Samples the board as fast as it can and remembers the worst moment: the most
    workers not ``running`` at once."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.samples = 0
        self.busy_samples = 0  # samples with some worker out of service
        self.worst: list[dict[str, Any]] = []
        self.states_seen: set[str] = set()

    def sample(self) -> list[dict[str, Any]]:
        rows = self.reader.snapshot().workers()
        out = [w for w in rows if w["state"] != "running"]
        self.samples += 1
        self.busy_samples += bool(out)
        self.states_seen.update(w["state"] for w in rows)
        if len(out) > len(self.worst):
            self.worst = out
        return rows

    def until(self, predicate: Any, timeout: float, what: str) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sample()
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {rows}")
            time.sleep(0.001)


# -- max_rss -------------------------------------------------------------------------------


def test_a_worker_past_max_rss_is_recycled_gracefully_and_the_pool_stays_at_n(runtime):
    # forkserver (the embedded default): a forked worker would start as big as this pytest
    # process, which after a few hundred tests is itself past 64M.
    spec = supkit.make_spec(
        "grow_on_cue", workers=2, max_rss=MAX_RSS, rss_interval=0.25, grace=2.0, start_method="forkserver"
    )
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        before = wait_until(
            lambda: (rows := supkit.running(runtime, 2)) and all(w["rss_bytes"] for w in rows) and rows,
            30,
            "2 workers running with their RSS on the board",
        )
        # Without headroom under the limit the test would prove nothing (or recycle at once).
        assert all(w["rss_bytes"] < MAX_RSS - 16 * MIB for w in before), before
        victim, bystander = before
        cued = time.monotonic()
        os.kill(victim["pid"], signal.SIGUSR1)

        def replaced():
            rows = reader.snapshot().workers()
            return rows[0]["pid"] != victim["pid"] and rows[0]["state"] == "running" and rows

        # How soon is a figure (printed below), not a pass mark.
        after = wait_until(replaced, 30, lambda: f"slot 0 replaced: {reader.snapshot().workers()}", 0.001)
        took = time.monotonic() - cued
        assert supkit.is_gone(victim["pid"])
        new, other = after
        assert len(after) == 2 and all(w["state"] == "running" for w in after), after
        assert (new["generation"], new["recycled"], new["restarts"]) == (2, 1, 0), new
        assert new["last_exit_code"] == 0, new
        assert new["rss_bytes"] and new["rss_bytes"] < MAX_RSS, new
        # The other worker was not touched.
        assert (other["pid"], other["generation"], other["recycled"], other["restarts"]) == (
            bystander["pid"],
            1,
            0,
            0,
        ), other
        document = probe(runtime, spec.name).document  # what `status --json` prints
        assert [(w["recycled"], w["restarts"]) for w in document["workers"]] == [(1, 0), (0, 0)], document
        assert all(isinstance(w["rss_bytes"], int) and w["rss_bytes"] > 0 for w in document["workers"])
    print(f"\nFIGURE max_rss: cue -> replacement running {took * 1000:.0f} ms")

    log = supkit.read_log(runtime)
    (match,) = recycles(runtime)
    assert (int(match[1]), int(match[2]), match[4]) == (0, victim["pid"], "1"), match[0]
    reason = re.fullmatch(r"rss (\S+) over max_rss (\S+)", match[3])
    assert reason and reason[2] == "64M", match[3]
    assert parse_size(reason[1]) > MAX_RSS, match[3]  # a real sample, taken as the allocation grew
    assert f"worker 0 (pid {victim['pid']}) exited: code 0" in log  # graceful: the stop flag sufficed
    assert "escalated" not in log and "restarting" not in log and "killed from outside" not in log, log


def test_a_worker_over_max_rss_from_its_start_is_not_recycled_in_a_loop(runtime):
    """A worker past max_rss as soon as it starts (its imports alone are big, or it was forked
    from a big parent) gains nothing from a replacement, which starts just as big. Replacing
    it on every sample churns processes as fast as they boot, forever: recycles never count
    toward max_restarts, so nothing ends the loop. Such a worker is never recycled for memory:
    each says so once, and stays."""
    spec = supkit.make_spec("ballast_at_boot", workers=2, max_rss=MAX_RSS, rss_interval=0.25, grace=2.0)
    warning = "already over max_rss 64M: not recycling it for memory"
    with supkit.Background(Supervisor(spec, runtime_dir=runtime)), attach(runtime) as reader:
        wait_until(lambda: len(supkit.log_lines(runtime, warning)) >= 2, 30, "both workers' warning")
        first = reader.snapshot().workers()
        # Then many RSS samples over the limit (0.25 s apart): an observation window, since the
        # bug is churn over time. A loaded machine takes fewer samples in it, never a wrong one.
        began = time.monotonic()
        wait_until(lambda: time.monotonic() - began >= 2.0, 30, "2 s more of the pool")
        rows = reader.snapshot().workers()
    found = recycles(runtime)
    assert found == [], "; ".join(m[0] for m in found[:3])
    assert [(w["pid"], w["generation"], w["recycled"]) for w in rows] == [(w["pid"], 1, 0) for w in first], (
        first,
        rows,
    )
    assert len(supkit.log_lines(runtime, warning)) == 2, supkit.read_log(runtime)  # once each


def test_rss_on_the_board_is_the_workers_resident_memory_and_follows_it(runtime):
    spec = supkit.make_spec("grow_on_cue", workers=2, rss_interval=0.1)  # no max_rss: watch, never recycle
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        rows = wait_until(
            lambda: (rows := supkit.running(runtime, 2)) and all(w["rss_bytes"] for w in rows) and rows,
            30,
            "RSS on the board",
        )
        # A just-started worker still settles (first touches of copy-on-write pages): within a
        # few sampling intervals the board agrees with psutil.
        for w in rows:
            wait_until(
                lambda w=w: close_to(reader.snapshot().workers()[w["slot"]]["rss_bytes"], w["pid"]),
                30,
                lambda w=w: (
                    f"board {reader.snapshot().workers()[w['slot']]['rss_bytes']} "
                    f"vs psutil {psutil.Process(w['pid']).memory_info().rss}"
                ),
            )
        rows = reader.snapshot().workers()
        grower, idle = rows
        os.kill(grower["pid"], signal.SIGUSR1)
        grown = wait_until(
            lambda: (
                (w := reader.snapshot().workers()[0])["rss_bytes"] >= grower["rss_bytes"] + GROWTH - 4 * MIB
                and w
            ),
            30,
            lambda: f"the growth on the board: {reader.snapshot().workers()}",
        )
        assert grown["pid"] == grower["pid"] and grown["recycled"] == 0  # no limit, no recycle
        wait_until(
            lambda: close_to(reader.snapshot().workers()[0]["rss_bytes"], grower["pid"]),
            30,
            lambda: (
                f"board {reader.snapshot().workers()[0]} vs {psutil.Process(grower['pid']).memory_info()}"
            ),
        )
        still = reader.snapshot().workers()[1]
        assert still["pid"] == idle["pid"] and still["rss_bytes"] < idle["rss_bytes"] + 8 * MIB, still


def test_rss_sampling_off_leaves_rss_bytes_null(runtime):
    spec = supkit.make_spec("well_behaved", workers=2, rss_interval=0)
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        # Several loop wakes later (a beat every 50 ms), still nothing sampled.
        def beaten():
            rows = reader.snapshot().workers()
            return all(w["beats"] >= 6 for w in rows) and rows

        rows = wait_until(beaten, 30, "a few heartbeats")
        assert [w["rss_bytes"] for w in rows] == [None, None], rows
        assert [w["rss_bytes"] for w in probe(runtime, spec.name).document["workers"]] == [None, None]


# -- max_age, jitter, one at a time ------------------------------------------------------------


def test_max_age_with_jitter_recycles_spread_out_and_never_two_at_once(runtime):
    max_age, jitter, wanted = 1.5, 1.0, 5
    # slow_turnover keeps a recycled slot out of service ~2 x 0.15 s: overlapping recycles
    # would show up on the board, not slip between two samples.
    spec = supkit.make_spec(
        "slow_turnover", workers=3, max_age=max_age, max_age_jitter=jitter, grace=2.0, rss_interval=0
    )
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        watch = OutOfService(reader)
        rows = watch.until(
            lambda rows: (
                sum(w["recycled"] for w in rows) >= wanted and all(w["state"] == "running" for w in rows)
            ),
            60,
            f"{wanted} recycles",
        )
    assert len(watch.worst) <= 1, f"more than one worker out of service at once: {watch.worst}"
    assert watch.busy_samples > 0, watch.__dict__  # the sampler did see replacements under way
    assert all(w["restarts"] == 0 for w in rows), rows
    assert watch.states_seen <= {"running", "stopping", "exited", "starting"}, watch.states_seen

    lines = supkit.read_log(runtime).splitlines()
    found = [(i, m) for i, line in enumerate(lines) if (m := RECYCLED_RE.search(line))]
    assert len(found) >= wanted, lines
    ages = []
    for (i, m), (j, _) in zip(found, [*found[1:], (len(lines), None)], strict=True):
        slot, pid = m[1], m[2]
        age = re.fullmatch(rf"max_age {max_age:g}s reached \(age ([\d.]+)s\)", m[3])
        assert age, m[3]
        ages.append(float(age[1]))
        # One at a time: this slot's process ended and its replacement started before the next
        # recycle began (the board check above adds: and beat).
        between = lines[i + 1 : j]
        if j < len(lines):
            assert any(f"worker {slot} (pid {pid}) exited: code 0" in line for line in between), between
            assert any(f"worker {slot} started pid" in line for line in between), between
    assert all(age >= max_age - 0.05 for age in ages), ages  # never before max_age
    assert len({round(age, 1) for age in ages}) >= 3, ages
    times = [stamp(lines[i]) for i, _ in found]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Spread: one recycle has to finish (~2 x 0.15 s turnover) before the next starts.
    assert min(gaps) >= 2 * targets.TURNOVER_S - 0.05, gaps
    log = "\n".join(lines)
    assert "restarting" not in log and "escalated" not in log, log


def test_recycles_never_push_a_slot_toward_failed(runtime):
    # One restart allowed in 60 s: if recycles counted, the second would back off and
    # the third would fail the slot.
    spec = supkit.make_spec(
        "well_behaved",
        workers=1,
        max_restarts=1,
        restart_window=60.0,
        max_age=0.4,
        max_age_jitter=0,
        rss_interval=0,
    )
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        watch = OutOfService(reader)
        (row,) = watch.until(
            # recycled counts a recycle as it begins: wait for its replacement to run.
            lambda rows: (
                rows[0]["recycled"] >= 4
                and rows[0]["state"] == "running"
                and rows[0]["generation"] == rows[0]["recycled"] + 1
            ),
            60,
            "4 recycles",
        )
        assert row["restarts"] == 0, row
        assert not watch.states_seen & {"backoff", "failed"}, watch.states_seen
        # The budget is untouched: the one allowed crash is restarted at once, not failed.
        generation = row["generation"]
        os.kill(row["pid"], signal.SIGKILL)
        (crashed,) = watch.until(
            lambda rows: rows[0]["generation"] > generation and rows[0]["state"] == "running",
            30,
            "the crashed worker replaced",
        )
        assert crashed["restarts"] == 1 and crashed["last_exit_code"] == -signal.SIGKILL, crashed
    assert not watch.states_seen & {"backoff", "failed"}, watch.states_seen
    log = supkit.read_log(runtime)
    assert "worker 0 restarting (restart 1)" in log
    assert "failed" not in log and "restarting in" not in log, log
    assert len(recycles(runtime)) >= 4


def test_no_recycle_while_another_worker_is_failed(runtime):
    """N-1: with slot 1 crash-looping into `failed`, recycling slot 0 would leave none serving."""
    max_age = 0.3
    spec = supkit.make_spec(
        "raise_in_slot_1",
        workers=2,
        max_restarts=2,
        restart_window=30.0,
        backoff_base=0.05,
        max_age=max_age,
        max_age_jitter=0,
    )
    began = time.monotonic()
    with supkit.Background(Supervisor(spec, runtime_dir=runtime)), attach(runtime) as reader:
        first = wait_until(
            lambda: (rows := reader.snapshot().workers()) and rows[0]["state"] == "running" and rows[0],
            30,
            "slot 0 running",
        )
        watch = OutOfService(reader)
        rows = watch.until(lambda rows: rows[1]["state"] == "failed", 30, "slot 1 failed")
        # Watch slot 0 for a few max_ages more: it stays due, and stays put.
        rows = watch.until(
            lambda rows: rows[0]["pid"] != first["pid"] or time.monotonic() - began > 5 * max_age,
            10,
            "slot 0 replaced, or 5 x max_age",
        )
        assert (rows[0]["pid"], rows[0]["generation"], rows[0]["recycled"], rows[0]["state"]) == (
            first["pid"],
            1,
            0,
            "running",
        ), rows
    assert not recycles(runtime), supkit.read_log(runtime)


def test_a_due_recycle_waits_until_the_other_worker_serves_again(runtime):
    """N-1: slot 0 is due at 0.2 s while slot 1 is down (backoff); it is recycled only after
    slot 1's fourth generation runs."""
    max_age = 0.2
    spec = supkit.make_spec(
        "slot_1_down_until_generation_4",
        workers=2,
        backoff_base=0.3,
        max_age=max_age,
        max_age_jitter=0,
        rss_interval=0,
    )
    with supkit.Background(Supervisor(spec, runtime_dir=runtime)), attach(runtime) as reader:
        watch = OutOfService(reader)
        history = []

        def slot_0_recycled(rows):
            if len(rows) == 2:
                history.append((rows[0]["generation"], rows[1]["generation"], rows[1]["state"]))
            return len(rows) == 2 and rows[0]["recycled"] >= 1

        watch.until(slot_0_recycled, 30, "slot 0 recycled")
    # While slot 0 was still its first process, slot 1 was down and came back at generation 4.
    assert any(g0 == 1 and g1 < 4 and s1 != "running" for g0, g1, s1 in history), history
    assert all(g1 >= 4 and s1 == "running" for g0, g1, s1 in history if g0 == 2), history[:50]
    lines = supkit.read_log(runtime).splitlines()
    first = next(i for i, line in enumerate(lines) if RECYCLED_RE.search(line))
    match = RECYCLED_RE.search(lines[first])
    assert match and match[1] == "0", lines[first]
    back = next(
        i for i, line in enumerate(lines) if "worker 1 started pid" in line and "(generation 4)" in line
    )
    assert back < first, lines
    born = next(line for line in lines if f"worker 0 started pid {match[2]} " in line)
    # Due at 0.2 s, it waited out slot 1's backoff (0 + 0.3 + 0.45 s).
    assert stamp(lines[first]) - stamp(born) >= 0.7, (born, lines[first])


# -- through the CLI --------------------------------------------------------------------------------


def test_cli_max_rss_recycles_and_status_shows_recycled_and_rss(cli: Cli) -> None:
    cli.start("targets:grow_on_cue", "--max-rss", "64M", "--rss-interval", "0.25", workers=2)
    code, document = cli.status()
    assert code == 0, document
    assert all(isinstance(w["rss_bytes"], int) and 0 < w["rss_bytes"] < MAX_RSS for w in document["workers"])
    victim = document["workers"][0]
    os.kill(victim["pid"], signal.SIGUSR1)

    def recycled():
        code, document = cli.status()
        first = document["workers"][0]
        return code == 0 and first["recycled"] == 1 and first["state"] == "running" and document

    document = wait_for(recycled, 10.0, "slot 0 recycled")
    first, second = document["workers"]
    assert first["pid"] != victim["pid"] and first["restarts"] == 0 and first["generation"] == 2, first
    assert second["recycled"] == 0 and second["generation"] == 1, second
    table = cli("status")
    assert table.code == 0, str(table)
    header = next(line for line in table.out.splitlines() if line.lstrip().startswith("SLOT"))
    assert "RECYCLED" in header and "RSS" in header, table.out
    assert any("over max_rss 64M" in line and "recycled" in line for line in cli.log_lines())
    cli.ok("stop")


@pytest.mark.parametrize(
    ("options", "fragments"),
    [
        (("--max-rss", "12X"), ("--max-rss", "'12X'")),
        (("--max-rss", "512K"), ("--max-rss", "'512K'")),
        (("--max-rss", "64M", "--rss-interval", "0"), ("max_rss", "rss_interval")),
        (("--max-age", "0"), ("--max-age", "got 0")),
        (("--max-age", "5", "--max-age-jitter", "-1"), ("--max-age-jitter", "got -1")),
        (("--rss-interval", "-1"), ("--rss-interval", "got -1")),
    ],
)
def test_cli_refuses_bad_recycling_options_naming_option_and_value(cli: Cli, options, fragments) -> None:
    result = cli("start", "cli_targets:steady", *options, "--wait", "5")
    assert result.code in (1, 2), str(result)
    assert len(result.err_lines) == 1, str(result)
    for fragment in fragments:
        assert fragment in result.err, str(result)
    assert not cli.segments() and not (cli.directory / "supervisor.log").exists()


# -- the pure pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * MIB),
        ("512m", 512 * MIB),
        ("1.5G", 3 * (1 << 29)),
        ("800MiB", 800 * MIB),
        ("800MB", 800 * MIB),
        ("64K", 64 << 10),
        ("2T", 2 << 40),
        ("1048576", 1 << 20),
        (" 2 G ", 2 << 30),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "-1M", "12X", "1.2.3G", "5 MM", "ten"])
def test_parse_size_refuses_garbage_naming_it(text):
    with pytest.raises(SpecError, match="size") as err:
        parse_size(text)
    assert repr(text) in str(err.value)


def test_format_size_round_trips_the_common_figures():
    for size in (512 * MIB, 64 * MIB, 2 << 30, 3 * (1 << 29), 800 << 10):
        assert parse_size(format_size(size)) == size, format_size(size)
    assert over_rss(PoolSpec(target="m:f", max_rss=MAX_RSS), 100 * MIB) == "rss 100M over max_rss 64M"
    assert over_rss(PoolSpec(target="m:f", max_rss=MAX_RSS), MAX_RSS) is None
    assert over_rss(PoolSpec(target="m:f"), 1 << 40) is None


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_rss": MAX_RSS, "rss_interval": 0}, "max_rss: needs RSS sampling"),
        ({"max_rss": 1000}, "max_rss"),
        ({"max_rss": 1.5 * MIB}, "max_rss"),
        ({"max_rss": True}, "max_rss"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": -1.0}, "max_age"),
        ({"max_age": float("nan")}, "max_age"),
        ({"max_age": 10, "max_age_jitter": -1}, "max_age_jitter"),
        ({"max_age": 10, "max_age_jitter": float("inf")}, "max_age_jitter"),
        ({"rss_interval": -1}, "rss_interval"),
        ({"rss_interval": float("nan")}, "rss_interval"),
        ({"rss_interval": True}, "rss_interval"),
    ],
)
def test_bad_recycling_settings_are_refused_naming_the_field(settings, fragment):
    with pytest.raises(SpecError, match=re.escape(fragment)):
        PoolSpec(target="m:f", **settings)


def test_good_recycling_settings_and_the_default_jitter():
    spec = PoolSpec(target="m:f", max_rss=parse_size("512M"), max_age=3600)
    assert spec.max_rss == 512 * MIB and spec.rss_interval == 1.0
    assert spec.age_jitter == 360.0  # a tenth of max_age
    assert PoolSpec(target="m:f", max_age=10, max_age_jitter=0).age_jitter == 0.0
    assert PoolSpec(target="m:f").age_jitter == 0.0
    assert PoolSpec(target="m:f", rss_interval=0).rss_interval == 0


def test_the_age_limit_is_max_age_plus_a_spread_share_of_the_jitter():
    rng = random.Random(9)
    spec = PoolSpec(target="m:f", max_age=1.5, max_age_jitter=1.0)
    limits = [age_limit(spec, rng) for _ in range(200)]
    assert all(1.5 <= x <= 2.5 for x in limits)
    assert statistics.pstdev(limits) > 0.2  # uniform over 1 s: ~0.29
    assert min(limits) < 1.6 and max(limits) > 2.4
    assert age_limit(PoolSpec(target="m:f", max_age=2, max_age_jitter=0), rng) == 2
    assert age_limit(PoolSpec(target="m:f"), rng) is None


@dataclass
class FakeSlot:
    index: int
    state: S = S.RUNNING
    replacing: bool = False


@pytest.mark.parametrize(
    ("others", "desired", "allowed"),
    [
        ([S.RUNNING, S.RUNNING], 3, True),
        ([S.RUNNING, S.BACKOFF], 3, False),  # one down already: recycling would leave N-2
        ([S.RUNNING, S.STARTING], 3, False),  # a replacement not yet beating does not serve
        ([S.RUNNING, S.FAILED], 3, False),
        ([S.STOPPING, S.RUNNING], 3, False),
        ([], 1, True),  # a pool of one may recycle its only worker (N-1 = 0)
        ([S.FAILED], 2, False),
    ],
)
def test_the_n_minus_1_gate(others, desired, allowed):
    candidate = FakeSlot(0)
    slots = [candidate] + [FakeSlot(i + 1, state) for i, state in enumerate(others)]
    assert may_start(candidate, slots, desired) is allowed


def test_the_n_minus_1_gate_refuses_a_second_replacement_and_a_worker_not_serving():
    slots = [FakeSlot(0), FakeSlot(1, replacing=True), FakeSlot(2)]
    assert not may_start(slots[0], slots, 3)  # slot 1 is already being replaced
    assert not may_start(slots[1], slots, 3)  # already on its way out
    assert not may_start(FakeSlot(0, S.STARTING), [FakeSlot(0, S.STARTING), FakeSlot(1)], 2)
    retiring = [FakeSlot(0), FakeSlot(1), FakeSlot(2)]
    assert not may_start(retiring[2], retiring, 2)  # past the desired size: retired, not recycled
