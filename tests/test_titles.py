"""Process titles (issue 9): what `ps -o args` shows for a pool's processes.

``poolctl: supervisor [NAME]`` for a daemon or foreground supervisor, ``poolctl:
worker SLOT [NAME] gen GENERATION`` for every worker, however it was started; an
embedding program (a test process running Supervisor or Pool) keeps its own title.
Read with the real ``ps``, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from cli_targets import FAST, TESTS_DIR, Cli, wait_for
from scripts import supkit

import statusboard
from pool import Pool
from pool.integrations.titles import supervisor_title, worker_title
from pool.supervision.supervisor import Supervisor

pytestmark = pytest.mark.timeout(90)


def ps_args(pid: int) -> str:
    """``ps -o args= -p PID``: the command line ps shows for that process."""
    result = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, f"ps found no pid {pid}: {result.stderr}"
    return result.stdout.rstrip()  # setproctitle may pad the argv area with blanks no one sees


def comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().rstrip("\n")


def test_ps_shows_the_daemon_supervisor_and_each_worker_with_its_generation(cli: Cli) -> None:
    cli.start("cli_targets:steady", workers=2)
    code, document = cli.status()
    assert code == 0, document
    supervisor = document["supervisor"]["pid"]
    assert ps_args(supervisor) == f"poolctl: supervisor [{cli.name}]"
    assert comm(supervisor).startswith("poolctl")  # top and pgrep read the kernel's 15-byte name
    for worker in document["workers"]:
        assert ps_args(worker["pid"]) == f"poolctl: worker {worker['slot']} [{cli.name}] gen 1", worker
        assert comm(worker["pid"]).startswith("poolctl")

    # The replacement of a killed worker says it is the slot's second generation.
    victim, bystander = document["workers"]
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced():
        code, document = cli.status()
        first = document["workers"][0]
        return code == 0 and first["pid"] != victim["pid"] and first["state"] == "running" and document

    document = wait_for(replaced, 15.0, "worker 0 replaced")
    new, other = document["workers"]
    assert new["generation"] == 2, new
    assert ps_args(new["pid"]) == f"poolctl: worker 0 [{cli.name}] gen 2"
    assert other["pid"] == bystander["pid"]
    assert ps_args(other["pid"]) == f"poolctl: worker 1 [{cli.name}] gen 1"
    assert ps_args(supervisor) == f"poolctl: supervisor [{cli.name}]"
    cli.ok("stop")


def test_a_retitled_process_keeps_its_environment(cli: Cli) -> None:
    # setproctitle would otherwise reuse the environ area for the title: /proc/PID/environ
    # (ps e, debuggers, this suite's own leak finder) would read empty.
    cli.start("cli_targets:steady", workers=1)
    document = cli.status()[1]
    token = os.environ["POOLCTL_TEST_SESSION"].encode()
    for pid in (document["supervisor"]["pid"], document["workers"][0]["pid"]):
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read().split(b"\0")
        assert b"POOLCTL_TEST_SESSION=" + token in environ, (pid, environ[:5])
        assert not any(item.startswith(b"SPT_NOENV=") for item in environ)  # not left behind
        assert ps_args(pid).startswith("poolctl: ")
    cli.ok("stop")


def test_ps_shows_the_foreground_supervisor(cli: Cli, spawn) -> None:
    argv = cli.argv("start", "cli_targets:steady")
    proc = spawn([*argv, "-w", "1", *FAST, "--foreground"], cwd=TESTS_DIR)
    _, document = wait_for(lambda: (s := cli.status())[0] == 0 and s, 20.0, "the foreground pool to run")
    assert document["supervisor"]["pid"] == proc.pid
    assert ps_args(proc.pid) == f"poolctl: supervisor [{cli.name}]"
    (worker,) = document["workers"]
    assert ps_args(worker["pid"]) == f"poolctl: worker 0 [{cli.name}] gen 1"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.mark.parametrize("start_method", ["fork", "forkserver"])
def test_an_embedded_supervisor_titles_its_workers_but_not_this_process(tmp_path, start_method):
    me = os.getpid()
    before, comm_before = ps_args(me), comm(me)
    assert "poolctl" not in before
    runtime = supkit.make_runtime(tmp_path)
    spec = supkit.make_spec("well_behaved", workers=2, start_method=start_method)
    with supkit.leak_check():
        with Supervisor(spec, runtime_dir=runtime), statusboard.attach(runtime) as reader:
            workers = reader.snapshot().workers()
            assert [ps_args(w["pid"]) for w in workers] == [
                worker_title(w["slot"], spec.name, 1) for w in workers
            ]
            assert ps_args(me) == before and comm(me) == comm_before
        assert ps_args(me) == before and comm(me) == comm_before
    assert supervisor_title(spec.name) not in ps_args(me)


def test_the_task_pool_titles_its_workers_but_not_its_caller(tmp_path):
    me = os.getpid()
    before, comm_before = ps_args(me), comm(me)
    with supkit.leak_check(), Pool(2, name=supkit.pool_name("title"), runtime_dir=tmp_path / "rt") as p:
        pids = {p.submit(os.getpid).result(timeout=30) for _ in range(20)}
        with statusboard.attach(p.runtime_dir) as reader:
            workers = reader.snapshot().workers()
        assert pids <= {w["pid"] for w in workers}
        assert [ps_args(w["pid"]) for w in workers] == [worker_title(w["slot"], p.name, 1) for w in workers]
        assert ps_args(me) == before and comm(me) == comm_before
    assert ps_args(me) == before and comm(me) == comm_before
