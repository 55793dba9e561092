"""Output paths checked before any work starts, and files written atomically.

A batch that runs for an hour must not discover at the end that its output path is a directory or lies
under a file; and a run killed while writing must leave either the old file or the new one, never half
of one. Writes go to a temporary file in the same folder, are flushed to disk, then renamed over the
target (``os.replace`` is atomic on POSIX within one file system).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputPathError", "check_output_file", "check_output_dir", "atomic_write", "atomic_write_text"]


class OutputPathError(ValueError):
    """An output path that cannot be written, with the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"output {self.path}: {reason}")


def _existing_ancestor(path: Path) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return parent
    return Path(".")


def _check_parent(path: Path) -> None:
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise OutputPathError(path, f"{ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(path, f"no permission to write in {ancestor}")


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a file output that is a directory, lies under a file or cannot be written."""
    path = Path(path)
    if str(path).strip() == "":
        raise OutputPathError(path, "empty path")
    if path.is_dir():
        raise OutputPathError(path, "is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(path, "exists and is read-only")
    _check_parent(path)
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse, before any work, an output folder that is a file or lies where nothing can be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(path, "is a file; give a folder")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(path, "no permission to write in this folder")
        return path
    _check_parent(path)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``; no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
