"""supervisord: N ``sleep`` programs, XML-RPC on a unix socket in the temp dir.

The health read is ``supervisor.getAllProcessInfo()`` over supervisor's own
transport (a persistent HTTP connection on the socket), as supervisorctl and
most monitoring plugins do; the status command is ``supervisorctl status``.
"""

from __future__ import annotations

import importlib.util
import shlex
from typing import Any

from bench import timing
from bench.fresh_process import Control
from bench.peers.daemon import SLEEP_ARGV, PeerDaemon, venv_script
from bench.timing import Budget


class Supervisord(PeerDaemon):
    name = "supervisord"
    distribution = "supervisor"

    @classmethod
    def missing(cls) -> str | None:
        if importlib.util.find_spec("supervisor") is None:
            return "supervisor is not installed (pip install supervisor)"
        for script in ("supervisord", "supervisorctl"):
            if not venv_script(script).exists():
                return f"{venv_script(script)} not found"
        return None

    @property
    def socket(self) -> str:
        return str(self.directory / "supervisor.sock")

    @property
    def config(self) -> str:
        return str(self.directory / "supervisord.conf")

    def write_config(self) -> None:
        d = self.directory
        text = f"""\
[unix_http_server]
file={self.socket}
chmod=0700

[supervisord]
nodaemon=true
silent=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
loglevel=warn

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{self.socket}

[program:sleeper]
command={shlex.join(SLEEP_ARGV)}
process_name=%(program_name)s_%(process_num)03d
numprocs={self.programs}
startsecs=0
autorestart=true
stopsignal=TERM
stopwaitsecs=5
stdout_logfile=NONE
stderr_logfile=NONE
"""
        with open(self.config, "w") as f:
            f.write(text)

    def argv(self) -> list[str]:
        return [str(venv_script("supervisord")), "-c", self.config]

    def running_pids(self) -> list[int] | None:
        try:
            infos = _proxy(self.socket).supervisor.getAllProcessInfo()
        except OSError:
            return None
        return [info["pid"] for info in infos if info["statename"] == "RUNNING"]

    def rpc(self, budget: Budget) -> tuple[str, tuple[Any, ...]]:
        return "bench.peers.supervisord:time_rpc", (self.socket, self.programs, budget)

    def status_argv(self) -> list[str]:
        return [str(venv_script("supervisorctl")), "-c", self.config, "status"]


def _proxy(socket: str) -> Any:
    from xmlrpc.client import ServerProxy

    from supervisor.xmlrpc import SupervisorTransport  # type: ignore[import-untyped]

    return ServerProxy("http://127.0.0.1", transport=SupervisorTransport(None, None, f"unix://{socket}"))


def time_rpc(control: Control, socket: str, programs: int, budget: Budget) -> Any:
    """Seconds per ``getAllProcessInfo()`` from this (fresh) process."""
    proxy = _proxy(socket)
    infos = proxy.supervisor.getAllProcessInfo()
    running = sum(info["statename"] == "RUNNING" for info in infos)
    if running != programs:
        raise AssertionError(f"supervisord reports {running} of {programs} programs running")
    return timing.per_call(
        "proxy.supervisor.getAllProcessInfo()",
        {"proxy": proxy},
        min_time=budget.rpc_min_time,
        repeats=budget.repeats,
    )
