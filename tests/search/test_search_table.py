"""The benchmark table (deeparch.search.table): a synthetic table, the real analog-nasbench
one, and the restricted unpickler that reads it."""
from __future__ import annotations

import os
import pickle
import random
import statistics
import sys

import pytest

from deeparch.errors import DataError, MissingDependencyError, SearchError
from deeparch.search import table as table_mod
from deeparch.search.spaces import space
from deeparch.search.table import Table, load_table, read_anb

BEST = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
        "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")


# -- records pickled as analog-nasbench pickles them -----------------------------------------
class Architecture:
    pass


class DriftMeasurement:
    pass


def anb_bytes(records) -> bytes:
    """``records`` pickled as if this module's classes were analognasbench.data's (protocol 3
    names classes in text lines, so the module can be swapped in the bytes)."""
    data = pickle.dumps(records, protocol=3)
    for cls in (Architecture, DriftMeasurement):
        data = data.replace(f"c{cls.__module__}\n{cls.__name__}\n".encode(),
                            f"canalognasbench.data\n{cls.__name__}\n".encode())
    return data


def record(key, acc):
    a = Architecture()
    a.architecture, a.baseline_accuracy = key, acc
    d = DriftMeasurement()
    d.value, d.uncertainty = 1.0, 0.5
    a.baseline_drift_60 = d
    return a


def write(tmp_path, records, name="data.anb"):
    path = tmp_path / name
    path.write_bytes(anb_bytes(records) if not isinstance(records, bytes) else records)
    return path


# -- the synthetic table ---------------------------------------------------------------------
def test_synthetic_nb201_table():
    sp = space("nb201")
    t = Table.synthetic(sp, seed=0)
    assert len(t) == 15_625
    again = Table.synthetic(sp, seed=0)
    assert list(t.items()) == list(again.items())             # deterministic
    other = Table.synthetic(sp, seed=1)
    assert [v for _, v in t.items()] != [v for _, v in other.items()]
    arch, acc = t.best()
    assert acc == max(v for _, v in t.items()) and t.accuracy(arch) == acc
    assert t.accuracy(sp.encode(arch)) == acc                 # by string too
    assert t.rank(arch) == 1
    assert all(10.0 <= v <= 95.0 for _, v in t.items())
    for a, v in t.items():                                     # cut-off cells: chance
        assert (v == 10.0) == (not sp.connected(a))
    assert "synthetic" in t.source


def test_synthetic_table_is_smooth():
    """Neighbours (one mutation apart) differ less than random pairs: something to search."""
    sp = space("nb201")
    t = Table.synthetic(sp, seed=3)
    rng = random.Random(0)
    near, far = [], []
    while len(near) < 400:
        a = sp.sample(rng)
        b = sp.mutate(a, rng)
        if not (sp.connected(a) and sp.connected(b)):
            continue
        c = sp.sample(rng)
        if not sp.connected(c):
            continue
        near.append(abs(t.accuracy(a) - t.accuracy(b)))
        far.append(abs(t.accuracy(a) - t.accuracy(c)))
    assert statistics.mean(near) < 0.75 * statistics.mean(far)


@pytest.mark.parametrize("name", ["nasnet", "mobile"])
def test_synthetic_tables_of_other_spaces(name):
    sp = space(name)
    with pytest.raises(SearchError, match="give n"):
        Table.synthetic(sp, seed=0)
    t = Table.synthetic(sp, seed=0, n=30)
    assert len(t) == 30
    arch, acc = t.best()
    assert t.accuracy(sp.encode(arch)) == acc
    assert list(t.items()) == list(Table.synthetic(name, seed=0, n=30).items())


def test_synthetic_bad_arguments():
    sp = space("nb201")
    with pytest.raises(SearchError, match="only 15625"):
        Table.synthetic(sp, 0, n=20_000)
    with pytest.raises(SearchError, match=">= 1"):
        Table.synthetic(sp, 0, n=0)


def test_table_lookups_fail_clearly():
    sp = space("nb201")
    t = Table.synthetic(sp, 0)
    with pytest.raises(SearchError, match="unknown operation"):
        t.accuracy("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    with pytest.raises(SearchError):
        t.accuracy((9, 9, 9, 9, 9, 9))
    small = Table(sp, {(3,) * 6: 90.0})
    with pytest.raises(SearchError, match="not in this table of 1"):
        small.accuracy((0,) * 6)
    assert (3,) * 6 in small and (0,) * 6 not in small and "junk" not in small
    with pytest.raises(SearchError, match="at least one"):
        Table(sp, {})


# -- reading data.anb ------------------------------------------------------------------------
def test_reads_a_well_formed_file(tmp_path):
    # the file's keys are NASLib op indices: skip 0, none 1, conv3x3 2, conv1x1 3, avgpool 4;
    # edges 0->1, 0->2, 0->3, 1->2, 1->3, 2->3
    path = write(tmp_path, {(2, 2, 0, 2, 3, 2): record((2, 2, 0, 2, 3, 2), 94.0),
                            (1, 1, 1, 1, 1, 1): record((1, 1, 1, 1, 1, 1), 10.0),
                            (0, 1, 4, 3, 1, 1): record((0, 1, 4, 3, 1, 1), 55.5)})
    t = load_table(path)
    assert len(t) == 3
    assert t.best() == (space("nb201").decode(BEST), 94.0)
    assert t.accuracy("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") == 10.0
    # 0->1 skip, 0->2 none, 0->3 avgpool, 1->2 conv1x1, 1->3 none, 2->3 none
    assert t.accuracy("|skip_connect~0|+|none~0|nor_conv_1x1~1|"
                      "+|avg_pool_3x3~0|none~1|none~2|") == 55.5
    assert "analognasbench" not in sys.modules or \
        "analognasbench.data" not in sys.modules                # the package is never run


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path, pickle.dumps({(0,) * 6: _Exploit(marker)}))
    with pytest.raises(DataError, match=r"names (posix|nt|os)\.system.*refused") as info:
        load_table(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    # a record class of another module, and builtins, are refused the same way
    evil = anb_bytes({(0,) * 6: record((0,) * 6, 50.0)}).replace(
        b"canalognasbench.data\nArchitecture\n", b"cbuiltins\neval\n")
    with pytest.raises(DataError, match="builtins.eval"):
        read_anb(write(tmp_path, evil, "evil.anb"))


@pytest.mark.parametrize("content, why", [
    (b"", "not a readable"),
    (b"not a pickle at all", "not a readable"),
    (pickle.dumps([1, 2, 3]), "holds a list"),
    (pickle.dumps({"cell": 1}), "cell key"),
    (pickle.dumps({(0, 0, 0, 0, 0, 7): 1}), "cell key"),
])
def test_refuses_corrupt_files(tmp_path, content, why):
    with pytest.raises(DataError, match=why):
        load_table(write(tmp_path, content))


def test_refuses_truncated_and_bad_values(tmp_path):
    good = anb_bytes({(0,) * 6: record((0,) * 6, 50.0), (2,) * 6: record((2,) * 6, 93.0)})
    with pytest.raises(DataError, match="not a readable"):
        load_table(write(tmp_path, good[: len(good) // 2], "cut.anb"))
    with pytest.raises(DataError, match="outside 0..100"):
        load_table(write(tmp_path, {(0,) * 6: record((0,) * 6, 150.0)}, "big.anb"))
    with pytest.raises(DataError, match="no numeric baseline_accuracy"):
        load_table(write(tmp_path, {(0,) * 6: record((0,) * 6, "high")}, "str.anb"))
    with pytest.raises(DataError, match="cannot read"):
        load_table(tmp_path / "missing.anb")


def test_numpy_scalars_are_allowed_and_objects_are_not(tmp_path):
    np = pytest.importorskip("numpy", reason="numpy scalars need numpy")
    rec = record((0,) * 6, np.float64(61.5))
    t = load_table(write(tmp_path, {(0,) * 6: rec}, "np.anb"))
    assert t.accuracy((1,) * 6) == 61.5
    objs = anb_bytes({(0,) * 6: record((0,) * 6, np.array([1.0]))})
    with pytest.raises(DataError, match="refused"):
        load_table(write(tmp_path, objs, "array.anb"))


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(table_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'deeparch\[search\]'"):
        load_table()


# -- the real table ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    try:
        return load_table()
    except MissingDependencyError:
        pytest.skip("analog-nasbench is not installed (pip install 'deeparch[search]'): "
                    "the real NAS-Bench-201 table cannot be read")


def test_real_table_facts(real):
    """The issue's facts: 15,625 cells, best 94.07, median 90.41."""
    sp = space("nb201")
    assert len(real) == 15_625
    assert {a for a, _ in real.items()} == set(sp.enumerate())
    arch, acc = real.best()
    assert round(acc, 2) == 94.07
    assert round(real.median(), 2) == 90.41
    assert sp.encode(arch) == BEST
    assert real.accuracy(BEST) == acc


def test_real_table_key_order(real):
    """The conversion from the file's NASLib indices is right: exactly the cells whose output
    node is cut off from the input score chance (10%), and the uniform cells read as their
    operations (all-conv3x3 is good, all-none chance)."""
    sp = space("nb201")
    chance = {a for a, v in real.items() if v == 10.0}
    assert len(chance) == 341
    assert chance == {a for a in sp.enumerate() if not sp.connected(a)}
    assert real.accuracy((3,) * 6) > 93.0            # all nor_conv_3x3
    assert real.accuracy((0,) * 6) == 10.0           # all none
    assert real.accuracy((1,) * 6) == pytest.approx(60.7836)     # all skip_connect
    assert real.accuracy((4,) * 6) == pytest.approx(50.2876)     # all avg_pool_3x3
    assert load_table() is real                      # read once, kept
    assert "analognasbench.data" not in sys.modules
