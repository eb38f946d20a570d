"""Files written so that a crash never leaves half of one.

Everything deeparch writes (checkpoints, caches, downloads, reports, plots) goes
through :func:`atomic_path`: the caller writes a temporary file beside the
target, named ``.<target>.<random>.deeparch-tmp``, and only a complete file is renamed
into place. A process killed mid-write leaves such a temporary file behind; the next
run in that folder removes it (:func:`remove_stale_temps`). Nothing else is ever
removed by that sweep.

Temporary files are created with mode ``0o666`` and the kernel applies the process's
umask, so files get the usual permissions without touching the process-wide umask.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

from .errors import DeeparchError

TEMP_TAG = ".deeparch-tmp"
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}" + re.escape(TEMP_TAG) + r"$")


class WriteError(DeeparchError, OSError):
    """A file deeparch was asked to write could not be written (full disk, no permission)."""


def _reason(exc: OSError) -> str:
    return "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))


def _create_temp(target: Path) -> Path:
    """A new empty file beside ``target`` (mode 0o666 minus the umask), never an existing one."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}{TEMP_TAG}"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0),
                         0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target))


def is_temp_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` (by its name)."""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` directly in ``folder``.

    Call it only on a folder this process holds (a locked run folder): a temporary file
    of a live writer elsewhere would otherwise be taken from under it. Returns what was
    removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        if is_temp_file(p) and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception (also ``KeyboardInterrupt``) the temporary file is removed and
    ``path`` is left as it was. An ``OSError`` (full disk, read-only folder...) becomes a
    :class:`WriteError`. The temporary name ends in ``.deeparch-tmp``, so writers that
    infer a format from the name must be told it."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(target)
    except OSError as exc:
        raise WriteError(f"cannot write {target}: {_reason(exc)}.") from exc
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise WriteError(f"cannot write {target}: {_reason(exc)}; nothing was written.") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))
