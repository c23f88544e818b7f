"""The board layout is pinned: any change to it must be deliberate and break this file.

Every offset below is a literal, not derived from statusboard.layout, so moving,
adding, retyping or renaming a field fails here; then bump layout.VERSION and
update this table together.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from statusboard import layout
from statusboard.states import PoolState, WorkerState

HEADER_TABLE = [
    # (name, byte offset, numpy type)
    ("magic", 0, "<i8"),
    ("version", 8, "<i8"),
    ("capacity", 16, "<i8"),
    ("row_bytes", 24, "<i8"),
    ("supervisor_pid", 32, "<i8"),
    ("supervisor_start_ticks", 40, "<i8"),
    ("supervisor_heartbeat_ns", 48, "<i8"),
    ("header_seq", 56, "<i8"),
    ("pool_state", 64, "<i8"),
    ("workers_desired", 72, "<i8"),
    ("generation", 80, "<i8"),
    ("slots_used", 88, "<i8"),
    ("heartbeat_timeout_ns", 96, "<i8"),
    ("created_ns", 104, "<i8"),
    ("reserved_14", 112, "<i8"),
    ("reserved_15", 120, "<i8"),
]

ROW_TABLE = [
    ("sup_seq", 0, "<i8"),
    ("pid", 8, "<i8"),
    ("pid_start_ticks", 16, "<i8"),
    ("state", 24, "<i8"),
    ("generation", 32, "<i8"),
    ("started_ns", 40, "<i8"),
    ("restarts", 48, "<i8"),
    ("last_exit_code", 56, "<i8"),
    ("rss_bytes", 64, "<i8"),
    ("recycled", 72, "<i8"),
    ("stop_requested", 80, "<i8"),
    ("wk_seq", 88, "<i8"),
    ("task_id", 96, "<i8"),
    ("task_started_ns", 104, "<i8"),
    ("tasks_done", 112, "<i8"),
    ("tasks_failed", 120, "<i8"),
    ("heartbeat_ns", 128, "<i8"),
    ("beats", 136, "<i8"),
    ("progress", 144, "<f8"),
    ("rss_self_bytes", 152, "<i8"),
    ("reserved_20", 160, "<i8"),
    ("reserved_21", 168, "<i8"),
    ("reserved_22", 176, "<i8"),
    ("reserved_23", 184, "<i8"),
]


def test_sizes_are_pinned() -> None:
    assert layout.WORD == 8
    assert layout.HEADER_WORDS == 16
    assert layout.ROW_WORDS == 24
    assert layout.HEADER_BYTES == 128
    assert layout.ROW_BYTES == 192
    assert layout.MAX_CAPACITY == 1024


def test_magic_version_and_sentinels_are_pinned() -> None:
    assert layout.MAGIC == 0x314452424C4F4F50
    assert layout.MAGIC.to_bytes(8, "little") == b"POOLBRD1"
    assert layout.VERSION == 2
    assert layout.NO_EXIT_CODE == -(2**63)
    assert layout.NO_TASK == -1


def test_numpy_dtypes_itemsize() -> None:
    header, row = layout.numpy_dtypes()
    assert header.itemsize == 128
    assert row.itemsize == 192


@pytest.mark.parametrize(("which", "table"), [(0, HEADER_TABLE), (1, ROW_TABLE)], ids=["header", "row"])
def test_every_field_offset_and_type_is_pinned(which: int, table: list[tuple[str, int, str]]) -> None:
    dtype = layout.numpy_dtypes()[which]
    assert list(dtype.names) == [name for name, _, _ in table], "fields added, removed, renamed or moved"
    for name, offset, kind in table:
        field_type, field_offset = dtype.fields[name][:2]
        assert field_offset == offset, f"{name} moved from offset {offset} to {field_offset}"
        assert field_type == np.dtype(kind), f"{name} changed type from {kind} to {field_type}"


@pytest.mark.parametrize(
    ("index", "table"), [(layout.H, HEADER_TABLE), (layout.R, ROW_TABLE)], ids=["H", "R"]
)
def test_word_indices_match_offsets(index: dict[str, int], table: list[tuple[str, int, str]]) -> None:
    assert index == {name: offset // 8 for name, offset, _ in table}


def test_struct_formats_are_pinned() -> None:
    assert layout.HEADER_STRUCT_FORMAT == "<" + "q" * 16
    assert layout.ROW_STRUCT_FORMAT == "<" + "q" * 18 + "d" + "q" * 5
    assert struct.calcsize(layout.HEADER_STRUCT_FORMAT) == 128
    assert struct.calcsize(layout.ROW_STRUCT_FORMAT) == 192


def test_seqlock_groups_are_pinned() -> None:
    # Words 1..10 under sup_seq, 12..15 under wk_seq, header words 8..12 under header_seq.
    assert range(1, 11) == layout.LIFECYCLE_WORDS
    assert range(12, 16) == layout.TASK_WORDS
    assert range(8, 13) == layout.HEADER_SEQ_WORDS


def test_board_geometry() -> None:
    assert layout.board_bytes(1) == 128 + 192
    assert layout.board_bytes(64) == 128 + 64 * 192
    assert layout.row_offset(0) == 128
    assert layout.row_offset(5) == 128 + 5 * 192


@pytest.mark.parametrize(
    ("which", "fmt", "fields"),
    [
        (0, layout.HEADER_STRUCT_FORMAT, layout.HEADER_FIELDS),
        (1, layout.ROW_STRUCT_FORMAT, layout.ROW_FIELDS),
    ],
    ids=["header", "row"],
)
def test_numpy_and_struct_readers_agree(which: int, fmt: str, fields: tuple[tuple[str, str], ...]) -> None:
    """Bytes packed through the numpy dtype unpack field for field with struct, and back."""
    dtype = layout.numpy_dtypes()[which]
    record = np.zeros(1, dtype=dtype)
    expected = []
    for i, (name, code) in enumerate(fields):
        value = (i + 1) * 1.5 if code == "d" else -(i + 1) * 1_000_003
        record[name] = value
        expected.append(value)
    assert list(struct.unpack(fmt, record.tobytes())) == expected
    again = np.frombuffer(struct.pack(fmt, *expected), dtype=dtype)
    assert again.tolist() == record.tolist()


def test_stored_state_values_are_pinned() -> None:
    # The board stores these integers; renumbering one is a layout change.
    assert {s.name: int(s) for s in WorkerState} == {
        "EMPTY": 0,
        "STARTING": 1,
        "RUNNING": 2,
        "STOPPING": 3,
        "EXITED": 4,
        "BACKOFF": 5,
        "HUNG": 6,
        "FAILED": 7,
        "STOPPED": 8,
    }
    assert {s.name: int(s) for s in PoolState} == {
        "STARTING": 1,
        "RUNNING": 2,
        "STOPPING": 3,
        "STOPPED": 4,
        "STOP_FAILED": 5,
    }
