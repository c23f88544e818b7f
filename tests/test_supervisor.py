"""The supervisor embedded in this process: readiness, restarts, hangs, intensity, boot errors,
live scaling and rolling restarts, with real worker processes."""

from __future__ import annotations

import os
import re
import signal
import statistics
import time
from datetime import datetime

import pytest
from scripts import supkit
from scripts.supkit import wait_until

import statusboard
from pool.errors import AlreadyRunning, PoolError, SpecError
from pool.supervision.slot import WorkerHooks
from pool.supervision.supervisor import Supervisor
from statusboard.probe import probe

pytestmark = pytest.mark.usefixtures("supervised")
LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} (INFO|WARNING|ERROR) +\S")


def stamp(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def test_embedded_pool_runs_its_workers_and_stops_clean(runtime):
    spec = supkit.make_spec("well_behaved", workers=3)
    with Supervisor(spec, runtime_dir=runtime) as sup:
        rows = supkit.running(runtime, 3)
        assert rows, supkit.workers(runtime)
        pids = [w["pid"] for w in rows]
        assert len(set(pids)) == 3 and os.getpid() not in pids
        assert all(w["beats"] > 0 and w["generation"] == 1 and w["restarts"] == 0 for w in rows)
        assert sup.board is not None
        segment = sup.board.path
        assert segment.exists()
        report = probe(runtime, spec.name)
        assert report.code == 0, report.document
        assert report.document["source"] == "shm"
        assert report.document["supervisor"]["pid"] == os.getpid()
    assert supkit.all_gone(pids)
    assert not segment.exists()
    doc = supkit.runtime_doc(runtime)
    assert doc["state"] == "stopped" and doc["board"] is None
    assert not supkit.temp_files(runtime)
    assert probe(runtime, spec.name).code == 3
    lines = supkit.read_log(runtime).splitlines()
    assert lines and all(LINE_RE.match(line) for line in lines), lines
    text = "\n".join(lines)
    for needle in ("supervisor started", "pool ready: 3 workers running", "stopping:", "supervisor stopped"):
        assert needle in text
    for pid in pids:
        assert f"started pid {pid} (generation 1)" in text
        assert f"(pid {pid}) exited: code 0" in text


def test_the_worker_context_reaches_the_board(runtime):
    spec = supkit.make_spec("context_echo", workers=2, name=supkit.pool_name("ctx"))
    with Supervisor(spec, runtime_dir=runtime):
        rows = wait_until(
            lambda: (
                (rows := supkit.running(runtime, 2)) and all(w["progress"] is not None for w in rows) and rows
            ),
            5,
            "progress on the board",
        )
        for w in rows:
            assert w["progress"] == pytest.approx(w["slot"] + 0.1)
            assert w["tasks_done"] == len(spec.name)
            assert w["tasks_failed"] == w["slot"]
    # ctx.wait() returned True on the stop request and ctx.stopping agreed: a clean exit 0.
    assert len(supkit.log_lines(runtime, "exited: code 0")) == 2


def test_a_second_supervisor_on_the_same_directory_is_refused(runtime):
    spec = supkit.make_spec("well_behaved", workers=1)
    with Supervisor(spec, runtime_dir=runtime):
        with pytest.raises(AlreadyRunning) as err:
            Supervisor(spec, runtime_dir=runtime).run(install_signals=False)
        assert "already running" in str(err.value)
        assert str(os.getpid()) in str(err.value)
        assert probe(runtime, spec.name).code == 0


def test_return_is_code_0_a_crash_is_its_signal_and_raise_is_code_1_with_traceback(runtime):
    for target, code, how in (
        ("exit_ok", 0, "code 0"),
        ("segfault", -signal.SIGSEGV, "signal SIGSEGV"),
        ("raise_now", 1, "code 1"),
    ):
        spec = supkit.make_spec(target, workers=1, restart="temporary")
        with supkit.Background(Supervisor(spec, runtime_dir=runtime)):
            row = wait_until(
                lambda: next((w for w in supkit.workers(runtime) if w["state"] == "exited"), None),
                5,
                "the worker to exit",
            )
            assert row["last_exit_code"] == code
        log = supkit.read_log(runtime)
        assert f"worker 0 (pid {row['pid']}) exited: {how}" in log
        assert "worker 0 not restarted (policy temporary)" in log
    assert f"worker 0 (pid {row['pid']}) raised: RuntimeError: raise_now: injected failure" in log
    traceback = log.split("raise_now: injected failure\n", 1)[1]
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'targets.py", line' in traceback and "in raise_now" in traceback


def test_a_first_crash_is_replaced_at_once(runtime):
    """A slot's first crash is restarted without backoff (the log says so); how fast is a
    figure (bench group supervisor measures crash -> replacement against the peers)."""
    spec = supkit.make_spec("well_behaved", workers=4)
    latencies = []
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        # One kill per slot: each is a slot's first restart, which has no backoff.
        for slot in range(4):
            old = reader.snapshot().workers()[slot]
            t0 = time.monotonic()
            os.kill(old["pid"], signal.SIGKILL)

            def replaced(slot=slot, old=old):
                row = reader.snapshot().workers()[slot]
                return row["state"] == "running" and row["pid"] != old["pid"]

            wait_until(replaced, 30, f"slot {slot} replaced", interval=0.0005)
            latencies.append(time.monotonic() - t0)
            assert supkit.is_gone(old["pid"])
        rows = reader.snapshot().workers()
        assert [w["generation"] for w in rows] == [2, 2, 2, 2]
        assert [w["restarts"] for w in rows] == [1, 1, 1, 1]
        assert [w["last_exit_code"] for w in rows] == [-9] * 4
    print(
        f"\nFIGURE crash->running latency ms: {[round(x * 1000, 1) for x in latencies]} "
        f"median {statistics.median(latencies) * 1000:.1f}"
    )
    log = supkit.read_log(runtime)
    for slot in range(4):
        assert f"worker {slot} restarting (restart 1)" in log, log  # at once: no "restarting in"
    assert "restarting in" not in log, log
    # Nothing ran out of memory here: the words say who killed it, not a guess.
    assert "signal SIGKILL; killed from outside (not by poolctl, not by the OOM killer)" in log
    assert "out of memory" not in log


@pytest.mark.parametrize("target", ["hang", "stop_beating"])
def test_a_worker_that_stops_beating_is_killed_and_replaced(runtime, target):
    timeout = 0.5
    spec = supkit.make_spec(target, workers=1, heartbeat_timeout=timeout)
    with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
        first = reader.snapshot().raw_rows()[0]
        old_pid, last_beat = first["pid"], first["heartbeat_ns"]
        deadline = time.monotonic() + timeout + 30  # a bound for the wait, not a pass mark
        while time.monotonic() < deadline:
            row = reader.snapshot().raw_rows()[0]
            if row["pid"] == old_pid:
                last_beat = max(last_beat, row["heartbeat_ns"])
            elif row["state"] == 2:  # RUNNING
                replaced_at = time.monotonic_ns()
                break
            time.sleep(0.0005)
        else:
            raise AssertionError(f"hung worker not replaced: {reader.snapshot().workers()}")
        new = reader.snapshot().workers()[0]
    beyond = (replaced_at - last_beat) / 1e9 - timeout
    print(f"\nFIGURE {target}: replaced {beyond * 1000:.1f} ms after heartbeat_timeout expired")
    assert beyond >= -0.01  # never before its heartbeat was heartbeat_timeout old
    assert new["generation"] == 2 and new["restarts"] == 1
    assert supkit.is_gone(old_pid)
    log = supkit.read_log(runtime)
    assert re.search(rf"worker 0 \(pid {old_pid}\) hung: no heartbeat for [\d.]+s \(timeout 0\.5s\)", log), (
        log
    )
    assert f"worker 0 (pid {old_pid}) exited: signal SIGTERM" in log


def test_crash_loop_ends_failed_after_max_restarts_and_the_pool_stays_up(runtime):
    spec = supkit.make_spec(
        "raise_in_slot_1", workers=2, max_restarts=3, restart_window=30.0, backoff_base=0.1
    )
    with supkit.Background(Supervisor(spec, runtime_dir=runtime)):
        slots = wait_until(
            lambda: (s := supkit.by_slot(runtime)).get(1, {}).get("state") == "failed" and s,
            10,
            lambda: f"slot 1 failed: {supkit.workers(runtime)}",
        )
        assert slots[1]["restarts"] == 3
        assert slots[1]["last_exit_code"] == 1
        assert slots[0]["state"] == "running" and slots[0]["generation"] == 1
        report = probe(runtime, spec.name)
        assert report.code == 2, report.document
        assert report.document["state"] == "degraded"
        assert "worker 1" in report.document["reason"] and "failed" in report.document["reason"]
        assert supkit.by_slot(runtime)[0]["pid"] == slots[0]["pid"]
    log = supkit.read_log(runtime)
    lines = log.splitlines()
    assert "worker 1 restarting (restart 1)" in log
    assert "worker 1 restarting in 0.10s (restart 2, 2 in the last 30s)" in log
    assert "worker 1 restarting in 0.15s (restart 3, 3 in the last 30s)" in log
    assert "worker 1 failed: more than 3 restarts in 30s; giving up" in log
    starts = [line for line in lines if "worker 1 started pid" in line]
    assert len(starts) == 4  # the first start and 3 restarts; the failed slot stays down
    # The delays were waited, not just logged.
    assert stamp(starts[2]) - stamp(starts[1]) >= 0.1 - 0.002
    assert stamp(starts[3]) - stamp(starts[2]) >= 0.15 - 0.002
    assert len([line for line in lines if "worker 0 started pid" in line]) == 1


BOOT_ERRORS = {
    "broken_module:work": "RuntimeError: broken_module: refusing to import",
    "broken_module.py:work": "RuntimeError: broken_module: refusing to import",
    "no_such_module_xyz:work": "no module named 'no_such_module_xyz'",
    "targets:no_such_function": "has no attribute 'no_such_function'",
    "targets:NOT_CALLABLE": "is not callable",
}


@pytest.mark.parametrize("target", list(BOOT_ERRORS))
def test_boot_error_stops_the_pool_with_the_reason(runtime, target):
    expected = BOOT_ERRORS[target]
    spec = supkit.make_spec(target, workers=2)
    sup = Supervisor(spec, runtime_dir=runtime)
    with pytest.raises(PoolError) as err:
        sup.start(timeout=60)
    # The boot error itself ends the start, not the wait for readiness running out.
    assert expected in str(err.value)
    assert "not ready within" not in str(err.value), err.value
    result = sup.stop()
    assert not result.ok
    assert result.boot_error is not None and expected in result.boot_error
    log = supkit.read_log(runtime)
    assert "could not boot" in log and "stopping the pool instead of restarting" in log
    started = [int(m) for m in re.findall(r"started pid (\d+)", log)]
    assert 1 <= len(started) <= 2, log  # no restart loop
    assert not re.search(r"worker \d restarting", log)
    assert supkit.all_gone(started)
    doc = supkit.runtime_doc(runtime)
    assert doc["state"] == "stopped"
    assert expected in doc["reason"]
    report = probe(runtime, spec.name)
    assert report.code == 3 and expected in report.document["reason"]


def test_commands_after_the_pool_stopped_write_to_no_reused_descriptor(runtime, monkeypatch):
    """After run() returns, its wake pipe is closed; a late stop() must not write a byte
    into whatever file now has the old descriptor number."""
    sup = Supervisor(supkit.make_spec("targets:no_such_function", workers=1), runtime_dir=runtime)
    made: list[tuple[int, int]] = []
    real_pipe2 = os.pipe2

    def recording_pipe2(flags: int) -> tuple[int, int]:
        fds = real_pipe2(flags)
        made.append(fds)
        return fds

    monkeypatch.setattr("pool.supervision.commands.os.pipe2", recording_pipe2)
    with pytest.raises(PoolError):
        sup.start(timeout=15)
    monkeypatch.undo()
    assert made and sup._inbox.wake_w == -1
    old_wake_fd = made[0][1]
    try:
        os.fstat(old_wake_fd)
        pytest.skip("the old descriptor number is in use again; cannot plant a pipe there")
    except OSError:
        pass
    r, w = os.pipe2(os.O_NONBLOCK)  # likely gets the old numbers back; make sure of it
    if w != old_wake_fd:
        os.dup2(w, old_wake_fd)
    try:
        sup.stop()
        sup.request_stop()
        sup.rolling_restart()
        with pytest.raises(BlockingIOError):
            os.read(r, 16)
    finally:
        for fd in {r, w, old_wake_fd}:
            os.close(fd)


def test_scale_up_and_down_live_with_forkserver(runtime):
    spec = supkit.make_spec("well_behaved", workers=2, start_method="auto")
    with Supervisor(spec, runtime_dir=runtime) as sup:
        assert "start method forkserver" in supkit.read_log(runtime)
        first = supkit.running(runtime, 2)
        assert first
        sup.scale(4)
        rows = wait_until(
            lambda: supkit.running(runtime, 4), 10, lambda: f"4 running: {supkit.workers(runtime)}"
        )
        assert supkit.header(runtime)["workers_desired"] == 4
        assert [w["pid"] for w in rows[:2]] == [w["pid"] for w in first]
        all_pids = {w["pid"] for w in rows}
        assert len(all_pids) == 4

        sup.scale(1)
        rows = wait_until(
            lambda: supkit.running(runtime, 1), 10, lambda: f"1 running: {supkit.workers(runtime)}"
        )
        assert supkit.header(runtime)["workers_desired"] == 1
        assert supkit.header(runtime)["slots_used"] == 1
        (kept,) = rows
        assert kept["slot"] == 0 and kept["pid"] == first[0]["pid"] and kept["generation"] == 1
        retired = all_pids - {kept["pid"]}
        wait_until(lambda: supkit.all_gone(sorted(retired)), 5, f"retired workers {retired} gone")
        assert [pid for pid in all_pids if not supkit.is_gone(pid)] == [kept["pid"]]
        report = probe(runtime, spec.name)
        assert report.code == 0 and report.document["workers_desired"] == 1

        for bad in (0, 1025, -3, 2.0):
            with pytest.raises(SpecError, match=rf"workers: .*{re.escape(repr(bad))}"):
                sup.scale(bad)
    log = supkit.read_log(runtime)
    assert "scaling from 2 to 4 workers" in log and "scaling from 4 to 1 workers" in log
    assert not re.search(r"worker \d restarting", log)  # retiring is not a crash


def test_rolling_restart_replaces_every_worker_keeping_n_minus_1_running(runtime):
    n = 3
    spec = supkit.make_spec("well_behaved", workers=n)
    with Supervisor(spec, runtime_dir=runtime) as sup, statusboard.attach(runtime) as reader:
        before = reader.snapshot().workers()
        old_pids = [w["pid"] for w in before]
        generation = reader.snapshot().header["generation"]
        sup.rolling_restart()
        samples, fewest, seen_rolling = 0, n, False
        deadline = time.monotonic() + 60  # a bound for the wait, not a pass mark
        while True:
            snap = reader.snapshot()
            rows = snap.workers()
            running_now = sum(w["state"] == "running" for w in rows)
            fewest = min(fewest, running_now)
            samples += 1
            seen_rolling |= running_now < n
            if (
                len(rows) == n
                and running_now == n
                and all(
                    w["pid"] != old and w["generation"] == 2 for w, old in zip(rows, old_pids, strict=True)
                )
            ):
                break
            assert time.monotonic() < deadline, f"rolling restart did not finish: {rows}"
            time.sleep(0.0002)  # let the supervisor thread have the GIL
        after = reader.snapshot()
    assert fewest >= n - 1, f"only {fewest} of {n} running at one point"
    assert samples > 10 and seen_rolling
    assert after.header["generation"] == generation + 1
    assert all(w["restarts"] == 0 for w in after.workers())  # a planned replacement is no restart
    assert supkit.all_gone(old_pids)
    log = supkit.read_log(runtime)
    assert f"rolling restart of {n} workers, one at a time" in log
    # One at a time: each old worker's exit precedes the next old worker's stop, and each
    # replacement started before the next slot was touched.
    order = [
        line for line in log.splitlines() if re.search(r"worker \d (started pid|\(pid \d+\) exited)", line)
    ][n:]
    slots = [int(re.search(r"worker (\d)", line).group(1)) for line in order[: 2 * n]]
    assert slots == [0, 0, 1, 1, 2, 2], order


class _HoldForkWindow(WorkerHooks):
    """Holds the supervisor right after each fork, before the new row names the process, until
    that process has read its stop flag (its first beat) or is gone: the window in which a
    flag left by the slot's previous process would be taken for its own stop, wide open
    instead of a rare race."""

    def __init__(self) -> None:
        self.sup: Supervisor | None = None
        self.held: list[tuple[int, int, str]] = []  # (slot, generation, how the hold ended)

    def forked(self, slot: int, generation: int, pid: int) -> None:
        assert self.sup is not None and self.sup.board is not None
        board = self.sup.board
        deadline = time.monotonic() + 30  # a timeout for the condition, not a threshold
        how = "timeout"
        while time.monotonic() < deadline:
            if board.word(slot, "beats") > 0:
                how = "beat"
                break
            if supkit.is_gone(pid):
                how = "gone"
                break
            time.sleep(0.002)
        self.held.append((slot, generation, how))


def test_a_replacement_never_inherits_its_predecessors_stop_flag(runtime):
    """Rolling restart and retire leave stop_requested set on the row; the next process in
    that slot must not read it as its own stop. The hook keeps the supervisor from touching
    the row between fork and the new process's first look at its flag, so without the clear
    before the fork the replacement would see the flag every time (checked: it does)."""
    hold = _HoldForkWindow()
    spec = supkit.make_spec("stop_flag_at_birth", workers=2)
    sup = Supervisor(spec, runtime_dir=runtime, hooks=hold)
    hold.sup = sup
    with sup:
        old = {w["slot"]: w["pid"] for w in supkit.workers(runtime)}
        sup.rolling_restart()

        def rolled():
            rows = supkit.workers(runtime)
            done = all(w["generation"] >= 2 and w["state"] == "running" for w in rows)
            return rows if done and len(rows) == 2 else None

        rows = wait_until(rolled, 30, lambda: f"both slots rolled: {supkit.workers(runtime)}")
        assert [w["generation"] for w in rows] == [2, 2]
        assert [w["progress"] for w in rows] == [0.0, 0.0]  # neither saw a stop at birth
        assert [w["restarts"] for w in rows] == [0, 0]
        assert all(w["pid"] != old[w["slot"]] for w in rows)
        sup.scale(1)
        wait_until(lambda: supkit.running(runtime, 1), 30, "scaled down to 1")
        sup.scale(2)
        rows = wait_until(lambda: supkit.running(runtime, 2), 30, "scaled back up to 2")
        assert [w["progress"] for w in rows] == [0.0, 0.0]
        assert [w["restarts"] for w in rows] == [0, 0]
    # Every spawn was held until its process had looked: 2 first, 2 rolled, 1 after the scale-up.
    assert [how for _, _, how in hold.held] == ["beat"] * 5, hold.held
    assert not re.search(r"worker \d restarting", supkit.read_log(runtime)), supkit.read_log(runtime)


def test_a_rolling_restart_onto_broken_code_stops_instead_of_looping(runtime):
    """A replacement that crashes before its first beat is a crash like any other (backoff,
    intensity), not a planned replacement to respawn at once forever; and the roll goes no
    further, so the other workers keep serving."""
    spec = supkit.make_spec("broken_after_first_generation", workers=2, max_restarts=2)
    with Supervisor(spec, runtime_dir=runtime) as sup:
        old = {w["slot"]: w["pid"] for w in supkit.workers(runtime)}
        sup.rolling_restart()
        slots = wait_until(
            lambda: (s := supkit.by_slot(runtime)).get(0, {}).get("state") == "failed" and s,
            10,
            lambda: f"slot 0 failed: {supkit.workers(runtime)}",
        )
        assert slots[0]["generation"] == 4  # the first replacement and 2 restarts
        assert slots[0]["restarts"] == 2
        wait_until(
            lambda: supkit.log_lines(runtime, "rolling restart stopped: the replacement of worker 0 failed"),
            5,
            "the roll's end in the log",
        )
        slot1 = supkit.by_slot(runtime)[1]
        assert (slot1["pid"], slot1["state"], slot1["generation"]) == (old[1], "running", 1)
    log = supkit.read_log(runtime)
    assert "worker 0 failed: more than 2 restarts" in log
    assert "worker 1 started pid" in log and len(supkit.log_lines(runtime, "worker 1 started pid")) == 1


@pytest.mark.parametrize("policy", ["permanent", "transient"])
def test_scaling_down_then_straight_back_up_keeps_the_slot_serving(runtime, policy):
    """scale(1) then scale(2) before the retired worker has exited: the slot is wanted again,
    so its worker's exit is a planned replacement, not a crash (nor a final exit)."""
    spec = supkit.make_spec("well_behaved", workers=2, restart=policy)
    with Supervisor(spec, runtime_dir=runtime) as sup:
        old = {w["slot"]: w["pid"] for w in supkit.workers(runtime)}
        sup.scale(1)
        sup.scale(2)
        wait_until(lambda: supkit.is_gone(old[1]), 5, "the retired worker gone")
        rows = wait_until(
            lambda: supkit.running(runtime, 2), 5, lambda: f"2 running: {supkit.workers(runtime)}"
        )
        assert rows[0]["pid"] == old[0]
        assert rows[1]["pid"] != old[1]
        assert [w["restarts"] for w in rows] == [0, 0]
    assert "not restarted" not in supkit.read_log(runtime)


def test_a_pool_late_to_be_ready_says_what_it_waits_for(runtime):
    spec = supkit.make_spec("raise_now", workers=1, max_restarts=1000, backoff_base=0.01, backoff_cap=0.05)
    with pytest.raises(PoolError) as err:
        Supervisor(spec, runtime_dir=runtime).start(timeout=1.0)
    message = str(err.value)
    assert "not ready within 1.0s: worker 0 " in message, message
    assert re.search(r"after \d+ restarts \(RuntimeError: raise_now: injected failure\)", message), message


def test_a_low_soft_open_files_limit_does_not_cap_the_pool(tmp_path, spawn):
    # 60 workers need ~4 fds each in the supervisor: far past a soft limit of 128.
    code = """
import resource, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from scripts import supkit
from pool.supervision.supervisor import Supervisor
spec = supkit.make_spec("well_behaved", workers=60)
with Supervisor(spec, runtime_dir=sys.argv[1]):
    print(len(supkit.running(sys.argv[1], 60) or []), resource.getrlimit(resource.RLIMIT_NOFILE)[0], flush=True)
"""
    runtime = supkit.make_runtime(tmp_path)
    tests = os.path.dirname(os.path.abspath(__file__))
    proc = spawn.python(code, runtime, tests, os.path.dirname(tests))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    running, soft = map(int, out.split())
    assert running == 60 and soft > 128, (running, soft)
