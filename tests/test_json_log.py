"""supervisor.log with --log-format json: one JSON object per line (exceptions included), rotation
as before, the stderr echo in the same format, `poolctl logs` printing the lines unchanged, and
the text format exactly as it was."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_targets import POOLCTL, run

from pool.integrations.logfile import LOG_NAME, close_log, open_log

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")
KEYS = {"ts", "level", "msg", "pool", "pid"}


@pytest.fixture
def json_log(runtime_dir: Path) -> Iterator[logging.Logger]:
    logger = open_log(runtime_dir, log_format="json", pool="web")
    try:
        yield logger
    finally:
        close_log(logger)


def records(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each parsed as one JSON object (fails on any other line)."""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file does not end with a newline"
    parsed = []
    for line in lines[:-1]:
        record = json.loads(line)
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def test_each_record_is_one_json_line(runtime_dir: Path, json_log: logging.Logger) -> None:
    before = time.time()
    json_log.info("worker %d started pid %d (generation %d)", 0, 4121, 1)
    json_log.warning("worker %d (pid %d) hung; sending SIGTERM", 0, 4121)
    json_log.error(
        "worker 1 (pid 4122) raised: RuntimeError: boom\nTraceback (most recent call last):\n  ..."
    )
    after = time.time()
    got = records(runtime_dir / LOG_NAME)
    assert [r["level"] for r in got] == ["INFO", "WARNING", "ERROR"]
    assert got[0]["msg"] == "worker 0 started pid 4121 (generation 1)"
    assert got[2]["msg"].endswith("boom\nTraceback (most recent call last):\n  ...")  # newline kept, escaped
    for record in got:
        assert set(record) == KEYS
        assert record["pool"] == "web"
        assert record["pid"] == os.getpid()
        assert TS_RE.match(record["ts"]), record["ts"]
        stamp = time.mktime(time.strptime(record["ts"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert int(before) - 1 <= stamp <= after + 1


def test_an_exception_is_one_line_with_its_traceback(runtime_dir: Path, json_log: logging.Logger) -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        json_log.exception("supervisor error: %s", exc)
    json_log.info("after")
    got = records(runtime_dir / LOG_NAME)
    assert len(got) == 2
    assert got[0]["level"] == "ERROR"
    assert got[0]["msg"] == "supervisor error: 'missing'"
    assert got[0]["exc"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in got[0]["exc"]
    assert "test_an_exception_is_one_line" in got[0]["exc"]
    assert "exc" not in got[1]


def test_odd_text_stays_one_parseable_line(runtime_dir: Path, json_log: logging.Logger) -> None:
    odd = 'quotes " and \\ and \u2028 and \r and caf\u00e9 and \udcff (an undecodable byte)'
    json_log.info("%s", odd)
    raw = (runtime_dir / LOG_NAME).read_bytes()
    assert raw.count(b"\n") == 1 and raw.isascii()
    assert records(runtime_dir / LOG_NAME)[0]["msg"] == odd


def test_pool_defaults_to_the_runtime_directory_name(runtime_dir: Path) -> None:
    logger = open_log(runtime_dir, log_format="json")
    try:
        logger.info("hello")
    finally:
        close_log(logger)
    assert records(runtime_dir / LOG_NAME)[0]["pool"] == runtime_dir.name


def test_rotation_is_unchanged_and_every_rotated_line_parses(runtime_dir: Path) -> None:
    logger = open_log(runtime_dir, log_format="json", pool="web", max_bytes=2000, backups=2)
    try:
        for i in range(200):
            logger.info("event %03d %s", i, "x" * 40)
    finally:
        close_log(logger)
    files = sorted(p.name for p in runtime_dir.iterdir() if p.name.startswith(LOG_NAME))
    assert files == [LOG_NAME, f"{LOG_NAME}.1", f"{LOG_NAME}.2"]
    kept = []
    for name in reversed(files):  # oldest first
        path = runtime_dir / name
        assert path.stat().st_size <= 2000
        kept += [int(r["msg"].split()[1]) for r in records(path)]
    assert kept == list(range(200 - len(kept), 200))  # the newest events, in order, none torn


def test_the_stderr_echo_is_json_too(runtime_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = open_log(runtime_dir, log_format="json", pool="web", echo=True)
    try:
        logger.warning("escalated to SIGKILL")
    finally:
        close_log(logger)
    echoed = json.loads(capsys.readouterr().err)
    assert echoed == records(runtime_dir / LOG_NAME)[0]


def test_the_text_format_is_unchanged(runtime_dir: Path) -> None:
    logger = open_log(runtime_dir)
    try:
        logger.info("pool ready: %d workers running", 2)
        logger.warning("worker 0 (pid 7) hung")
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("supervisor error: bad")
    finally:
        close_log(logger)
    lines = (runtime_dir / LOG_NAME).read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(stamp + r" INFO    pool ready: 2 workers running", lines[0]), lines[0]
    assert re.fullmatch(stamp + r" WARNING worker 0 \(pid 7\) hung", lines[1]), lines[1]
    assert re.fullmatch(stamp + r" ERROR   supervisor error: bad", lines[2]), lines[2]
    assert lines[3] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: bad"


def test_an_unknown_format_is_refused(runtime_dir: Path) -> None:
    with pytest.raises(ValueError, match="xml"):
        open_log(runtime_dir, log_format="xml")
    assert not (runtime_dir / LOG_NAME).exists()


def test_poolctl_logs_prints_json_lines_unchanged(runtime_dir: Path, json_log: logging.Logger) -> None:
    for i in range(5):
        json_log.info("event %d", i)
    try:
        raise OSError("disk")
    except OSError:
        json_log.exception("flush failed")
    raw = (runtime_dir / LOG_NAME).read_text()
    result = run([POOLCTL, "--runtime-dir", str(runtime_dir), "logs", "-n", "3"])
    assert result.code == 0, str(result)
    assert result.out == "".join(raw.splitlines(keepends=True)[-3:])
    assert [json.loads(line)["msg"] for line in result.out.splitlines()] == [
        "event 3",
        "event 4",
        "flush failed",
    ]
