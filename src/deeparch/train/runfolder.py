"""The run folder as a resource: who wrote it, who is writing it now, what may be removed.

* **Marker.** A folder is a deeparch run when it holds ``.deeparch-run`` (written first,
  when ``train`` claims the folder) or, for runs written before the marker existed, a
  ``config.json`` whose ``"format"`` is ``"deeparch-run"``. ``--force`` replaces only such a
  folder; any other non-empty folder is refused.
* **What ``--force`` removes.** Only the files deeparch writes, by name: ``RUN_FILES`` in the
  folder, ``last``/``best`` checkpoints in ``checkpoints/``, TensorBoard event files in
  ``tensorboard/`` and deeparch's own temporary files. Anything else the user put in the
  folder stays, and a sub-folder is removed only when it ends up empty.
* **Lock.** While a process writes a run it holds ``.deeparch-lock`` with ``flock``: a second
  ``train`` or ``--resume`` into the folder is refused, with the holder's process id. The
  kernel releases the lock when the holder dies, however it dies, so a stale lock (its
  process gone) never blocks anyone; the file is removed on a clean release.
* **Temporary files** left by a killed writer (``*.deeparch-tmp``) are removed by the next
  process that takes the lock.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from ..errors import CheckpointError
from ..io import is_temp_file, remove_stale_temps, write_text

RUN_FORMAT = "deeparch-run"
MARKER = ".deeparch-run"
LOCK = ".deeparch-lock"
RUN_FILES = ("config.json", "history.json", "log.csv", "metrics.json", "model.safetensors",
             "curves.png", "confusion.png", "features.safetensors")
CHECKPOINT_FILES = ("last.safetensors", "last.json", "best.safetensors", "best.json")
SUBDIRS = ("checkpoints", "tensorboard")


class RunInUseError(CheckpointError):
    """The run folder is being written by another live process."""


def has_marker(folder: str | Path) -> bool:
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    try:   # runs written before the marker existed
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and cfg.get("format") == RUN_FORMAT


def write_marker(folder: Path) -> None:
    from .. import __version__

    write_text(folder / MARKER, json.dumps({"format": RUN_FORMAT, "deeparch": __version__}) + "\n")


def _ours(folder: Path) -> list[Path]:
    """The files deeparch writes in a run folder that exist now (never the marker or lock)."""
    found = [folder / n for n in RUN_FILES if (folder / n).is_file()]
    ck = folder / "checkpoints"
    if ck.is_dir():
        found += [ck / n for n in CHECKPOINT_FILES if (ck / n).is_file()]
        found += [p for p in ck.iterdir() if is_temp_file(p) and p.is_file()]
    tb = folder / "tensorboard"
    if tb.is_dir():
        found += [p for p in tb.iterdir() if p.is_file() and p.name.startswith("events.out.tfevents.")]
    found += [p for p in folder.iterdir() if is_temp_file(p) and p.is_file()]
    return found


def clear_run(folder: Path) -> None:
    """Remove the files of a previous deeparch run in ``folder`` (see the module docstring)."""
    for p in _ours(folder):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    for name in SUBDIRS:
        with contextlib.suppress(OSError):
            (folder / name).rmdir()          # only when empty


def sweep_temps(folder: Path) -> None:
    """Remove temporary files of killed writers in a folder this process holds."""
    remove_stale_temps(folder)
    remove_stale_temps(folder / "checkpoints")


def _visible_entries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name not in (MARKER, LOCK)]


class RunLock:
    """An exclusive, process-lifetime lock on a run folder (``flock`` on ``.deeparch-lock``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
            except OSError as exc:
                raise CheckpointError(f"cannot lock the run folder {self.folder} "
                                      f"({exc.strerror or exc}); check that it is writable."
                                      ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunInUseError(f"{self.folder} is in use by another deeparch process"
                                    f"{holder}; wait for it to finish, or choose another "
                                    f"folder.") from None
            except OSError:        # a file system without flock: work without the lock
                os.close(fd)
                return self
            try:        # the file we locked must still be the one at the path
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
            self._fd = fd
            return self
        raise RunInUseError(f"{self.folder} is being locked and unlocked by other processes; "
                            f"try again.")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f" (process {int(info['pid'])} on {str(info['host'])[:64]})"
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return ""


def _refuse_contents(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` that holds no deeparch run, or one that does without
    ``force``."""
    if not has_marker(out):
        raise CheckpointError(f"{out} is not empty and holds no deeparch run, so nothing in "
                              f"it will be touched; choose a new or empty --out folder.")
    if not force:
        raise CheckpointError(f"{out} already holds a deeparch run; continue it with "
                              f"`deeparch train --resume {out}`, or add --force to replace it.")


def claim(out: Path, force: bool, *, main: bool = True) -> tuple[RunLock | None, bool]:
    """Take ``out`` for a new run: check it may be written, lock it, clear a previous run
    when ``force``, write the marker. Returns (the lock, whether the folder was created).

    Refusals (one sentence each): ``out`` is a file; ``out`` is a non-empty folder that is
    not a deeparch run (``--force`` does not change that); ``out`` holds a run and
    ``force`` is false; ``out`` is in use by another process."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; give a folder for the run.")
    if out.is_dir() and _visible_entries(out):
        if has_marker(out) and not force and main:
            with RunLock(out):      # in use beats "already holds a run": say what is going on
                pass
        _refuse_contents(out, force)
    if not main:
        return None, False
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the run folder {out} ({exc.strerror or exc}).") from exc
    lock = RunLock(out).acquire()
    try:
        if _visible_entries(out):       # again under the lock: it may have changed since
            _refuse_contents(out, force)
            clear_run(out)
        write_marker(out)
    except BaseException:
        lock.release()
        raise
    return lock, created


def abandon(out: Path, lock: RunLock | None, created: bool) -> None:
    """Undo :func:`claim` for a run that never started: the marker goes, and the folder too
    when this process created it and it is empty again."""
    if lock is None:
        return
    if not (out / "config.json").exists():
        with contextlib.suppress(OSError):
            (out / MARKER).unlink()
    lock.release()
    if created:
        with contextlib.suppress(OSError):
            out.rmdir()


__all__ = ["LOCK", "MARKER", "RUN_FILES", "RUN_FORMAT", "RunInUseError", "RunLock", "abandon",
           "claim", "clear_run", "has_marker", "sweep_temps"]
