"""The board's byte layout: the one and only definition.

A board is one header followed by ``capacity`` rows. Every field is one aligned
8-byte word, so a single store is atomic on x86-64 and both the numpy dtype (for
the supervisor and the Python API) and the stdlib ``struct`` reader (for the CLI's
status fast path, which must not import numpy) are derived from the tables below.

Header (HEADER_WORDS words, 128 bytes)::

    word  field                   writer
    0     magic                   supervisor (once)
    1     version                 supervisor (once)
    2     capacity                supervisor (once)
    3     row_bytes               supervisor (once)
    4     supervisor_pid          supervisor (once)
    5     supervisor_start_ticks  supervisor (once)  /proc/PID/stat field 22
    6     supervisor_heartbeat_ns supervisor         monotonic ns, single word
    7     header_seq              supervisor         seqlock over words 8..12
    8     pool_state              supervisor
    9     workers_desired         supervisor
    10    generation              supervisor         rolling-restart generation
    11    slots_used              supervisor         rows 0..slots_used-1 are live
    12    heartbeat_timeout_ns    supervisor
    13    created_ns              supervisor (once)
    14-15 reserved

Row (ROW_WORDS words, 192 bytes). Two writers, two regions, two sequence counters:
the supervisor owns the lifecycle region, the worker owns its task region, and the
heartbeat/beats/progress words are single-word fields written by the worker without
a counter (one aligned store cannot tear, and a heartbeat must cost no more than a
clock read and two stores)::

    word  field             writer      group
    0     sup_seq           supervisor  lifecycle seqlock
    1     pid               supervisor  lifecycle
    2     pid_start_ticks   supervisor  lifecycle
    3     state             supervisor  lifecycle (statusboard.states.WorkerState)
    4     generation        supervisor  lifecycle
    5     started_ns        supervisor  lifecycle
    6     restarts          supervisor  lifecycle
    7     last_exit_code    supervisor  lifecycle (NO_EXIT_CODE when none)
    8     rss_bytes         supervisor  lifecycle (the worker's whole tree: pool.supervision.containment)
    9     recycled          supervisor  lifecycle
    10    stop_requested    supervisor  lifecycle
    11    wk_seq            worker      task seqlock
    12    task_id           worker      task (NO_TASK when idle)
    13    task_started_ns   worker      task
    14    tasks_done        worker      task
    15    tasks_failed      worker      task
    16    heartbeat_ns      worker      single word
    17    beats             worker      single word
    18    progress          worker      single word, float64 (NaN = none)
    19    rss_self_bytes    supervisor  single word (the worker process alone)
    20-23 reserved

A change to either table is a layout change: bump VERSION, and the layout test
that pins every offset will say so.
"""

from __future__ import annotations

TYPE_CHECKING = False  # numpy and typing stay off the status fast path; see numpy_dtypes()
if TYPE_CHECKING:
    from typing import Final

    import numpy as np

MAGIC: Final = int.from_bytes(b"POOLBRD1", "little")
VERSION: Final = 2  # 2: rss_self_bytes (word 19); rss_bytes became the tree's
WORD: Final = 8
NO_EXIT_CODE: Final = -(2**63)
NO_TASK: Final = -1

# (name, struct code). "q" is int64, "d" is float64.
HEADER_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("magic", "q"),
    ("version", "q"),
    ("capacity", "q"),
    ("row_bytes", "q"),
    ("supervisor_pid", "q"),
    ("supervisor_start_ticks", "q"),
    ("supervisor_heartbeat_ns", "q"),
    ("header_seq", "q"),
    ("pool_state", "q"),
    ("workers_desired", "q"),
    ("generation", "q"),
    ("slots_used", "q"),
    ("heartbeat_timeout_ns", "q"),
    ("created_ns", "q"),
    ("reserved_14", "q"),
    ("reserved_15", "q"),
)

ROW_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("sup_seq", "q"),
    ("pid", "q"),
    ("pid_start_ticks", "q"),
    ("state", "q"),
    ("generation", "q"),
    ("started_ns", "q"),
    ("restarts", "q"),
    ("last_exit_code", "q"),
    ("rss_bytes", "q"),
    ("recycled", "q"),
    ("stop_requested", "q"),
    ("wk_seq", "q"),
    ("task_id", "q"),
    ("task_started_ns", "q"),
    ("tasks_done", "q"),
    ("tasks_failed", "q"),
    ("heartbeat_ns", "q"),
    ("beats", "q"),
    ("progress", "d"),
    ("rss_self_bytes", "q"),
    ("reserved_20", "q"),
    ("reserved_21", "q"),
    ("reserved_22", "q"),
    ("reserved_23", "q"),
)

HEADER_WORDS: Final = len(HEADER_FIELDS)
ROW_WORDS: Final = len(ROW_FIELDS)
HEADER_BYTES: Final = HEADER_WORDS * WORD
ROW_BYTES: Final = ROW_WORDS * WORD

# Word index of every field, for memoryview/numpy int64 access: H.magic, R.pid ...
H: Final = {name: i for i, (name, _) in enumerate(HEADER_FIELDS)}
R: Final = {name: i for i, (name, _) in enumerate(ROW_FIELDS)}

# The fields each seqlock protects (inclusive word ranges), so readers and tests
# agree on what "a consistent row" means.
LIFECYCLE_WORDS: Final = range(R["pid"], R["stop_requested"] + 1)
TASK_WORDS: Final = range(R["task_id"], R["tasks_failed"] + 1)
HEADER_SEQ_WORDS: Final = range(H["pool_state"], H["heartbeat_timeout_ns"] + 1)

MAX_CAPACITY: Final = 1024

HEADER_STRUCT_FORMAT: Final = "<" + "".join(code for _, code in HEADER_FIELDS)
ROW_STRUCT_FORMAT: Final = "<" + "".join(code for _, code in ROW_FIELDS)


def board_bytes(capacity: int) -> int:
    """Size in bytes of a board with ``capacity`` rows."""
    return HEADER_BYTES + capacity * ROW_BYTES


def row_offset(slot: int) -> int:
    """Byte offset of row ``slot`` from the start of the board."""
    return HEADER_BYTES + slot * ROW_BYTES


def numpy_dtypes() -> tuple[np.dtype, np.dtype]:
    """(header dtype, row dtype) as numpy structured dtypes with pinned offsets."""
    import numpy as np

    def build(fields: tuple[tuple[str, str], ...]) -> np.dtype:
        kinds = {"q": "<i8", "d": "<f8"}
        return np.dtype(
            {
                "names": [name for name, _ in fields],
                "formats": [kinds[code] for _, code in fields],
                "offsets": [i * WORD for i in range(len(fields))],
                "itemsize": len(fields) * WORD,
            }
        )

    return build(HEADER_FIELDS), build(ROW_FIELDS)
