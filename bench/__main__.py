"""``python -m bench [GROUP...] [--quick] [--json] [--markdown] [--list] [--plot FILE.png]``.

Runs the named groups (all written ones by default), shows a progress line on
stderr, then prints one table. After every group it checks that nothing is left
behind: no descendant process, no board segment or temp dir of this run.
``--plot FILE.png`` draws the curves the groups measured (``scale``) with
matplotlib; without matplotlib it says so in one line and the run goes on.

Exit codes: 0 all groups ran and cleaned up; 1 a group failed or left something
behind (it is removed, and named); 2 bad usage. Missing targets are shown in
the table with ✗; they do not change the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import signal
import sys
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.registry import Context

PEER_DISTRIBUTIONS = ("supervisor", "circus", "gunicorn", "loky", "pebble")


def _parse(argv: list[str]) -> argparse.Namespace:
    from bench import registry

    described = "; ".join(f"{g.name}{'' if g.entry else ' (planned)'}: {g.summary}" for g in registry.GROUPS)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="poolctl's figures next to the alternatives, measured in the same run.",
        epilog=f"groups: {described}",
    )
    parser.add_argument(
        "groups", nargs="*", metavar="GROUP", help="groups to run (default: all written ones)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter samples (about a minute)")
    parser.add_argument("--json", action="store_true", help="machine-readable rows on stdout")
    parser.add_argument("--markdown", action="store_true", help="a markdown table (for the README)")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        type=Path,
        help="draw the measured curves (the scale group's growth with pool size) to FILE.png; "
        "needs matplotlib (the `plot` extra)",
    )
    args = parser.parse_args(argv)
    if args.plot is not None and not args.plot.resolve().parent.is_dir():
        parser.error(f"--plot: directory {args.plot.resolve().parent} does not exist")
    return args


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit, so every ``finally`` stops what it started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _clean_up_after(group: str, temps_before: set[Path]) -> list[str]:
    """Find, remove and name whatever ``group`` left behind."""
    import shutil

    from bench import fake_pool, reaper, scratch

    problems = []
    leftover = reaper.leftover_processes()
    if leftover:
        survivors = reaper.stop_all(reaper.descendants(os.getpid()), grace=5.0)
        problems.append(f"{group} left processes: {', '.join(leftover)}; still alive after kill: {survivors}")
    mine = f"-{os.getpid()}-"
    segments = [
        name
        for name in reaper.leftover_segments(fake_pool.shm_directory(), fake_pool.segment_prefix())
        if mine in name
    ]
    for name in segments:
        (fake_pool.shm_directory() / name).unlink(missing_ok=True)
    if segments:
        problems.append(f"{group} left board segments: {', '.join(segments)} (removed)")
    temps = sorted(scratch.existing() - temps_before)
    for path in temps:
        shutil.rmtree(path, ignore_errors=True)
    if temps:
        problems.append(f"{group} left temp dirs: {', '.join(map(str, temps))} (removed)")
    return problems


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in ("numpy", *PEER_DISTRIBUTIONS):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _plot(ctx: Context, path: Path, subtitle: str) -> str:
    """Draw ``ctx.curves`` to ``path``; one line (also on stderr) says what happened."""
    from bench import plot

    try:
        account = plot.draw(ctx.curves, path, subtitle)
    except Exception as exc:  # a plot must not cost the table of a finished run
        account = f"--plot: drawing {path} failed: {type(exc).__name__}: {exc}"
    print(account, file=sys.stderr)
    return account


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    from bench import registry

    if args.list:
        for group in registry.GROUPS:
            print(f"{group.name:12} {'' if group.entry else '(planned) '}{group.summary}")
        return 0
    try:
        groups = [registry.by_name(name) for name in args.groups] or registry.implemented()
    except KeyError as exc:
        print(f"python -m bench: {exc.args[0]}", file=sys.stderr)
        return 2
    planned = [g.name for g in groups if g.entry is None]
    if planned:
        print(f"python -m bench: not written yet: {', '.join(planned)}", file=sys.stderr)
        return 2

    from bench import render, scratch
    from bench.figures import Row
    from bench.progress import Progress
    from bench.timing import Budget

    load_before = os.getloadavg()[0]
    progress = Progress()
    ctx = registry.Context(quick=args.quick, budget=Budget.for_run(args.quick), progress=progress)
    rows: list[Row] = []
    failed = False
    with _sigterm_exits():
        try:
            for group in groups:
                temps_before = scratch.existing()
                progress.step(f"{group.name}: starting")
                try:
                    rows.extend(registry.load(group)(ctx))
                except Exception:
                    failed = True
                    progress.note(f"group {group.name} failed:\n{traceback.format_exc()}")
                    ctx.notes.append(f"group {group.name} FAILED (traceback on stderr)")
                problems = _clean_up_after(group.name, temps_before)
                if problems:
                    failed = True
                    ctx.notes.extend(problems)
                    for problem in problems:
                        progress.note(problem)
                else:
                    ctx.notes.append(
                        f"{group.name}: cleanup verified (no child process, board segment or temp dir left)"
                    )
        finally:
            progress.close()

    versions = _versions()
    load_after = os.getloadavg()[0]
    if max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        ctx.notes.append(
            f"the machine was busy with other work (1-min load {load_before:.1f} at start, "
            f"{load_after:.1f} at end, on {os.cpu_count()} cores): absolute figures are noisy; "
            "ratios are interleaved and hold better"
        )
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "interpreter": sys.executable,
        "machine": platform.machine(),
        "numpy": versions.pop("numpy"),
        "peers": versions,
        "command": " ".join(["python -m bench", *argv]),
        "quick": args.quick,
        "elapsed_s": progress.elapsed(),
        "load_1min": [round(load_before, 2), round(load_after, 2)],
        "notes": ctx.notes,
    }
    if args.plot is not None:
        ctx.notes.append(_plot(ctx, args.plot, render.meta_line(meta)))
    if args.json:
        render.print_json(rows, meta)
    else:
        render.print_table(rows, meta, force_markdown=args.markdown)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
