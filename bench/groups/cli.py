"""Group ``cli`` (issue 7): the real `poolctl status` command, whole process, 16 workers.

A real pool (``poolctl start``, 16 idle workers) and each peer supervising 16
trivial children run side by side; every command below is a fresh process,
timed round-robin (``bench.timing.walls``) so each ratio is taken under the
same machine load: ``poolctl status``, ``poolctl status --json``, ``python -c
pass`` and ``python -S -c pass`` (the venv's own interpreter, as the console
script runs), ``supervisorctl status``, ``circusctl status`` and gunicorn's
``gunicornc -c "show workers"``. Before timing, one ``status --json`` must say
the pool is running from the live board, so the figure is the real read path.
"""

from __future__ import annotations

import contextlib
import sys

from bench import proc_watch, timing
from bench.figures import Measure, Row, Stats, in_unit, skipped
from bench.peers.circus import Circus
from bench.peers.daemon import PeerDaemon, start_installed
from bench.peers.gunicorn import Gunicorn
from bench.peers.supervisord import Supervisord
from bench.poolctl_pool import PoolctlPool
from bench.registry import Context

GROUP = "cli"
WORKERS = 16
PEERS: tuple[type[PeerDaemon], ...] = (Supervisord, Circus, Gunicorn)
STATUS_LABELS = {
    "supervisord": "supervisorctl status",
    "circusd": "circusctl status",
    "gunicorn": 'gunicornc -c "show workers"',
}
OURS_TEXT = "poolctl status"
OURS_JSON = "poolctl status --json"
PASS = "python -c pass"
BARE = "python -S -c pass (no site)"
SUPERVISORCTL = STATUS_LABELS["supervisord"]
TARGET_X_PASS = 3.0
TARGET_X_SUPERVISORCTL = 0.5


def run(ctx: Context) -> list[Row]:
    with proc_watch.adopting_orphans():
        try:
            return _status(ctx)
        finally:
            stragglers = proc_watch.settle_adopted(10.0)
            if stragglers:
                ctx.notes.append(f"cli: processes outlived their parents and were killed: {stragglers}")


def _status(ctx: Context) -> list[Row]:
    with contextlib.ExitStack() as stack:
        ctx.progress.step(f"{GROUP}: poolctl start, {WORKERS} idle workers")
        pool = stack.enter_context(PoolctlPool(WORKERS))
        daemons, skipped_peers = start_installed(ctx, stack, PEERS, WORKERS, GROUP)

        document = pool.running_status()
        commands: dict[str, list[str]] = {
            OURS_TEXT: pool.argv("status"),
            OURS_JSON: pool.argv("status", "--json"),
            PASS: [sys.executable, "-c", "pass"],
            BARE: [sys.executable, "-S", "-c", "pass"],
        }
        for daemon in daemons:
            commands[STATUS_LABELS[daemon.name]] = daemon.status_argv()
        ctx.progress.step(
            f"{GROUP}: {len(commands)} commands round-robin, {ctx.budget.wall_repeats} rounds, "
            f"{WORKERS} workers / programs each"
        )
        got = timing.walls(commands, repeats=ctx.budget.wall_repeats, warmup=2)

    accounts = [pool.account, *(d.account for d in daemons)]
    measured = {name: Measure(name, in_unit(stats, "ms")) for name, stats in got.items()}
    peers = [
        measured.get(STATUS_LABELS[peer.name])
        or skipped(STATUS_LABELS[peer.name], skipped_peers.get(peer.name, "not run"))
        for peer in PEERS
    ]
    pass_stats = measured[PASS].stats
    sup_stats = measured[SUPERVISORCTL].stats if SUPERVISORCTL in measured else None
    assert pass_stats is not None
    target = (
        f"≤ {TARGET_X_SUPERVISORCTL:g}\N{MULTIPLICATION SIGN} supervisorctl and "
        f"≤ {TARGET_X_PASS:g}\N{MULTIPLICATION SIGN} python -c pass"
    )

    def met(ours: Stats) -> bool:
        ok = ours.median <= TARGET_X_PASS * pass_stats.median
        if sup_stats is not None:
            ok = ok and ours.median <= TARGET_X_SUPERVISORCTL * sup_stats.median
        return ok

    def ratios(ours: Stats) -> str:
        parts = [f"{ours.median / pass_stats.median:.2f}\N{MULTIPLICATION SIGN} python -c pass"]
        if sup_stats is not None:
            parts.append(f"{ours.median / sup_stats.median:.2f}\N{MULTIPLICATION SIGN} supervisorctl status")
        return ", ".join(parts)

    rows = []
    for label, ratio_to in ((OURS_TEXT, SUPERVISORCTL if sup_stats else PASS), (OURS_JSON, PASS)):
        ours = measured[label].stats
        assert ours is not None
        rows.append(
            Row(
                GROUP,
                f"`{label}`, whole process, {WORKERS} workers / programs",
                "ms",
                Measure(label, ours),
                [measured[PASS], measured[BARE], *peers],
                ratio_to,
                target,
                met(ours),
                note=f"{ratios(ours)}; fresh process per call, {ctx.budget.wall_repeats} rounds after 2 "
                f"warm-up rounds, all commands round-robin; interpreter {sys.executable}"
                + (
                    f"; the pool answered state {document.get('state')!r} from source "
                    f"{document.get('source')!r} with {_count_workers(document)} workers; "
                    + "; ".join(accounts)
                    if label == OURS_JSON
                    else ""
                ),
            )
        )
    return rows


def _count_workers(document: dict[str, object]) -> int:
    workers = document.get("workers")
    return len(workers) if isinstance(workers, list) else 0
