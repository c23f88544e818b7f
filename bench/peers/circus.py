"""circus: one watcher of N ``sleep`` processes, its zmq control endpoint on ipc:// in the temp dir.

The health read is the ``status`` command over the endpoint with circus's own
client (what ``circusctl status`` sends). ``stats_endpoint`` is left out on
purpose: setting it silently turns circusd-stats on, a second daemon.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from bench import timing
from bench.fresh_process import Control
from bench.peers.daemon import SLEEP_ARGV, PeerDaemon, venv_script
from bench.timing import Budget

_WATCHER = "sleeper"


class Circus(PeerDaemon):
    name = "circusd"
    distribution = "circus"

    @classmethod
    def missing(cls) -> str | None:
        if importlib.util.find_spec("circus") is None:
            return "circus is not installed (pip install circus)"
        for script in ("circusd", "circusctl"):
            if not venv_script(script).exists():
                return f"{venv_script(script)} not found"
        return None

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.directory}/endpoint"

    @property
    def config(self) -> str:
        return str(self.directory / "circus.ini")

    def write_config(self) -> None:
        text = f"""\
[circus]
endpoint = {self.endpoint}
pubsub_endpoint = ipc://{self.directory}/pubsub
statsd = False
check_delay = 5

[watcher:{_WATCHER}]
cmd = {SLEEP_ARGV[0]}
args = {" ".join(SLEEP_ARGV[1:])}
numprocesses = {self.programs}
warmup_delay = 0
graceful_timeout = 5
"""
        with open(self.config, "w") as f:
            f.write(text)

    def argv(self) -> list[str]:
        return [
            str(venv_script("circusd")),
            "--log-level",
            "warning",
            "--log-output",
            str(self.directory / "circusd.log"),
            self.config,
        ]

    def running_pids(self) -> list[int] | None:
        from circus.client import CircusClient  # type: ignore[import-untyped]

        client = CircusClient(endpoint=self.endpoint, timeout=1.0)
        try:
            answer = client.call({"command": "list", "properties": {"name": _WATCHER}})
        except Exception:  # CallError while it starts; circus raises several kinds
            return None
        finally:
            client.stop()
        pids: list[int] = answer.get("pids", []) if answer.get("status") == "ok" else []
        return pids

    def rpc(self, budget: Budget) -> tuple[str, tuple[Any, ...]]:
        return "bench.peers.circus:time_rpc", (self.endpoint, budget)

    def status_argv(self) -> list[str]:
        return [str(venv_script("circusctl")), "--endpoint", self.endpoint, "status"]


def time_rpc(control: Control, endpoint: str, budget: Budget) -> Any:
    """Seconds per ``status`` call from this (fresh) process."""
    from circus.client import CircusClient

    client = CircusClient(endpoint=endpoint, timeout=5.0)
    try:
        answer = client.call({"command": "status", "properties": {}})
        if answer.get("status") != "ok" or answer.get("statuses", {}).get(_WATCHER) != "active":
            raise AssertionError(f"circus status answered {answer!r}")
        return timing.per_call(
            "client.call({'command': 'status', 'properties': {}})",
            {"client": client},
            min_time=budget.rpc_min_time,
            repeats=budget.repeats,
        )
    finally:
        client.stop()
