"""Load a ``module:function`` (or ``path/to/file.py:function``) worker target."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from pool.errors import TargetError
from pool.spec import check_target


def load_target(target: str, cwd: str) -> Callable[..., Any]:
    """Import the target with ``cwd`` first on sys.path (like gunicorn --chdir).

    Raises TargetError with a one-line reason; the import's own exception is the
    ``__cause__`` so its traceback is kept for the log.
    """
    module_part, attr_path = check_target(target)
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_part.endswith(".py") or os.sep in module_part:
            module = _import_file(module_part, cwd)
        else:
            module = importlib.import_module(module_part)
    except TargetError:
        raise
    except SyntaxError as exc:
        raise TargetError(
            f"cannot import {module_part!r}: syntax error in {exc.filename} line {exc.lineno}"
        ) from exc
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import {module_part!r}: no module named {exc.name!r}") from exc
    except BaseException as exc:
        raise TargetError(f"cannot import {module_part!r}: {type(exc).__name__}: {exc}") from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_part!r} has no attribute {attr_path!r}") from None
    if not callable(obj):
        raise TargetError(f"{target!r} is not callable (it is a {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def _import_file(path: str, cwd: str) -> Any:
    full = path if os.path.isabs(path) else os.path.join(cwd, path)
    if not os.path.isfile(full):
        raise TargetError(f"cannot import {path!r}: no such file")
    name = os.path.splitext(os.path.basename(full))[0]
    spec = importlib.util.spec_from_file_location(name, full)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path!r}: not a Python file")
    directory = os.path.dirname(full)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
