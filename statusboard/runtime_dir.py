"""Where a pool's runtime directory is, and whether it is safe to use.

Resolution order (CONTRACT "Runtime directory"): an explicit directory, else
$POOLCTL_RUNTIME_DIR/<name>, else $XDG_RUNTIME_DIR/poolctl/<name>, else
~/.local/state/poolctl/<name>. The directory must be ours, a real directory (not
a symlink), and writable by nobody else: another user who can write there could
swap runtime.json or the lock under us.
"""

from __future__ import annotations

import os
import re
import stat

from statusboard.errors import InvalidNameError, RuntimeDirError

TYPE_CHECKING = False  # pathlib and typing stay off the status path (~10 ms of imports)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import TypeVar

    StrPath = TypeVar("StrPath", str, Path)

DEFAULT_NAME = "default"
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


def validate_name(name: str) -> str:
    """Return ``name`` if it can be a pool name, else raise InvalidNameError."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid pool name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "not starting with '.' or '-', no '/' and no '..'"
        )
    return name


def resolve(name: str = DEFAULT_NAME, runtime_dir: str | os.PathLike[str] | None = None) -> Path:
    """The runtime directory for pool ``name`` (not created, not checked)."""
    from pathlib import Path

    return Path(resolve_str(name, runtime_dir))


def resolve_str(name: str = DEFAULT_NAME, runtime_dir: str | os.PathLike[str] | None = None) -> str:
    """resolve() as a plain string, for the status path, which does not import pathlib."""
    if runtime_dir is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(runtime_dir)))
    validate_name(name)
    configured = os.environ.get("POOLCTL_RUNTIME_DIR")
    if configured:
        return os.path.join(os.path.abspath(os.path.expanduser(configured)), name)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(os.path.abspath(xdg), "poolctl", name)
    return os.path.join(os.path.expanduser("~"), ".local", "state", "poolctl", name)


def check(path: str | os.PathLike[str]) -> None:
    """Raise RuntimeDirError unless ``path`` is a safe, existing runtime directory."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RuntimeDirError(f"runtime directory {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise RuntimeDirError(f"runtime directory {path} is a symlink; refusing to use it")
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"runtime directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(
            f"runtime directory {path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RuntimeDirError(
            f"runtime directory {path} is writable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {path}"
        )


def ensure(path: StrPath) -> StrPath:
    """Create ``path`` (mode 0700) if missing, then check it. Returns ``path``."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or dangling symlink is there: check() names it
    except OSError as exc:
        raise RuntimeDirError(f"cannot create runtime directory {path}: {exc.strerror}") from None
    check(path)
    if stat.S_IMODE(os.stat(path).st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
