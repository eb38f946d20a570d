"""A tabular benchmark: the CIFAR-10 accuracy of every NAS-Bench-201 cell, without training.

``load_table()`` reads ``data.anb`` of the PyPI package ``analog-nasbench`` (0.1.3; the
optional extra ``pip install 'deeparch[search]'``): all 15,625 NAS-Bench-201 cells, each
trained 200 epochs on CIFAR-10 by the AnalogNAS-Bench authors (IBM Research; the source
repository, IBM/analog-nas, is under the Apache License 2.0, the wheel itself names no
licence). ``Table.accuracy`` is their ``baseline_accuracy``: the test accuracy in percent
(best 94.07, median 90.41; the 341 cells whose output node is cut off from the input score
10.0, chance).

The file is a pickle. It is read with a restricted unpickler that builds only what the file
should contain: the package's ``Architecture`` and ``DriftMeasurement`` records (as inert
stand-ins defined here -- the package's own module, which needs pkg_resources and pandas,
is never imported, and ``AnalogNASBench()`` is never called), plain containers and numbers,
and numpy scalars. A pickle that names any other class or function is refused with a
:class:`DataError` before anything it names is imported or run.

The file keys cells by NASLib's op indices (``naslib.search_spaces.nasbench201.conversions``:
edges ``0->1, 0->2, 0->3, 1->2, 1->3, 2->3``; ops ``skip_connect, none, nor_conv_3x3,
nor_conv_1x1, avg_pool_3x3``), which the AnalogNAS-Bench training script passes to NASLib's
``set_spec``. The table converts them to the ``nb201`` space's arch (and its string, the
benchmark's own ``|op~i|+|...|`` notation).

``Table.synthetic(space, seed)`` makes a small deterministic table of made-up accuracies for
tests (any space).
"""
from __future__ import annotations

import importlib.util
import io
import math
import os
import pickle
import random
import statistics
from pathlib import Path
from typing import Iterator

from ..errors import DataError, MissingDependencyError, SearchError

# NASLib's order (the file's keys) -> the nb201 space's order
NASLIB_EDGES = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))   # (target, source)
NASLIB_OPS = ("skip_connect", "none", "nor_conv_3x3", "nor_conv_1x1", "avg_pool_3x3")
MAX_FILE_BYTES = 64 * 1024 * 1024      # the real file is 5.6 MB
INSTALL = "pip install 'deeparch[search]'"


# -- the restricted unpickler -------------------------------------------------------------
class _Record:
    """An inert stand-in for the package's record classes: it only holds attributes."""

    def __init__(self, *args, **kwargs):      # never called by unpickling (NEWOBJ uses
        pass                                   # __new__, then BUILD sets __dict__)

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a record's state is not a dict")
        self.__dict__.update(state)


class Architecture(_Record):
    """Stand-in for ``analognasbench.data.Architecture`` (attributes only)."""


class DriftMeasurement(_Record):
    """Stand-in for ``analognasbench.data.DriftMeasurement`` (attributes only)."""


def _numpy_scalar(dtype, data=None):
    import numpy as np
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError("a numpy scalar of a non-numeric dtype")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar with bad data")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(name, align=False, copy=False):
    import numpy as np
    if not isinstance(name, str) or len(name) > 8:
        raise pickle.UnpicklingError("a numpy dtype that is not a plain number type")
    dt = np.dtype(name)
    if dt.kind not in "biuf":
        raise pickle.UnpicklingError("a numpy dtype that is not a plain number type")
    return dt


_ALLOWED = {
    ("analognasbench.data", "Architecture"): Architecture,
    ("analognasbench.data", "DriftMeasurement"): DriftMeasurement,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _Refused("a persistent id")


class _Refused(pickle.UnpicklingError):
    pass


def read_anb(path: str | os.PathLike) -> dict:
    """The records of an analog-nasbench ``data.anb`` file, read safely (see the module)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read the benchmark table {path}: {exc.strerror or exc}.") \
            from None
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path} is {size / 2**20:.0f} MiB; an analog-nasbench table is about "
                        f"5 MiB, so this is not one.")
    data = path.read_bytes()
    try:
        records = _RestrictedUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise DataError(f"{path} names {exc.args[0]}, which a benchmark table never needs: "
                        f"refused, and nothing it names was imported or run.") from None
    except Exception as exc:   # truncated, corrupt, or not a pickle at all
        raise DataError(f"{path} is not a readable analog-nasbench table "
                        f"({type(exc).__name__}: {str(exc)[:80]}).") from None
    if not isinstance(records, dict):
        raise DataError(f"{path} holds a {type(records).__name__}, not the table's dict of "
                        f"cells.")
    return records


def _from_naslib(key) -> tuple:
    by_edge = dict(zip(NASLIB_EDGES, key))
    from .space_nb201 import EDGES, OPS
    return tuple(OPS.index(NASLIB_OPS[by_edge[e]]) for e in EDGES)


def _to_naslib(arch) -> tuple:
    from .space_nb201 import EDGES, OPS
    by_edge = dict(zip(EDGES, arch))
    return tuple(NASLIB_OPS.index(OPS[by_edge[e]]) for e in NASLIB_EDGES)


def find_anb() -> Path:
    """Where the installed analog-nasbench keeps ``data.anb`` (found without importing it)."""
    try:
        spec = importlib.util.find_spec("analognasbench")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"the NAS-Bench-201 table comes from the package analog-nasbench, which is not "
            f"installed: {INSTALL}.")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "data.anb"
        if candidate.is_file():
            return candidate
    raise MissingDependencyError(
        f"analog-nasbench is installed but its data.anb is missing; reinstall it: {INSTALL}.")


# -- the table ------------------------------------------------------------------------------
class Table:
    """Accuracy (percent) of architectures of one space. ``source`` says where they come from."""

    def __init__(self, space, accuracies: dict, source: str = ""):
        self.space = space
        self._acc = dict(accuracies)
        self.source = source
        if not self._acc:
            raise SearchError("a benchmark table needs at least one architecture.")

    def __len__(self) -> int:
        return len(self._acc)

    def __contains__(self, arch) -> bool:
        try:
            return self.space.check(arch) in self._acc
        except SearchError:
            return False

    def __repr__(self) -> str:
        return f"<Table of {len(self)} {self.space.name} architectures: {self.source}>"

    def accuracy(self, arch) -> float:
        """The accuracy of ``arch`` (an arch of the table's space, or its string)."""
        arch = self.space.check(arch)
        try:
            return self._acc[arch]
        except KeyError:
            raise SearchError(f"{self.space.encode(arch)} is not in this table of "
                              f"{len(self)} architectures.") from None

    def items(self) -> Iterator[tuple[tuple, float]]:
        """``(arch, accuracy)`` pairs, in a fixed order."""
        return iter(self._acc.items())

    def archs(self) -> list[tuple]:
        return list(self._acc)

    def best(self) -> tuple[tuple, float]:
        """The most accurate architecture and its accuracy (ties: the first in order)."""
        arch = max(self._acc, key=self._acc.__getitem__)
        return arch, self._acc[arch]

    def median(self) -> float:
        return statistics.median(self._acc.values())

    def rank(self, arch) -> int:
        """1 for the best architecture; ties share the better rank."""
        acc = self.accuracy(arch)
        return 1 + sum(1 for v in self._acc.values() if v > acc)

    @classmethod
    def synthetic(cls, space, seed: int = 0, n: int | None = None) -> "Table":
        """A deterministic made-up table: accuracy a smooth function of the decisions (a
        random additive effect per decision value, pairwise effects between neighbouring
        decisions, squashed into 10..95) plus a little noise. For nb201 the cells whose
        output is cut off score 10.0, as in the real table. ``n`` architectures (all of a
        finite space when None; required for the others), sampled with ``seed``."""
        if isinstance(space, str):
            from .spaces import space as make_space
            space = make_space(space)
        rng = random.Random(f"deeparch-synthetic-{space.name}-{seed}")
        dec = space.decisions()
        size = space.size()
        if n is None:
            if size is None or size > 200_000:
                raise SearchError(f"the {space.name} space is too large to tabulate whole; "
                                  f"give n, the number of architectures to draw.")
            archs = list(space.enumerate())
        else:
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SearchError(f"n must be a whole number >= 1, not {n!r}.")
            if size is not None and n > size:
                raise SearchError(f"the {space.name} space has only {size} architectures, "
                                  f"fewer than n = {n}.")
            seen, archs, tries = set(), [], 0
            while len(archs) < n and tries < 50 * n:
                a = space.sample(rng)
                tries += 1
                if a not in seen:
                    seen.add(a)
                    archs.append(a)
        main = [[rng.gauss(0.0, 1.0) for _ in range(k)] for _, k in dec]
        pair = [[[rng.gauss(0.0, 0.3) for _ in range(dec[i + 1][1])] for _ in range(k)]
                for i, (_, k) in enumerate(dec[:-1])]
        scale = 1.0 / math.sqrt(max(1, len(dec)))
        nb201 = space.name == "nb201"
        acc = {}
        for a in archs:
            c = space.to_decisions(a)
            z = sum(main[i][v] for i, v in enumerate(c))
            z += sum(pair[i][c[i]][c[i + 1]] for i in range(len(c) - 1))
            z = z * scale * 1.5 + 1.5 + rng.gauss(0.0, 0.05)
            value = 10.0 + 85.0 / (1.0 + math.exp(-z))
            if nb201 and not space.connected(a):
                value = 10.0
            acc[a] = round(value, 4)
        return cls(space, acc, source=f"synthetic (seed {seed}, made-up accuracies)")


_CACHE: dict = {}


def load_table(path: str | os.PathLike | None = None) -> Table:
    """The NAS-Bench-201 CIFAR-10 table of analog-nasbench (``path``: a ``data.anb`` file;
    the installed package's when None). Read once per file and kept."""
    from .spaces import space as make_space
    path = Path(path) if path is not None else find_anb()
    try:
        stamp = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    except OSError as exc:
        raise DataError(f"cannot read the benchmark table {path}: {exc.strerror or exc}.") \
            from None
    if stamp in _CACHE:
        return _CACHE[stamp]
    records = read_anb(path)
    acc = {}
    for key, rec in records.items():
        if not (isinstance(key, tuple) and len(key) == 6
                and all(isinstance(v, int) and 0 <= v < 5 for v in key)):
            raise DataError(f"{path} has a cell key {key!r:.60}, not 6 op indices 0..4.")
        value = getattr(rec, "baseline_accuracy", None)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{path}: cell {key} has no numeric baseline_accuracy.") from None
        if not 0.0 <= value <= 100.0:
            raise DataError(f"{path}: cell {key} has accuracy {value}, outside 0..100.")
        acc[_from_naslib(key)] = value
    table = Table(make_space("nb201"), acc,
                  source=f"analog-nasbench 0.1.3 baseline_accuracy (200-epoch CIFAR-10 test "
                         f"accuracy), {path}")
    _CACHE[stamp] = table
    return table
