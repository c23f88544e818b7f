"""Where a pool's runtime directory is, valid pool names, and refusing unsafe directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from statusboard import runtime_dir
from statusboard.errors import InvalidNameError, RuntimeDirError


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No runtime-dir variables set; HOME is a fresh directory. Returns HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("POOLCTL_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


# -- resolution order ----------------------------------------------------------------------


def test_explicit_directory_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POOLCTL_RUNTIME_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir.resolve("p", tmp_path / "explicit") == tmp_path / "explicit"
    assert runtime_dir.resolve("p", "~/mine") == clean_env / "mine"  # ~ expanded


def test_explicit_relative_directory_is_made_absolute(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runtime_dir.resolve("p", "rel/dir") == tmp_path / "rel" / "dir"


def test_poolctl_runtime_dir_beats_xdg(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POOLCTL_RUNTIME_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir.resolve("crunch") == tmp_path / "env" / "crunch"


def test_xdg_runtime_dir(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir.resolve("crunch") == tmp_path / "xdg" / "poolctl" / "crunch"


def test_empty_variables_count_as_unset(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POOLCTL_RUNTIME_DIR", "")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "xdg"))
    assert runtime_dir.resolve("crunch") == tmp_path / "xdg" / "poolctl" / "crunch"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    assert runtime_dir.resolve("crunch") == clean_env / ".local" / "state" / "poolctl" / "crunch"


def test_home_fallback(clean_env: Path) -> None:
    assert runtime_dir.resolve("crunch") == clean_env / ".local" / "state" / "poolctl" / "crunch"
    assert runtime_dir.resolve() == clean_env / ".local" / "state" / "poolctl" / "default"
    assert runtime_dir.DEFAULT_NAME == "default"


def test_resolve_validates_the_name(clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POOLCTL_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(InvalidNameError):
        runtime_dir.resolve("..")
    with pytest.raises(InvalidNameError):
        runtime_dir.resolve("../../etc")


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a/b",
        "..",
        "",
        ".hidden",
        "-x",
        "has space",
        " lead",
        "trail ",
        "a" * 65,
        "a..b",
        "tab\t",
        "nl\n",
        "é",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid pool name") as info:
        runtime_dir.validate_name(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["default", "crunch_1", "a.b-c", "A", "_x", "0", "a" * 64])
def test_valid_names(name: str) -> None:
    assert runtime_dir.validate_name(name) == name


# -- ensure / check ---------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_ensure_creates_a_private_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "pool"
    old = os.umask(0)
    try:
        assert runtime_dir.ensure(target) == target
    finally:
        os.umask(old)
    assert target.is_dir()
    assert _mode(target) == 0o700
    runtime_dir.ensure(target)  # and again: already there, fine
    assert _mode(target) == 0o700


def test_ensure_tightens_a_readable_directory(tmp_path: Path) -> None:
    target = tmp_path / "pool"
    target.mkdir()
    os.chmod(target, 0o755)  # readable by others, writable by nobody else: fixed, not refused
    runtime_dir.ensure(target)
    assert _mode(target) == 0o700


def test_refuses_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(RuntimeDirError, match="is a symlink") as info:
        runtime_dir.ensure(link)
    assert str(link) in str(info.value)


def test_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(RuntimeDirError, match="is a symlink"):
        runtime_dir.ensure(link)
    assert not (tmp_path / "nowhere").exists()


def test_refuses_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RuntimeDirError, match="is not a directory") as info:
        runtime_dir.ensure(path)
    assert str(path) in str(info.value)
    assert path.read_text() == "x"


@pytest.mark.parametrize("mode", [0o777, 0o720, 0o702, 0o770, 0o1777])
def test_refuses_a_directory_writable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "open"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(RuntimeDirError, match="writable by group or others") as info:
        runtime_dir.ensure(path)
    message = str(info.value)
    assert str(path) in message
    assert f"{mode:04o}" in message
    assert f"chmod 700 {path}" in message
    assert _mode(path) == mode  # refused, not silently fixed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_refuses_a_directory_owned_by_another_user(tmp_path: Path) -> None:
    path = tmp_path / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    with pytest.raises(RuntimeDirError, match="owned by uid 65534") as info:
        runtime_dir.ensure(path)
    assert str(path) in str(info.value)
    assert f"uid {os.geteuid()}" in str(info.value)


def test_check_of_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeDirError, match="does not exist"):
        runtime_dir.check(tmp_path / "missing")


def test_ensure_reports_what_stops_it_creating(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(RuntimeDirError, match=str(blocker / "pool")):
        runtime_dir.ensure(blocker / "pool")  # a parent is a file: ENOTDIR, not a traceback
