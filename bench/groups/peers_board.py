"""Group ``peers-board`` (issue 7): reading a pool's health, ours against supervisord and circus.

For 16 and 64 workers: a fake pool (this process plays its supervisor) and each
peer daemon supervising as many ``sleep`` programs run side by side; each health
read is timed by a client in its own fresh process (ours: ``healthy()`` after
``statusboard.attach``; supervisord: XML-RPC ``getAllProcessInfo``; circus: the
``status`` command over zmq). At 16, whole-process status commands are timed
round-robin: our stdlib probe in a fresh interpreter (the `poolctl status` path
until the CLI lands; the ``cli`` group will time the real command),
``supervisorctl status``, ``circusctl status`` and ``python -c pass``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from bench import fresh_process, timing
from bench.fake_pool import SUPERVISOR_TIMEOUT_S, FakePool
from bench.figures import Measure, Row, in_unit, skipped
from bench.peers.circus import Circus
from bench.peers.daemon import PeerDaemon, start_installed
from bench.peers.supervisord import Supervisord
from bench.registry import Context

GROUP = "peers-board"
SIZES = (16, 64)
WALL_SIZE = 16
PEERS: tuple[type[PeerDaemon], ...] = (Supervisord, Circus)
RPC_LABELS = {
    "supervisord": "supervisord XML-RPC getAllProcessInfo",
    "circusd": "circus `status` over zmq",
}
STATUS_LABELS = {"supervisord": "supervisorctl status", "circusd": "circusctl status"}
FLOOR = "numpy copy of the same bytes (floor)"
PASS = "python -c pass"
BARE = "python -S -c pass (no site, no .pth)"
OURS_STATUS = "stdlib probe + JSON, fresh interpreter"
TARGET_HEALTH_US = 10.0
TARGET_HEALTH_COPIES = 10.0
TARGET_STATUS_X_PASS = 3.0

# What `poolctl status --json` will do on its fast path, minus the CLI's own code.
PROBE_SNIPPET = (
    "import json, sys\n"
    "from pathlib import Path\n"
    "from statusboard.probe import probe\n"
    f"report = probe(Path(sys.argv[1]), 'bench', supervisor_timeout_s={SUPERVISOR_TIMEOUT_S})\n"
    "print(json.dumps(report.document))\n"
    "sys.exit(int(report.code))\n"
)


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for workers in SIZES:
        rows.extend(_at_size(ctx, workers))
    return rows


def _at_size(ctx: Context, workers: int) -> list[Row]:
    budget = ctx.budget
    peer_reads: dict[str, Measure] = {}  # by peer name, shown in PEERS order
    skipped_statuses: dict[str, Measure] = {}
    wall_rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(FakePool(workers))
        daemons, missing = start_installed(ctx, stack, PEERS, workers, GROUP)
        for name, why in missing.items():
            peer_reads[name] = skipped(RPC_LABELS[name], why)
            skipped_statuses[STATUS_LABELS[name]] = skipped(STATUS_LABELS[name], why)

        ctx.progress.step(f"peers-board: {workers} workers, our healthy() from a second process")
        pool.refresh()
        ours: dict[str, Any] = fresh_process.run(
            "bench.board_side:measure_reads", str(pool.runtime_dir), budget, ("healthy", "numpy_copy")
        )
        for daemon in daemons:
            ctx.progress.step(
                f"peers-board: {workers} programs, {daemon.name} status RPC from a second process"
            )
            target, args = daemon.rpc(budget)
            stats = fresh_process.run(target, *args)
            peer_reads[daemon.name] = Measure(RPC_LABELS[daemon.name], in_unit(stats, "µs"))

        if workers == WALL_SIZE:
            ctx.progress.step(f"peers-board: whole-process status commands, {workers} workers, round-robin")
            commands = {OURS_STATUS: [sys.executable, "-c", PROBE_SNIPPET, str(pool.runtime_dir)]}
            commands[PASS] = [sys.executable, "-c", "pass"]
            commands[BARE] = [sys.executable, "-S", "-c", "pass"]
            for daemon in daemons:
                commands[STATUS_LABELS[daemon.name]] = daemon.status_argv()
            got = timing.walls(commands, repeats=budget.wall_repeats, on_round=lambda _: pool.refresh())
            measured = {name: Measure(name, in_unit(stats, "ms")) for name, stats in got.items()}
            alternatives = [measured[PASS], measured[BARE]] + [
                measured.get(STATUS_LABELS[peer.name]) or skipped_statuses[STATUS_LABELS[peer.name]]
                for peer in PEERS
            ]
            ours_stats, pass_stats = measured[OURS_STATUS].stats, measured[PASS].stats
            assert ours_stats is not None and pass_stats is not None
            wall_rows.append(
                Row(
                    GROUP,
                    f"status, whole process, {workers} workers / programs",
                    "ms",
                    Measure(OURS_STATUS, ours_stats),
                    alternatives,
                    PASS,
                    f"≤ {TARGET_STATUS_X_PASS:g}\N{MULTIPLICATION SIGN} python -c pass",
                    ours_stats.median <= TARGET_STATUS_X_PASS * pass_stats.median,
                    note=f"ours is the stdlib probe path `poolctl status` will run (interpreter "
                    f"{sys.executable}); the cli group times the real command. `-S` skips site-packages "
                    "and its .pth files: the gap to `python -c pass` is what every start of this venv "
                    "pays (e.g. an editable install's import finder)",
                )
            )
        starts = "; ".join(
            f"{d.name} had {d.programs} programs running in {d.start_seconds:.1f} s" for d in daemons
        )

    floor = Measure(FLOOR, in_unit(ours["idle"]["numpy_copy"], "µs"))
    healthy = in_unit(ours["idle"]["healthy"], "µs")
    reads = [peer_reads[peer.name] for peer in PEERS]
    measured_peers = [m for m in reads if m.stats is not None]
    reference = (
        min(measured_peers, key=lambda m: m.stats.median if m.stats else 0.0) if measured_peers else floor
    )
    assert floor.stats is not None
    health_row = Row(
        GROUP,
        f"health read from another process, {workers} workers / programs",
        "µs",
        Measure("healthy()", healthy),
        [*reads, floor],
        reference.label,
        f"≤ {TARGET_HEALTH_US:g} µs and ≤ {TARGET_HEALTH_COPIES:g}\N{MULTIPLICATION SIGN} copy",
        healthy.median <= TARGET_HEALTH_US and healthy.median <= TARGET_HEALTH_COPIES * floor.stats.median,
        note="; ".join(filter(None, [starts, *(d.account for d in daemons)])),
    )
    return [health_row, *wall_rows]
