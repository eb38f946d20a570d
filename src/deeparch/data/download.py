"""Where datasets live on disk, and how the public ones are fetched.

* :func:`cache_dir` -- ``$DEEPARCH_DATA``, else ``$XDG_CACHE_HOME/deeparch/data``,
  else ``~/.cache/deeparch/data``. Each dataset gets its own folder in it.
* :data:`SOURCES` -- the real download locations with their *published* checksums
  (MD5, because that is all MNIST, Fashion-MNIST and CIFAR publish; the same values
  torchvision checks).
* :func:`download_file` -- urllib, resumable: bytes go to ``<name>.part``; when that
  file exists an HTTP ``Range`` request asks for the rest. Only a complete file whose
  checksum matches is renamed onto ``<name>``, so the real name never holds half a
  file. A checksum mismatch deletes the ``.part``; an interrupted transfer keeps it
  (that is what makes the next call resume). The checksum is an MD5 or SHA-256 digest,
  or the leading hex digits of a SHA-256 (``sha256_prefix``: what torchvision publishes
  in its file names); ``progress`` shows a tqdm bar on stderr (the weights hub uses both).
* :func:`extract_archive` -- tar.gz extraction that refuses absolute paths, ``..``,
  links and devices, unpacks into a temporary folder and moves the result into place.

Nothing here runs at import time and nothing is fetched unless asked for.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError, DownloadError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One published file: its name on disk, where it comes from, its checksum."""

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    extract: bool = False  # a tar.gz to unpack into the dataset's folder


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR = "https://www.cs.toronto.edu/~kriz/"

#: Files fetched by ``load_dataset(name, download=True)`` / :func:`fetch`.
SOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": (
        Resource("train-images-idx3-ubyte.gz", _MNIST + "train-images-idx3-ubyte.gz",
                 md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        Resource("train-labels-idx1-ubyte.gz", _MNIST + "train-labels-idx1-ubyte.gz",
                 md5="d53e105ee54ea40749a09fcbcd1e9432"),
        Resource("t10k-images-idx3-ubyte.gz", _MNIST + "t10k-images-idx3-ubyte.gz",
                 md5="9fb629c4189551a2d022fa330f9573f3"),
        Resource("t10k-labels-idx1-ubyte.gz", _MNIST + "t10k-labels-idx1-ubyte.gz",
                 md5="ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    "fashion_mnist": (
        Resource("train-images-idx3-ubyte.gz", _FASHION + "train-images-idx3-ubyte.gz",
                 md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        Resource("train-labels-idx1-ubyte.gz", _FASHION + "train-labels-idx1-ubyte.gz",
                 md5="25c81989df183df01b3e8a0aad5dffbe"),
        Resource("t10k-images-idx3-ubyte.gz", _FASHION + "t10k-images-idx3-ubyte.gz",
                 md5="bef4ecab320f06d8554ea6380940ec79"),
        Resource("t10k-labels-idx1-ubyte.gz", _FASHION + "t10k-labels-idx1-ubyte.gz",
                 md5="bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    "cifar10": (
        Resource("cifar-10-python.tar.gz", _CIFAR + "cifar-10-python.tar.gz",
                 md5="c58f30108f718f92721af3b95e74349a", extract=True),
    ),
    "cifar100": (
        Resource("cifar-100-python.tar.gz", _CIFAR + "cifar-100-python.tar.gz",
                 md5="eb9058c3a382ffc7106e4002c42a8d85", extract=True),
    ),
}

#: The binary ("for C programs") CIFAR archives, fetched with ``fetch(name, binary=True)``.
BINARY_SOURCES: dict[str, tuple[Resource, ...]] = {
    "cifar10": (
        Resource("cifar-10-binary.tar.gz", _CIFAR + "cifar-10-binary.tar.gz",
                 md5="c32a1d4ab5d03f1284b67883e8d87530", extract=True),
    ),
    "cifar100": (
        Resource("cifar-100-binary.tar.gz", _CIFAR + "cifar-100-binary.tar.gz",
                 md5="03b5dce01913d631647c71ecec9e9cb8", extract=True),
    ),
}


def user_cache(kind: str, variable: str) -> Path:
    """``$<variable>``, else ``$XDG_CACHE_HOME/deeparch/<kind>``, else
    ``~/.cache/deeparch/<kind>``: where deeparch keeps what it downloads."""
    env = os.environ.get(variable)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "deeparch" / kind


def cache_dir() -> Path:
    """The folder that holds every dataset: ``$DEEPARCH_DATA`` or the user cache."""
    return user_cache("data", "DEEPARCH_DATA")


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name``: ``<root or cache_dir()>/<name>``."""
    base = Path(root).expanduser() if root is not None else cache_dir()
    return base / name


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Checksum:
    """The digest a file must have: all of it, or (``prefix``) its leading hex digits."""

    algorithm: str | None = None
    expected: str | None = None
    prefix: bool = False

    def matches(self, path: Path) -> bool:
        return self.expected is None or self.agrees(file_digest(path, self.algorithm))

    def agrees(self, digest: str) -> bool:
        return digest.startswith(self.expected) if self.prefix else digest == self.expected

    def describe(self) -> str:
        name = self.algorithm.upper() if self.algorithm else ""
        return (f"{name} checksum (expected a digest starting {self.expected}"
                if self.prefix else f"{name} checksum (expected {self.expected}")


def _expected(md5: str | None, sha256: str | None,
              sha256_prefix: str | None = None) -> _Checksum:
    if sha256:
        return _Checksum("sha256", sha256.lower())
    if md5:
        return _Checksum("md5", md5.lower())
    if sha256_prefix:
        return _Checksum("sha256", sha256_prefix.lower(), prefix=True)
    return _Checksum()


def download_file(url: str, dest: str | os.PathLike, *, md5: str | None = None,
                  sha256: str | None = None, sha256_prefix: str | None = None,
                  timeout: float = 60.0, manual_hint: str | None = None,
                  folder_hint: str = "choose another data folder",
                  progress: bool | None = False) -> Path:
    """Fetch ``url`` into ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    A ``dest`` that already exists with the right checksum is kept as it is.
    ``sha256_prefix``: the file's SHA-256 must start with these hex digits (torchvision
    publishes 8 or 10 of them in its file names). ``manual_hint`` replaces the default
    "put <file> in <folder>" advice of the offline error (``fetch`` uses it to name every
    file of a dataset); ``folder_hint`` is the advice when ``dest``'s folder cannot be
    made. ``progress``: a tqdm bar on stderr -- True always, None only when stderr is a
    terminal, False never.
    Raises :class:`DownloadError` when offline, on an HTTP error, an interrupted
    transfer (the ``.part`` is kept for the next call) or a checksum mismatch (the
    ``.part`` is deleted).
    """
    dest = Path(dest)
    check = _expected(md5, sha256, sha256_prefix)
    if dest.is_file() and check.matches(dest):
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {dest.parent} for {dest.name} "
                            f"({exc.strerror or exc}); {folder_hint}.") from exc
    part = dest.with_name(dest.name + ".part")
    hint = manual_hint or f"download {dest.name} from {url} by hand and put it in {dest.parent}"

    for _attempt in range(2):  # a second attempt only after a 416 on a bad partial file
        offset = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": "deeparch"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                # The partial file may already hold everything; the checksum decides.
                if check.expected is not None and check.matches(part):
                    os.replace(part, dest)
                    return dest
                part.unlink()
                continue
            raise DownloadError(f"could not download {url}: the server answered HTTP "
                                f"{exc.code} ({exc.reason}); {hint}.") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise DownloadError(f"could not reach {url} ({reason}), so nothing was "
                                f"downloaded; {hint}, or try again when online.") from exc
        with response:
            _receive(response, part, offset, url, progress)
        break
    else:  # pragma: no cover - two 416 answers in a row
        raise DownloadError(f"the server of {url} refused to resume and to restart; {hint}.")

    if check.expected is not None:
        actual = file_digest(part, check.algorithm)
        if not check.agrees(actual):
            part.unlink()
            raise DownloadError(f"{url} does not match its published {check.describe()}, "
                                f"got {actual}), so it was deleted; try again later, or "
                                f"{hint}.")
    os.replace(part, dest)
    log.info("downloaded %s", dest)
    return dest


def _progress_bar(enabled: bool | None, name: str, total: int | None, initial: int):
    """A tqdm bar in bytes on stderr, or None (``enabled`` None: only on a terminal)."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=name, file=sys.stderr, unit="B",
                unit_scale=True, unit_divisor=1024, leave=False, dynamic_ncols=True,
                mininterval=0.2)


def _receive(response, part: Path, offset: int, url: str,
             progress: bool | None = False) -> None:
    """Write the body of ``response`` to ``part``, appending after ``offset`` on a 206."""
    status = getattr(response, "status", None) or response.getcode()
    resumed = bool(offset) and status == 206 and _range_start(response) == offset
    if offset and not resumed:
        log.info("server did not resume %s; starting again", url)
    length = response.headers.get("Content-Length")
    start = offset if resumed else 0
    total = start + int(length) if length is not None and length.isdigit() else None
    bar = _progress_bar(progress, part.name[:-len(".part")], total, start)
    received = 0
    try:
        with open(part, "ab" if resumed else "wb") as fh:
            while True:
                try:
                    block = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"the download of {url} was interrupted ({exc!r}); "
                                        f"the part received was kept in {part}, so running "
                                        f"again resumes it.") from exc
                if not block:
                    break
                fh.write(block)
                received += len(block)
                if bar is not None:
                    bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()
    if length is not None and length.isdigit() and received != int(length):
        raise DownloadError(f"the download of {url} stopped after {received} of {length} "
                            f"bytes; the part received was kept in {part}, so running "
                            f"again resumes it.")


def _range_start(response) -> int | None:
    """The first byte of a ``Content-Range: bytes a-b/n`` answer, or None."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def extract_archive(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[Path]:
    """Unpack a (gzipped) tar file into ``dest_dir`` safely; return the top-level paths.

    Members with an absolute path, a ``..`` component, links or device files are
    refused (:class:`DataError`) before anything is written. Extraction happens in a
    temporary folder inside ``dest_dir`` and is moved into place only when complete.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            dest_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest_dir))
            try:
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
                tops = sorted(tmp.iterdir())
                for top in tops:
                    _merge_move(top, dest_dir / top.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive} is not a readable tar archive ({exc}); delete it and "
                        f"download it again.") from exc
    except OSError as exc:
        raise DataError(f"cannot extract {archive} into {dest_dir} "
                        f"({exc.strerror or exc}); check the disk space and permissions.") from exc
    return [dest_dir / top.name for top in tops]


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive} holds the unsafe member {member.name!r} (an absolute "
                        f"path or '..'), so nothing was extracted; do not use this archive.")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive} holds {member.name!r}, which is a link or a special "
                        f"file, so nothing was extracted; do not use this archive.")


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``; folders are merged, files replace older ones."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
    else:
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(src, dst)


def manual_hint(name: str, resources: tuple[Resource, ...], home: Path) -> str:
    """Advice for fetching a dataset by hand: the exact files, the URLs, the folder."""
    files = ", ".join(r.url for r in resources)
    unpack = " and extract it there" if all(r.extract for r in resources) else ""
    return f"download {files} by hand into {home}{unpack}"


def fetch(name: str, root: str | os.PathLike | None = None, *, binary: bool = False) -> Path:
    """Download (and unpack) the files of dataset ``name`` into ``dataset_dir(name, root)``.

    ``binary=True`` fetches the binary CIFAR archive instead of the python one.
    Returns the dataset's folder.
    """
    table = BINARY_SOURCES if binary else SOURCES
    if name not in table:
        known = ", ".join(sorted(table))
        raise DataError(f"there is nothing to download for dataset {name!r}; "
                        f"the downloadable ones are {known}.")
    home = dataset_dir(name, root)
    resources = table[name]
    hint = manual_hint(name, resources, home)
    for resource in resources:
        dest = home / resource.filename
        log.info("fetching %s", resource.url)
        download_file(resource.url, dest, md5=resource.md5, sha256=resource.sha256,
                      manual_hint=hint)
        if resource.extract:
            extract_archive(dest, home)
    return home


__all__ = [
    "BINARY_SOURCES", "Resource", "SOURCES", "cache_dir", "dataset_dir", "download_file",
    "extract_archive", "fetch", "file_digest", "manual_hint",
]
