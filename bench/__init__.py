"""The benchmark harness: ``python -m bench [GROUP...] [--quick] [--json] [--markdown] [--plot F]``.

Prints our figures next to the alternatives measured in the same run, on the same
machine, as medians with [min-max] over repeats, and the ratio between them.
Absolute times drift between machines and runs; the ratios are the point.

Layout (one concept per file)::

    __main__.py      command line, the run loop, the one exit-code boundary
    registry.py      the groups, by name -> "module:function" (add new ones there)
    figures.py       Stats / Measure / Row: what a group returns
    timing.py        per-call timing, rates, whole-process wall times
    fresh_process.py run a function in a new interpreter (a true second process)
    reaper.py        stop a process tree by pid and confirm it is gone
    progress.py      the progress line (rich, or plain stderr)
    render.py        the table (rich, markdown) and --json
    plot.py          --plot FILE.png: measured curves (scale) drawn with matplotlib, if installed
    scratch.py       this run's temp dirs (named by pid, for the leak check)
    fake_pool.py     a live-looking board + runtime dir + held lock, no workers
    writer_switch.py pause/resume the busy writer, so idle and busy reads interleave
    board_side.py    what runs in the reader / writer / worker processes
    groups/          one module per group, each ``run(ctx) -> list[Row]``
    peers/           daemon.py (start, readiness, verified stop) + one module per peer

Nothing in ``pool``, ``statusboard`` or ``cli`` imports this package.
"""
