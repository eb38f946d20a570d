"""Every limit of the pattern language, the input size and the augmentation tools: a few
bytes of input give one sentence (a DeeparchError), at once, in bounded memory."""
import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import deeparch
from deeparch import pattern
from deeparch.data.augment import PRE_AUGMENT_MAX_BYTES, Augment, pre_augment
from deeparch.errors import DataError, InputSizeError, PatternError
from deeparch.viz import preview


def refused(spec, token, words, **kw):
    """from_pattern(spec) raises a PatternError at once: one sentence naming the limit,
    then the pattern and a caret under ``token``."""
    start = time.perf_counter()
    with pytest.raises(PatternError) as info:
        deeparch.from_pattern(spec, **kw)
    assert time.perf_counter() - start < 2.0
    lines = str(info.value).splitlines()
    assert len(lines) == 3, str(info.value)
    assert words in lines[0] and "\n" not in info.value.reason
    assert set(lines[2].strip()) == {"^"}
    col = lines[2].index("^")
    assert lines[1][col:].startswith(token), (lines[1], lines[2])
    return lines[0]


def test_repeat_count():
    msg = refused("INPUT(8x8x1) -> [CONV3-8]*1001 -> FC-2", "1001", "the limit of 1,000")
    assert "repeat count 1001" in msg
    refused("INPUT(8x8x1) -> RELU*" + "9" * 5000, "99999", "the limit of 1,000")
    assert len(deeparch.from_pattern("INPUT(8x8x1) -> RELU*1000 -> FC-2")) == 1002


def test_nesting_depth_is_checked_before_recursing():
    spec = "INPUT(8x8x1) -> " + "[" * 33 + "RELU" + "]" * 33
    refused(spec, "[RELU", "the limit is 32")
    refused("[" * 100_000, "[", "the limit is 32")                # no RecursionError
    ok = "INPUT(8x8x1) -> " + "[" * 32 + "RELU" + "]" * 32 + " -> FC-2"
    assert len(deeparch.from_pattern(ok)) == 3         # relu, flatten, fc


def test_expanded_layers_are_counted_before_expanding():
    spec = "INPUT(8x8x1) -> [[[[CONV3-8]*100]*100]*100]*100"
    msg = refused(spec, "100]*100", "the limit is 10,000")
    assert "100,000,001 layers" in msg             # with the INPUT
    # the caret is under the innermost repeat that crosses the limit (100 x 100 x 100)
    lines = str(pytest.raises(PatternError, deeparch.from_pattern, spec).value).splitlines()
    counts = [i + 1 for i in range(len(spec)) if spec.startswith("*100", i)]
    assert lines[2].index("^") - 2 == counts[2]
    refused("INPUT(8x8x1) -> [RELU]*1000 -> [[TANH]*1000]*10 -> FC-2", "10 -> FC",
            "10,000")
    many = "INPUT(4x4x1) -> " + " -> ".join(["RELU"] * 10_001)
    refused(many, "RELU", "the limit is 10,000")
    # a repeat of 0 expands to nothing, however much it holds
    assert len(deeparch.from_pattern("INPUT(4x4x1) -> [[[RELU]*1000]*1000]*0 -> FC-2")) == 2


def test_spec_length():
    spec = "INPUT(8x8x1) -> " + "RELU -> " * 20_000 + "FC-2"
    msg = refused(spec, "", "the limit is 100,000")
    assert f"{len(spec):,} characters" in msg
    assert len(str(pytest.raises(PatternError, deeparch.from_pattern, spec).value)) < 400


@pytest.mark.parametrize("spec,token,words", [
    ("INPUT(8x8x3) -> CONV3-99999999999999999999", "CONV3-9", "above the limit of 1,000,000"),
    ("INPUT(8x8x3) -> CONV3-0", "CONV3-0", "at least 1"),
    ("INPUT(8x8x3) -> FC-0", "FC-0", "at least 1"),
    ("INPUT(8x8x3) -> CONV99999999-8", "CONV9", "kernel size of 99999999 is above the limit "
     "of 65,536"),
    ("INPUT(8x8x3) -> CONV3-8(s=0)", "CONV3-8", "CONV3-8(s=0): the stride must be at least 1"),
    ("INPUT(8x8x3) -> CONV3-8(s=99999999999999999999)", "CONV3", "above the limit of 65,536"),
    ("INPUT(8x8x3) -> CONV3-8(d=0)", "CONV3", "at least 1"),
    ("INPUT(8x8x3) -> CONV3-8(g=0)", "CONV3", "at least 1"),
    ("INPUT(8x8x3) -> CONV3-8(p=99999999)", "CONV3", "above the limit of 65,536"),
    ("INPUT(8x8x3) -> CONV3-8(s=abc)", "CONV3", "must be a whole number"),
    ("INPUT(8x8x3) -> CONV3-8(s=²)", "CONV3", "must be a whole number"),
    ("INPUT(8x8x3) -> CONV3-8(p=²)", "CONV3", "padding must be same, valid or a number"),
    ("INPUT(8x8x3) -> CONV3-8(bias=maybe)", "CONV3", "bias must be 0 or 1"),
    ("INPUT(8x8x3) -> PWCONV-8(g=3)", "PWCONV", "must divide"),
    ("INPUT(8x8x3) -> DWCONV3(g=3)", "DWCONV", "takes no groups option"),
    ("INPUT(8x8x3) -> POOL0", "POOL0", "at least 1"),
    ("INPUT(8x8x3) -> POOL2/0", "POOL2/0", "at least 1"),
    ("INPUT(8x8x3) -> MAXPOOL3/2(p=1)", "MAXPOOL", "pooling takes no options"),
    ("INPUT(8x8x4) -> GN0", "GN0", "at least 1"),
    ("INPUT(8x8x4) -> GN99999999999999", "GN9", "above the limit of 1,000,000"),
    ("INPUT(8x8x1) -> CONV1-8(p=40000) -> CONV1-8(p=40000)", "CONV1-8(p=40000) -> CONV1",
     "the limit is 65,536 on a side"),
])
def test_integer_literals_are_bounded(spec, token, words):
    refused(spec, token, words)


@pytest.mark.parametrize("spec,words", [
    ("INPUT(99999x99999x3) -> RELU", "a height of 99999 is above the limit of 65,536"),
    ("INPUT(65536x65536x3) -> RELU", "the limit is 4,294,967,296"),
    ("INPUT(8x8x200000) -> RELU", "above the limit of 100,000"),
    ("INPUT(8x8x" + "9" * 5000 + ") -> RELU", "above the limit of 100,000"),
    ("INPUT(0x8) -> RELU", "at least 1"),
    ("INPUT(²x2) -> RELU", "INPUT takes HxWxC"),
])
def test_absurd_input_in_the_pattern(spec, words):
    refused(spec, "INPUT(", words)


def test_absurd_input_size_argument():
    for bad in [(3, 10 ** 12, 10 ** 12), (3, 65536, 65536), (0, 8, 8), (3, 8), 5, "3,8,8",
                (3, 8.5, 8)]:
        with pytest.raises(InputSizeError):
            deeparch.from_pattern("CONV3-8 -> FC-2", input_size=bad)
    assert deeparch.from_pattern("CONV3-8 -> FC-2", input_size=(3, 8, 8)).input_size == (3, 8, 8)


@pytest.mark.parametrize("spec,token", [
    ("INPUT(64x64x3) -> FC-1000000", "FC-1000000"),
    ("INPUT(8x8x3) -> CONV3-1000000 -> CONV1-1000000", "CONV1-1000000"),
    ("INPUT(224x224x3) -> [conv3-64]*2 -> maxpool -> FC-4096", "FC-4096"),
])
def test_parameters_are_counted_before_anything_is_allocated(spec, token):
    msg = refused(spec, token, "the limit is 2,147,483,648 (8.6 GB)")
    assert "the pattern needs " in msg and "B at 4 bytes)" in msg


def test_parameter_message_gives_the_whole_count():
    msg = refused("INPUT(64x64x3) -> FC-1000000 -> RELU -> FC-1000", "FC-1000000", "limit")
    assert "needs 13,289,001,000 parameters (53.2 GB at 4 bytes)" in msg   # all layers
    # the same check on the meta device (the summary) and for training's input_size=
    with pytest.raises(PatternError, match="12,289,000,000 parameters"):
        deeparch.summary("INPUT(64x64x3) -> FC-1000000")
    with pytest.raises(PatternError, match="12,289,000,012 parameters"):   # with CONV1-3's
        deeparch.from_pattern("CONV1-3 -> FC-1000000", input_size=(3, 64, 64))
    # a width over MAX_WIDTH is refused before any count
    refused("INPUT(8x8x3) -> FC-100000000", "FC-100000000", "above the limit of 1,000,000")


def test_the_planned_count_is_exact_at_the_limit():
    spec = "INPUT(1x1x46340) -> FC-46340"        # 46340 * 46341 = 2,147,441,940 < 2**31
    layers, size, params = pattern.plan(spec)
    assert params == 46340 * 46341 <= pattern.MAX_PARAMS
    net = deeparch.from_pattern(spec, device="meta")
    assert sum(p.numel() for p in net.parameters()) == params
    refused("INPUT(1x1x46341) -> FC-46341", "FC-46341", "limit")


def test_long_and_multiline_patterns_quote_one_line_around_the_caret():
    spec = "INPUT(8x8x1)\n-> " + "RELU\t-> " * 500 + "RELUU -> FC-2"
    with pytest.raises(PatternError) as info:
        deeparch.from_pattern(spec)
    lines = str(info.value).splitlines()
    assert len(lines) == 3 and "unknown layer 'RELUU'" in lines[0]
    assert len(lines[1]) < 200 and lines[1].lstrip().startswith("...")
    col = lines[2].index("^")
    assert lines[1][col:col + 5] == "RELUU" and lines[2].count("^") == 5


# -- in a child process, under a memory limit and a timeout --------------------------------

CHILD = textwrap.dedent(r"""
    import json, resource, sys, time
    import torch
    import deeparch
    from deeparch.data.augment import Augment, pre_augment, augment_from_spec
    from deeparch.viz import preview
    from deeparch.errors import DeeparchError
    deeparch.summary("INPUT(8x8x1) -> CONV3-4 -> FC-2")      # warm every lazy import
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status")
              if l.startswith("VmSize"))
    limit = vm + 2 * 2 ** 30                                   # 2 GiB above what is mapped
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    cases = {
        "repeats": lambda: deeparch.from_pattern("[[[[CONV3-8]*100]*100]*100]*100"),
        "nesting": lambda: deeparch.from_pattern("[" * 40000 + "RELU" + "]" * 40000),
        "fc": lambda: deeparch.from_pattern("INPUT(8x8x3) -> FC-100000000"),
        "fc_params": lambda: deeparch.from_pattern("INPUT(64x64x3) -> FC-1000000"),
        "conv": lambda: deeparch.from_pattern("INPUT(8x8x3) -> CONV3-1000000 -> CONV3-1000000"),
        "overflow": lambda: deeparch.from_pattern("INPUT(8x8x3) -> CONV3-99999999999999999999"),
        "input": lambda: deeparch.summary("vgg16", input_size="3,99999999999,99999999999"),
        "input30": lambda: deeparch.summary("vgg16", input_size=(3, 10 ** 30, 4)),
        # within MAX_PARAMS (8.6 GB) but not within this process's memory: one sentence too
        "alloc": lambda: deeparch.from_pattern("INPUT(1x1x46340) -> FC-46340"),
        "expand": lambda: pre_augment(x, None, Augment(horizontal_flip=True), 10 ** 9),
        "expand_alloc": lambda: pre_augment(torch.zeros(1000, 3, 32, 32, dtype=torch.uint8),
                                            None, Augment(), 2000),   # 6.1 GB
        "preview": lambda: preview(Augment(), x, "never.png", n=10 ** 9),
        "cutouts": lambda: augment_from_spec("cutout=2,cutout_count=1000000000"),
    }
    out = {}
    for name, fn in cases.items():
        start = time.perf_counter()
        try:
            fn()
            out[name] = ["no error", 0]
        except DeeparchError as exc:
            out[name] = [type(exc).__name__ + ": " + str(exc).splitlines()[0],
                         time.perf_counter() - start]
        except BaseException as exc:   # anything else is a failure of the test
            out[name] = ["UNCLEAN " + type(exc).__name__ + ": " + str(exc)[:200], 0]
    print(json.dumps({"limit_gib": limit / 2 ** 30, "cases": out}))
""")


def test_nasty_inputs_fail_cleanly_under_a_memory_limit(tmp_path):
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    cases = result["cases"]
    for name, (what, seconds) in cases.items():
        assert what.split(":")[0] in ("PatternError", "InputSizeError", "DataError"), (name, what)
        assert seconds < 5, (name, seconds)
    assert "100,000,000 layers" in cases["repeats"][0]
    assert "nests groups 33 deep" in cases["nesting"][0]
    assert "36.0 TB" in cases["conv"][0] and "49.2 GB" in cases["fc_params"][0]
    assert "not enough memory" in cases["alloc"][0]
    assert "not enough memory" in cases["expand_alloc"][0]
    assert "8.0 GiB" in cases["expand"][0]
    assert not (tmp_path / "never.png").exists()


# -- augmentation and preview bounds --------------------------------------------------------

def test_pre_augment_checks_the_output_size_before_allocating():
    x = torch.zeros(60_000, 1, 28, 28, dtype=torch.uint8)
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        pre_augment(x, torch.zeros(60_000, dtype=torch.long), Augment(horizontal_flip=True),
                    10 ** 9)
    msg = str(info.value)
    assert time.perf_counter() - start < 1
    assert "60,000 images 1,000,000,000 times" in msg and "8.0 GiB" in msg
    assert "expand at most" in msg and "\n" not in msg
    per_copy = 60_000 * 28 * 28 + 60_000 * 8
    assert f"expand at most {PRE_AUGMENT_MAX_BYTES // per_copy:,} times" in msg
    for bad in (0, -3, 2.5, True, None):
        with pytest.raises(DataError, match="times"):
            pre_augment(x[:2], None, Augment(), bad)
    with pytest.raises(DataError, match="batch_size"):
        pre_augment(x[:2], None, Augment(horizontal_flip=True), 2, batch_size=0)
    with pytest.raises(DataError, match="seed"):
        pre_augment(x[:2], None, Augment(horizontal_flip=True), 2, seed=10 ** 30)


def test_pre_augment_writes_through_atomic_path(tmp_path, monkeypatch):
    """A crash while writing leaves neither a half file nor a temporary one."""
    import numpy as np
    target = tmp_path / "aug.npz"

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(deeparch.DeeparchError, match="disk is full"):
        pre_augment(torch.zeros(2, 1, 4, 4), None, Augment(), 2, path=target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw,words", [
    (dict(n=0), "preview n=0"), (dict(n=-1), "preview n=-1"), (dict(samples=-2), "samples=-2"),
    (dict(n=10 ** 9), "1,024"), (dict(samples=10 ** 9), "1,024"),
    (dict(n=100, samples=100), "10,100 pictures"), (dict(seed=-1), "seed=-1"),
    (dict(seed=2 ** 64), "seed="),
])
def test_preview_bounds(tmp_path, kw, words):
    args = dict(n=2, samples=2, seed=0) | kw
    with pytest.raises(DataError, match=words):
        preview(Augment(horizontal_flip=True), torch.zeros(4, 1, 8, 8), tmp_path / "p.png", **args)
    assert list(tmp_path.iterdir()) == []


def test_preview_and_grid_bound_bytes_and_pixels(tmp_path):
    from deeparch.viz import save_image_grid
    big = torch.zeros(1, 3, 16384, 16384, dtype=torch.uint8).expand(8, -1, -1, -1)
    with pytest.raises(DataError, match="GiB"):
        preview(Augment(), big, tmp_path / "p.png", n=8, samples=1)
    with pytest.raises(DataError, match="1,024"):
        save_image_grid(torch.zeros(2000, 1, 2, 2), tmp_path / "g.png")
    with pytest.raises(DataError, match="pixels"):
        save_image_grid(torch.zeros(4, 1, 2, 2), tmp_path / "g.png", dpi=100_000)
    with pytest.raises(DataError, match="dpi"):
        save_image_grid(torch.zeros(4, 1, 2, 2), tmp_path / "g.png", dpi=float("nan"))
    assert list(tmp_path.iterdir()) == []
