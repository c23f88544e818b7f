"""Issue 13: a worker's process TREE is the unit. Whatever a worker starts ends when the
worker ends, by every path (stop, crash, SIGKILL from outside, hang kill, crash loop,
rolling and plain restart, scale down, recycle, the supervisor's own death), escapes
included (setsid, setpgid, double fork), with the grace applied to the tree; `stop` exits 0
only when nothing of the pool runs, and names a survivor otherwise. RSS is the tree's.

Black-box: the real `poolctl` console script (and, where a kill must be injected, the
embedded ``pool.Supervisor``). Every descendant a worker starts is recorded by pid and
create time (tests/containment_targets.py), so each test knows exactly which processes
must be gone and counts the survivors; a zombie counts as gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import containment_targets as ct
import psutil
import pytest
from cli_targets import FAST, TESTS_DIR, Cli, alive, cli_session, wait_for
from containment_targets import Descendant, Records, describe, survivors, wait_gone

from pool import PoolSpec, StopFailed, Supervisor
from statusboard import runtime_file
from statusboard.probe import probe

pytestmark = pytest.mark.timeout(120)
GONE_S = 5.0  # a worker's descendants may take a moment to follow it (a loaded machine)
MIB = 1 << 20


@pytest.fixture
def records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Records]:
    """The record directory, named in the environment every pool of the test inherits;
    every recorded descendant (and decoy) is SIGKILLed at teardown, pass or fail."""
    directory = tmp_path / "descendants"
    directory.mkdir()
    monkeypatch.setenv(ct.ENV_DIR, str(directory))
    found = Records(directory)
    try:
        yield found
    finally:
        found.cleanup()


@pytest.fixture
def cli(records: Records, runtime_dir: Path) -> Iterator[Cli]:
    """conftest's ``cli``, set up after ``records`` so the pool is killed before the records
    are swept (a worker killed later could still start a child)."""
    with cli_session(runtime_dir) as session:
        yield session


def workers(cli: Cli) -> list[dict[str, Any]]:
    _, document = cli.status()
    return list(document["workers"])


def by_slot(cli: Cli) -> dict[int, dict[str, Any]]:
    return {w["slot"]: w for w in workers(cli)}


def start(cli: Cli, target: str, *options: str, workers: int = 2) -> None:
    cli.ok("start", f"containment_targets:{target}", "-w", str(workers), *FAST, *options)


def assert_none_survive(records: list[Descendant], what: str, timeout: float = 0.0) -> None:
    left = wait_gone(records, timeout) if timeout else survivors(records)
    assert not left, (
        f"{what}: {len(left)} of {len(records)} descendant(s) still running"
        + (f" {timeout}s later" if timeout else "")
        + f": {describe(left)}"
    )


def replaced(cli: Cli, slot: int, old_pid: int, records: Records) -> dict[str, Any]:
    """Slot ``slot`` runs a new worker (not ``old_pid``) that has started its descendants."""

    def ready() -> dict[str, Any] | None:
        row = by_slot(cli).get(slot)
        if row and row["pid"] != old_pid and row["state"] == "running" and records.of_worker(row["pid"]):
            return row
        return None

    return wait_for(ready, 20.0, f"slot {slot} replaced (old pid {old_pid}) and its child started")


# -- 1. every way a worker ends ------------------------------------------------------------------


def test_stop_ends_every_workers_child_and_exits_0_only_when_none_survives(
    records: Records, cli: Cli
) -> None:
    start(cli, "child", workers=2)
    children = records.wait_for(2)
    assert len(children) == 2 and not [d for d in children if not d.running()], describe(children)
    result = cli("stop")
    left = survivors(children)
    assert not left, (
        f"`poolctl stop` exited {result.code} ({result.out.strip()!r}) while {describe(left)} ran"
    )
    assert result.code == 0, str(result)
    assert not records.marked(), f"a process of the pool survived: {describe(records.marked())}"


def test_a_worker_sigkilled_from_outside_takes_its_child_with_it_and_is_replaced(
    records: Records, cli: Cli
) -> None:
    start(cli, "child", workers=2)
    records.wait_for(2)
    rows = by_slot(cli)
    bystander = records.of_worker(rows[1]["pid"])
    killed: list[Descendant] = []
    victim = rows[0]["pid"]
    for _ in range(3):
        killed += records.of_worker(victim)
        os.kill(victim, signal.SIGKILL)
        victim = replaced(cli, 0, victim, records)["pid"]  # the replacement runs, with its own child
    assert len(killed) == 3, describe(killed)
    assert_none_survive(killed, "3 workers SIGKILLed from outside", GONE_S)
    assert survivors(bystander) == bystander, f"the other worker's child was killed: {describe(bystander)}"
    assert survivors(records.of_worker(victim)), "the last replacement's child is not running"
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the kills")


def test_a_hung_worker_killed_as_hung_takes_its_child_with_it(records: Records, cli: Cli) -> None:
    cli.ok(
        "start", "containment_targets:child_then_hang_on_cue", "-w", "2",
        "--heartbeat-timeout", "2", "--grace", "1",
    )  # fmt: skip
    records.wait_for(2)
    rows = by_slot(cli)
    hung = [records.of_worker(row["pid"]) for row in rows.values()]
    for row in rows.values():
        os.kill(row["pid"], signal.SIGUSR1)  # both stop beating: two hang kills
    for slot, row in rows.items():
        replaced(cli, slot, row["pid"], records)
    hung_children = [d for group in hung for d in group]
    assert len(hung_children) == 2, describe(hung_children)
    assert_none_survive(hung_children, "2 workers killed as hung", GONE_S)
    assert any(" hung: no heartbeat" in line for line in cli.log_lines()), cli.log_lines()
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the hang kills")


def test_a_crash_loop_leaves_no_child_of_any_dead_generation(records: Records, cli: Cli) -> None:
    start(cli, "crash_loop_with_child", "--max-restarts", "50", workers=2)
    records.wait_for(2)
    rows = by_slot(cli)
    bystander = records.of_worker(rows[1]["pid"])
    os.kill(rows[0]["pid"], signal.SIGUSR1)  # generation 1 raises; every later one crashes by itself
    # A few seconds of the loop: five dead generations, each of which started a child.
    wait_for(
        lambda: len([d for d in records.of_dead_workers() if d.slot == 0]) >= 5,
        30.0,
        "five crashed generations of slot 0",
    )
    dead = [d for d in records.of_dead_workers() if d.slot == 0]
    assert_none_survive(dead, f"a crash loop ({len(dead)} dead generations)", GONE_S)
    assert survivors(bystander) == bystander, f"the other worker's child was killed: {describe(bystander)}"
    assert any("exited: code 1" in line for line in cli.log_lines()), cli.log_lines()
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the crash loop")


def test_a_rolling_restart_ends_each_old_workers_child(records: Records, cli: Cli) -> None:
    start(cli, "child", workers=3)
    old = records.wait_for(3)
    old_workers = {d.worker for d in old}
    cli.ok("restart", "--rolling")
    new_rows = workers(cli)
    assert len(new_rows) == 3 and not {w["pid"] for w in new_rows} & old_workers, new_rows
    assert_none_survive(old, "restart --rolling of 3 workers", GONE_S)
    for row in new_rows:
        assert survivors(records.wait_for(1, worker=row["pid"])), f"worker {row['pid']}'s child not running"
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the rolling restart")


def test_a_plain_restart_ends_every_old_child_before_it_returns(records: Records, cli: Cli) -> None:
    start(cli, "child", workers=2)
    old = records.wait_for(2)
    cli.ok("restart")
    assert_none_survive(old, "plain restart (its stop part must verify the whole tree)")
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the restart")


def test_scale_down_ends_the_retired_workers_children_only(records: Records, cli: Cli) -> None:
    start(cli, "child", workers=1)
    records.wait_for(1)
    cli.ok("scale", "4")
    four = workers(cli)
    assert len(four) == 4, four
    for row in four:
        records.wait_for(1, worker=row["pid"])
    cli.ok("scale", "1")
    (kept,) = workers(cli)
    retired = [d for d in records.all() if d.worker != kept["pid"]]
    assert len(retired) == 3, describe(records.all())
    assert_none_survive(retired, "scale 4 -> scale 1 (3 workers retired)", GONE_S)
    kept_children = records.of_worker(kept["pid"])
    assert survivors(kept_children) == kept_children, (
        f"the kept worker's child was killed: {describe(kept_children)}"
    )
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the scale down")


def test_a_recycled_worker_takes_its_child_with_it(records: Records, cli: Cli) -> None:
    start(cli, "child", "--max-age", "1.5", "--max-age-jitter", "0", "--grace", "1", workers=2)
    records.wait_for(2)

    def recycled_twice() -> bool:
        rows = workers(cli)
        return sum(w["recycled"] for w in rows) >= 2 and all(w["state"] == "running" for w in rows)

    wait_for(recycled_twice, 30.0, "two recycles (--max-age 1.5)")
    dead = records.of_dead_workers()
    assert len(dead) >= 2, describe(records.all())
    assert_none_survive(dead, f"{len(dead)} recycled worker(s)", GONE_S)
    cli.ok("stop")
    assert_none_survive(records.all(), "stop after the recycles")


# -- 1. the supervisor SIGKILLed: the next stop / start cleans up -------------------------------------


# A pool may only kill what it recorded before the crash (pid + start time). These pools flush
# often and sample their trees often, and the test gives them the chance to record: it waits
# (softly: a pool may find them another way, by process group) until runtime.json names every
# descendant, as it would for children that had run for a while.
RECORDING = ("--flush-interval", "0.5", "--rss-interval", "0.25")


def recorded(directory: Path, descendants: list[Descendant], timeout: float = 5.0) -> bool:
    """Wait (softly: no failure) until runtime.json names every one of ``descendants``."""

    def named() -> bool:
        try:
            text = (directory / "runtime.json").read_text()
        except OSError:
            return False
        return all(re.search(rf"\b{d.pid}\b", text) for d in descendants)

    try:
        return bool(wait_for(named, timeout, "runtime.json to name every descendant"))
    except AssertionError:
        return False


def kill_the_supervisor(cli: Cli) -> tuple[int, list[Descendant]]:
    """SIGKILL the supervisor; wait for its workers to die (parent-death signal). Returns the
    supervisor pid and the recorded descendants, some of which may be left."""
    recorded(cli.directory, ct.descendants(Path(os.environ[ct.ENV_DIR])))
    sup_pid, _ = cli.supervisor()
    worker_pids = [(w["pid"], None) for w in workers(cli)]
    os.kill(sup_pid, signal.SIGKILL)
    wait_for(lambda: not alive(sup_pid), 10.0, f"supervisor {sup_pid} gone")
    wait_for(
        lambda: not [pid for pid, _ in worker_pids if alive(pid)],
        10.0,
        "the workers gone after their supervisor",
    )
    return sup_pid, ct.descendants(Path(os.environ[ct.ENV_DIR]))


def reported_cleanup(text: str, sup_pid: int, left: list[Descendant]) -> list[str]:
    """The lines that say what was killed of the old pool: they say "killed" and name the dead
    supervisor's pid or every leftover's pid."""
    pids = [str(d.pid) for d in left]
    return [
        line
        for line in text.splitlines()
        if "killed" in line
        and (re.search(rf"\b{sup_pid}\b", line) or all(re.search(rf"\b{p}\b", line) for p in pids))
    ]


def assert_cleanup_reported(
    cli: Cli, result: Any, sup_pid: int, left: list[Descendant], log_before: int
) -> None:
    """One line of the command's output, and a line of supervisor.log, say what was killed."""
    problems = []
    said = reported_cleanup(result.out + result.err, sup_pid, left)
    if len(said) != 1:
        problems.append(f"expected ONE line of output saying what was killed of the old pool, got {said}")
    new_log = cli.log_lines()[log_before:]
    if not reported_cleanup("\n".join(new_log), sup_pid, left):
        problems.append(f"supervisor.log does not say it; its new lines: {new_log}")
    assert not problems, "\n".join(problems) + f"\n{result}"


def test_after_the_supervisor_is_sigkilled_the_next_stop_kills_whats_left(records: Records, cli: Cli) -> None:
    start(cli, "child", *RECORDING, workers=2)
    records.wait_for(2)
    decoy = records.decoy()  # same command line and environment, re-parented the same way: not the pool's
    sup_pid, children = kill_the_supervisor(cli)
    left = survivors(children)
    log_before = len(cli.log_lines())

    result = cli("stop")
    assert_none_survive(children, f"`poolctl stop` (exit {result.code}) after the supervisor was SIGKILLed")
    assert result.code == 0, str(result)
    assert decoy.running(), f"stop killed a process that was never the pool's: {decoy.describe()}"
    if left:  # what the dead pool left was found, and the user is told, in one line and in the log
        assert_cleanup_reported(cli, result, sup_pid, left, log_before)
    assert runtime_file.read(cli.directory)["state"] == "stopped"


def test_after_the_supervisor_is_sigkilled_the_next_start_kills_whats_left(
    records: Records, cli: Cli
) -> None:
    start(cli, "setsid_child", *RECORDING, workers=2)
    records.wait_for(2)
    decoy = records.decoy()
    sup_pid, children = kill_the_supervisor(cli)
    left = survivors(children)
    log_before = len(cli.log_lines())

    result = cli("start", "containment_targets:child", "-w", "1", *FAST)
    cli.remember()
    assert result.code == 0, str(result)
    assert_none_survive(children, "`poolctl start` of the same pool after its supervisor was SIGKILLed")
    assert decoy.running(), f"start killed a process that was never the pool's: {decoy.describe()}"
    if left:  # what the dead pool left was found, and the user is told, in one line and in the log
        assert_cleanup_reported(cli, result, sup_pid, left, log_before)
    (row,) = workers(cli)
    assert row["state"] == "running" and survivors(records.wait_for(1, worker=row["pid"]))
    cli.ok("stop")
    assert_none_survive(records.all(), "stop of the new pool")
    assert decoy.running(), decoy.describe()


# -- 2. escapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["setsid_child", "setpgid_child", "double_fork", "daemonized"])
def test_stop_catches_a_descendant_that_escapes(records: Records, cli: Cli, target: str) -> None:
    start(cli, target, workers=2)
    escaped = records.wait_for(2)
    assert len(escaped) == 2 and survivors(escaped) == escaped, describe(escaped)
    if target in ("double_fork", "daemonized"):  # the middle process exited: re-parented
        assert all(d.via and psutil.Process(d.pid).ppid() != d.via for d in escaped), describe(escaped)
    if target != "double_fork":  # a process group of its own
        assert all(os.getpgid(d.pid) == d.pid for d in escaped), describe(escaped)
    result = cli("stop")
    left = survivors(escaped)
    assert not left, f"`poolctl stop` exited {result.code} while {describe(left)} ran"
    assert result.code == 0, str(result)
    assert not records.marked(), f"a process of the pool survived: {describe(records.marked())}"


def test_a_sigkilled_worker_takes_every_escaped_descendant_with_it(records: Records, cli: Cli) -> None:
    start(cli, "escapes", workers=1)
    (row,) = workers(cli)
    tree = records.wait_for(6, worker=row["pid"])
    assert survivors(tree) == tree, describe(tree)
    os.kill(row["pid"], signal.SIGKILL)
    replaced(cli, 0, row["pid"], records)
    assert_none_survive(
        tree, "a SIGKILLed worker's escaped descendants (setsid, setpgid, double fork)", GONE_S
    )
    cli.ok("stop")
    assert_none_survive(records.all(), "stop")


def test_stop_catches_a_descendant_that_keeps_forking_escapees_until_it_is_killed(
    records: Records, cli: Cli
) -> None:
    """A race, not a snapshot: the forker ignores SIGTERM and starts a new setsid'd process every
    5 ms through the whole grace, so whatever the stop looked at, new escapees keep appearing
    until the forker itself is SIGKILLed."""
    start(cli, "forker", "--grace", "1", workers=1)
    records.wait_for(10)  # the forker and a few of its escapees
    result = cli("stop")
    everything = records.all()
    left = survivors(everything)
    recorded_pids = {d.pid for d in everything}
    unrecorded = [m for m in records.marked() if m.pid not in recorded_pids]
    assert not left and not unrecorded, (
        f"`poolctl stop` exited {result.code}; {len(left)} of {len(everything)} recorded descendants run: "
        f"{describe(left)}; unrecorded (forked as their parent was killed): {describe(unrecorded)}"
        "\nsupervisor.log ends:\n" + "\n".join(cli.log_lines()[-8:])
    )
    assert result.code == 0, str(result)


# -- 3. the grace applies to the tree ---------------------------------------------------------------


def test_a_descendant_ignoring_sigterm_gets_sigkill_after_the_grace(records: Records, cli: Cli) -> None:
    start(cli, "term_ignoring_child", "--grace", "1", workers=1)  # the last --grace wins
    (stubborn,) = records.wait_for(1)
    result = cli("stop")
    assert not stubborn.running(), f"`poolctl stop` exited {result.code} while {stubborn.describe()} ran"
    assert result.code == 0, str(result)
    term = records.directory / f"{stubborn.pid}.term"
    assert term.exists() and "TERM" in term.read_text(), "the descendant got no SIGTERM before its SIGKILL"


# -- 4. a descendant that will not die --------------------------------------------------------------


@pytest.mark.usefixtures("supervised")
def test_an_unkillable_descendant_fails_the_stop_naming_it(records: Records, runtime_dir: Path) -> None:
    """No process can be made unkillable here, so the kernel's answer is simulated through the
    Supervisor's ``kill`` parameter (as tests/test_shutdown.py does for a worker): every signal
    to the chosen descendant is swallowed, whether sent to its pid or to a process group it is
    in (a negative pid, as os.kill takes it). Everything else is real."""
    protected: set[int] = set()
    swallowed: list[tuple[int, int]] = []

    def kill(pid: int, signum: int) -> None:
        if pid < 0:  # a process group: every member but the protected one
            if any(_pgid(p) == -pid for p in protected):
                swallowed.append((pid, signum))
                for member in psutil.pids():
                    if member not in protected and _pgid(member) == -pid:
                        _quiet_kill(member, signum)
                return
        elif pid in protected:
            swallowed.append((pid, signum))
            return
        os.kill(pid, signum)

    spec = PoolSpec(
        target="containment_targets:child",
        workers=2,
        name=f"pt-contain-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        cwd=str(TESTS_DIR),
        heartbeat_timeout=5.0,
        grace=1.0,
        flush_interval=0.5,
        start_method="fork",
    )
    sup = Supervisor(spec, runtime_dir=runtime_dir, kill=kill).start()
    try:
        children = records.wait_for(2)
        victim, other = children
        protected.add(victim.pid)
        with pytest.raises(StopFailed) as err:
            sup.stop()
        assert victim.pid in err.value.survivors, (err.value.survivors, describe(children))
        assert str(victim.pid) in str(err.value), str(err.value)
        assert "sleep 1000" in str(err.value), f"the survivor's command line is not named: {err.value}"
        assert swallowed, "no signal was ever sent to the descendant (or its group) through kill="
        assert victim.running()
        assert not other.running(), f"the other child survived: {other.describe()}"
        document = runtime_file.read(runtime_dir)
        assert document["state"] == "stop_failed", document
        assert victim.pid in [s["pid"] for s in document["survivors"]], document
        log = (runtime_dir / "supervisor.log").read_text()
        assert re.search(rf"\b{victim.pid}\b.*surviv|surviv.*\b{victim.pid}\b", log), log
        report = probe(runtime_dir, spec.name)
        assert (report.code, report.document["state"]) == (1, "stop_failed"), report.document
        assert str(victim.pid) in report.document["reason"], report.document
    finally:
        protected.clear()
        records.cleanup()
        with contextlib.suppress(StopFailed):
            sup.stop()  # a no-op once stopped; stops the pool if the test failed before its stop


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _quiet_kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


# -- 6. memory: the tree's ----------------------------------------------------------------------------


def test_status_rss_is_the_trees_and_shows_the_workers_own_beside_it(records: Records, cli: Cli) -> None:
    start(cli, "big_child_on_cue", "--rss-interval", "0.25", workers=1)
    (row,) = workers(cli)
    os.kill(row["pid"], signal.SIGUSR1)
    (big,) = records.wait_for(1, worker=row["pid"])
    big_rss = psutil.Process(big.pid).memory_info().rss
    assert big_rss >= ct.BIG_MIB * MIB, big_rss

    def tree_counted() -> dict[str, Any] | None:
        (row,) = workers(cli)
        return row if (row["rss_bytes"] or 0) >= big_rss else None

    try:
        row = wait_for(tree_counted, 10.0, f"rss_bytes >= the child's {big_rss} bytes")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: status shows {workers(cli)}") from None
    assert "rss_self_bytes" in row, f"status --json has no rss_self_bytes: {row}"
    assert isinstance(row["rss_self_bytes"], int) and 0 < row["rss_self_bytes"] < row["rss_bytes"], row
    assert row["rss_self_bytes"] < big_rss, row  # the worker itself stayed small
    cli.ok("stop")
    assert_none_survive(records.all(), "stop")


def test_max_rss_recycles_a_worker_whose_tree_is_over_it(records: Records, cli: Cli) -> None:
    limit = 100 * MIB  # above the worker's own RSS, below its tree's once the big child runs
    start(cli, "big_child_on_cue", "--max-rss", "100M", "--rss-interval", "0.25", "--grace", "1", workers=1)
    (row,) = workers(cli)
    wait_for(lambda: (workers(cli)[0]["rss_bytes"] or 0) > 0, 10.0, "the worker's RSS on the board")
    (row,) = workers(cli)
    assert row["rss_bytes"] < limit - 16 * MIB, f"no headroom under --max-rss: {row}"
    os.kill(row["pid"], signal.SIGUSR1)
    (big,) = records.wait_for(1, worker=row["pid"])
    assert psutil.Process(row["pid"]).memory_info().rss < limit, "the worker itself is over the limit"

    def recycled() -> dict[str, Any] | None:
        (new,) = workers(cli)
        return (
            new if new["recycled"] >= 1 and new["pid"] != row["pid"] and new["state"] == "running" else None
        )

    try:
        new = wait_for(recycled, 15.0, "the worker recycled for its tree's RSS")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: status shows {workers(cli)}") from None
    assert new["restarts"] == 0, new
    assert any("recycled" in line and "max_rss" in line for line in cli.log_lines()), cli.log_lines()
    assert_none_survive([big], "the recycled worker's big child", GONE_S)
    cli.ok("stop")
    assert_none_survive(records.all(), "stop")


# -- the embedded Supervisor ---------------------------------------------------------------------


@pytest.mark.usefixtures("supervised")
def test_an_embedded_supervisor_contains_escapes_on_a_crash_and_on_stop(
    records: Records, runtime_dir: Path
) -> None:
    """pool.Supervisor running in this process (a thread), as the README embeds it: the same
    guarantee as the detached daemon's, for a worker SIGKILLed from outside and for stop()."""
    spec = PoolSpec(
        target="containment_targets:escapes",
        workers=1,
        name=f"pt-contain-{os.getpid()}-{uuid.uuid4().hex[:6]}",
        cwd=str(TESTS_DIR),
        heartbeat_timeout=5.0,
        grace=1.0,
        flush_interval=0.5,
        rss_interval=0.25,
        start_method="fork",
    )
    sup = Supervisor(spec, runtime_dir=runtime_dir).start()
    try:
        first = records.wait_for(6)
        worker = first[0].worker
        assert survivors(first) == first, describe(first)
        recorded(runtime_dir, first)  # give it the chance to look at the tree, as after a while
        os.kill(worker, signal.SIGKILL)
        wait_for(
            lambda: [d for d in records.all() if d.worker != worker and d.kind == "TERM-ignoring child"],
            20.0,
            "the replacement's descendants",
        )
        assert_none_survive(first, "an embedded supervisor's SIGKILLed worker's tree", GONE_S)
        sup.stop()
        assert_none_survive(records.all(), "an embedded supervisor's stop()")
    finally:
        records.cleanup()
        with contextlib.suppress(StopFailed):
            sup.stop()
