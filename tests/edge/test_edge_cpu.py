"""The CPU's features are read from the machine, and the int8 decision follows them."""
import builtins
import io

import pytest

from deeparch.edge import cpu as cpumod
from deeparch.edge._deps import available, require
from deeparch.errors import MissingDependencyError


def _fake(flags, arch="x86_64"):
    return cpumod.CPU("test cpu", arch, 2, frozenset(flags.split()))


@pytest.mark.parametrize("flags,vnni", [
    ("sse4_2 avx avx2 fma", False),                       # the AMD EPYC of the issue: AVX2 only
    ("avx2 avx512f avx512bw", False),                     # AVX-512 without VNNI still saturates
    ("avx2 avx512f avx512_vnni", True),
    ("avx2 avx_vnni", True),                              # Alder Lake style AVX-VNNI
    ("avx2 avx512f amx_tile amx_int8 amx_bf16", True),
])
def test_vnni_and_reduce_range_follow_the_flags(flags, vnni):
    cpu = _fake(flags)
    assert cpu.vnni is vnni
    assert cpumod.reduce_range(cpu) is (not vnni)


def test_arm_dot_product():
    assert _fake("fp asimd asimddp", arch="aarch64").vnni
    assert not _fake("fp asimd", arch="aarch64").vnni


def test_the_real_cpu_is_read_not_assumed():
    cpu = cpumod.cpu_info()
    d = cpu.to_dict()
    assert d["cores"] >= 1 and d["arch"] and d["model"]
    assert set(d["features"]) <= cpu.flags
    with open("/proc/cpuinfo") as f:
        text = f.read()
    assert ("avx2" in text.split()) == ("avx2" in cpu.flags)


def test_an_unreadable_cpuinfo_gives_no_features(monkeypatch):
    real_open = builtins.open

    def fake_open(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            raise PermissionError(13, "denied")
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", fake_open)
    cpu = cpumod.cpu_info()
    assert not cpu.flags and not cpu.vnni and cpumod.reduce_range(cpu)


def test_arm_cpuinfo_is_parsed(monkeypatch):
    text = "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd0c\n"
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: io.StringIO(text)
                        if str(p) == "/proc/cpuinfo" else real_open(p, *a, **k))
    assert "asimddp" in cpumod.cpu_info().flags


def test_a_missing_optional_package_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'deeparch\[edge\]'"):
        require("no_such_module_deeparch", "int8 quantization")
    assert not available("no_such_module_deeparch")
