"""The search spaces: nb201, nasnet, mobile, plain (deeparch.search.spaces)."""
from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deeparch
from deeparch.errors import SearchError
from deeparch.search.spaces import SPACES, Space, find_space, space

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
BEST_NB201 = ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
              "+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|")


def all_spaces():
    return [space(n) for n in SPACES]


def choices_strategy(sp: Space):
    return st.tuples(*[st.integers(0, n - 1) for _, n in sp.decisions()])


# -- the shared interface, every space ------------------------------------------------------
@pytest.mark.parametrize("name", SPACES)
def test_space_by_name(name):
    sp = space(name)
    assert sp.name == name
    assert space(name.upper()).name == name
    dec = sp.decisions()
    assert dec and all(isinstance(k, str) and n >= 1 for k, n in dec)
    assert len({k for k, _ in dec}) == len(dec)        # names are unique


def test_unknown_space_lists_them():
    with pytest.raises(SearchError, match="nb201, nasnet, mobile, plain"):
        space("darts")
    with pytest.raises(SearchError, match="no option 'width'.*channels, cells, stages"):
        space("nb201", width=3)


@pytest.mark.parametrize("name", SPACES)
def test_decisions_round_trip(name):
    sp = space(name)

    @SETTINGS
    @given(choices_strategy(sp))
    def check(choices):
        arch = sp.from_decisions(choices)
        hash(arch)
        assert sp.to_decisions(arch) == list(choices)
        assert sp.from_decisions(sp.to_decisions(arch)) == arch
        assert sp.decode(sp.encode(arch)) == arch
        assert sp.encode(sp.decode(sp.encode(arch))) == sp.encode(arch)
    check()


@pytest.mark.parametrize("name", SPACES)
def test_sample_and_mutate(name):
    sp = space(name)

    @SETTINGS
    @given(st.integers(0, 2**32 - 1))
    def check(seed):
        rng = random.Random(seed)
        arch = sp.sample(rng)
        assert sp.check(arch) == arch
        child = sp.mutate(arch, rng)
        assert child != arch
        diff = [i for i, (a, b) in enumerate(zip(sp.to_decisions(arch), sp.to_decisions(child)))
                if a != b]
        assert len(diff) == 1                         # exactly one decision changed
        assert sp.decode(sp.encode(child)) == child
    check()


@pytest.mark.parametrize("name", SPACES)
def test_sampling_is_seeded(name):
    sp = space(name)
    a = [sp.sample(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    draws = {sp.sample(random.Random(s)) for s in range(20)}
    assert len(draws) > 10                              # and actually random


@pytest.mark.parametrize("name", SPACES)
def test_bad_decisions(name):
    sp = space(name)
    n = len(sp.decisions())
    with pytest.raises(SearchError, match=f"takes {n} decisions"):
        sp.from_decisions([0] * (n - 1))
    label, k = sp.decisions()[0]
    with pytest.raises(SearchError, match=f"decision '{label}' takes 0..{k - 1}, not {k}"):
        sp.from_decisions([k] + [0] * (n - 1))
    with pytest.raises(SearchError, match="must be an integer"):
        sp.from_decisions(["1"] + [0] * (n - 1))
    with pytest.raises(SearchError):
        sp.to_decisions(("not", "an", "arch"))


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("text", ["", "   ", "x" * 30_000])
def test_bad_strings_without_caret(name, text):
    with pytest.raises(SearchError):
        space(name).decode(text)
    with pytest.raises(SearchError, match="string, not int"):
        space(name).decode(5)


def caret_under(exc: SearchError, token: str):
    """The message's last two lines: the string, and a caret exactly under ``token``."""
    lines = str(exc).split("\n")
    shown, caret = lines[-2][2:], lines[-1][2:]
    start = caret.index("^")
    assert shown[start:start + len(token)] == token, (shown, caret)
    assert caret.count("^") == len(token)


# -- nb201 ----------------------------------------------------------------------------------
def test_nb201_size_and_enumeration():
    sp = space("nb201")
    cells = list(sp.enumerate())
    assert sp.size() == len(cells) == len(set(cells)) == 15_625
    assert sp.from_decisions([3] * 6) == (3,) * 6


def test_nb201_decodes_the_benchmark_notation():
    sp = space("nb201")
    arch = sp.decode(BEST_NB201)
    # edges in the benchmark's order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
    names = [sp.OPS[i] for i in arch]
    assert names == ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect",
                     "nor_conv_1x1", "nor_conv_3x3"]
    assert sp.encode(arch) == BEST_NB201
    # spaces and another order of sources in a group read the same
    assert sp.decode(" |nor_conv_3x3~0| + |nor_conv_3x3~1|nor_conv_3x3~0| + "
                     "|nor_conv_1x1~1|skip_connect~0|nor_conv_3x3~2|") == arch
    assert sp.decode("|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|none~1|none~2|") == \
        (0, 1, 0, 4, 0, 0)


@pytest.mark.parametrize("text, token, why", [
    ("|nor_conv_3x3~0|+|skip_connect~0|conv~1|+|none~0|none~1|none~2|", "conv", "unknown operation"),
    ("|nor_conv_3x3~0|+|skip_connect~0|none~2|+|none~0|none~1|none~2|", "2", "reads nodes 0..1"),
    ("|nor_conv_3x3~0|+|skip_connect~0|none~0|+|none~0|none~1|none~2|", "0", "reads node 0 twice"),
    ("|nor_conv_3x3~0|+|skip_connect~0|nonsense|+|none~0|none~1|none~2|", "nonsense", "op~source"),
    ("|nor_conv_3x3~0|+|skip_connect~0|+|none~0|none~1|none~2|", "|skip_connect~0|", "missing"),
    ("nor_conv_3x3~0+|skip_connect~0|none~1|+|none~0|none~1|none~2|", "nor_conv_3x3~0", "group"),
])
def test_nb201_bad_strings_have_a_caret(text, token, why):
    with pytest.raises(SearchError, match=why) as info:
        space("nb201").decode(text)
    caret_under(info.value, token)


def test_nb201_wrong_group_count():
    with pytest.raises(SearchError, match="3 node groups.*has 2"):
        space("nb201").decode("|nor_conv_3x3~0|+|skip_connect~0|none~1|")
    with pytest.raises(SearchError, match="has 4"):
        space("nb201").decode(BEST_NB201 + "+|none~0|")


def test_nb201_published_cost_range():
    """Dong & Yang 2020: 0.073-1.532 M params, 7.78-220.12 M mult-adds on CIFAR-10."""
    sp = space("nb201")
    cheapest = [sp.decode("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"),
                (1,) * 6, (4,) * 6, (1, 0, 4, 1, 4, 0)]
    for arch in cheapest:                  # none/skip/pool edges: the skeleton alone
        s = deeparch.summary(sp.build(arch), (3, 32, 32))
        assert round(s.total_params / 1e6, 3) == 0.073
        assert round(s.macs / 1e6, 2) == 7.78
        assert (s.total_params, s.macs) == (73_306, 7_783_040)
    s = deeparch.summary(sp.build((3,) * 6), (3, 32, 32))
    assert round(s.total_params / 1e6, 3) == 1.532
    assert round(s.macs / 1e6, 2) == 220.12
    assert (s.total_params, s.macs) == (1_531_546, 220_119_680)
    # a disconnected output node still runs (and counts) every edge, as the benchmark does
    cut = sp.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                    "+|none~0|none~1|none~2|")
    assert not sp.connected(cut) and sp.connected((3,) * 6)
    s = deeparch.summary(sp.build(cut), (3, 32, 32))
    assert s.total_params == 73_306 + 3 * 5 * sum(9 * c * c + 2 * c for c in (16, 32, 64))


def test_nb201_forward_and_skeleton():
    torch.manual_seed(0)
    sp = space("nb201", channels=4, cells=1)
    net = sp.build(sp.decode(BEST_NB201), num_classes=3, in_chans=1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert net.stage_names == ["stem", "stage1", "stage2", "stage3", "lastact"]
    # the operation order: ReLU -> conv -> BN
    op = net.features.stage1.cell0.edge_1_0
    assert [type(m).__name__ for m in op] == ["ReLU", "Conv2d", "BatchNorm2d"]
    cut = sp.build((3, 3, 3, 0, 0, 0)).eval()        # output cut off: a constant network
    x = torch.randn(2, 3, 32, 32)
    out = cut(x)
    assert torch.allclose(out[0], out[1])
    assert sp.input_size((0,) * 6) == (3, 32, 32)


# -- nasnet ---------------------------------------------------------------------------------
def test_nasnet_expresses_nasnet_a():
    sp = space("nasnet")
    a = sp.nasnet_a("6 @ 768")
    text = sp.encode(a)
    assert text.startswith("6 @ 768 | normal: sep5(h) + sep3(p); sep5(p) + sep3(p);")
    assert text.endswith("-> b2 b3 b4 b5")
    b = sp.decode(text)
    assert b == a
    with torch.device("meta"):
        ours = sp.build(b)
        zoo = deeparch.create_model("nasnet_a_cifar")
    count = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
    assert count(ours) == count(zoo) == 3_328_234
    imagenet = space("nasnet", stem="imagenet")
    with torch.device("meta"):
        ours = imagenet.build(imagenet.decode(imagenet.encode(imagenet.nasnet_a("4 @ 1056"))),
                              num_classes=1000)
        zoo = deeparch.create_model("nasnet_a_mobile")
    assert count(ours) == count(zoo) == 5_289_978
    assert imagenet.input_size(a) == (3, 224, 224)


def test_nasnet_paper_rule_concatenates_unused_blocks():
    sp = space("nasnet", blocks=2, config="1 @ 48")
    text = ("normal: sep3(h) + identity(p); conv3(b1) & max3(h) | "
            "reduction: avg3(h) + max5(p); dil3(p) + conv1x7_7x1(h)")
    arch = sp.decode(text)
    assert arch[:2] == (1, 48)                      # the space's N @ F
    assert sp.encode(arch) == "1 @ 48 | " + text.replace("  ", " ")
    net = sp.build(arch)
    cell = net.features.stage1.cell_0
    assert cell.outputs == ("b2",)                  # b1 is read by b2
    assert cell.out_channels == 2 * 2               # b2 concatenates two 2-channel ops
    red = net.features.stage2.reduction_cell_0
    assert red.outputs == ("b1", "b2")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_nasnet_mutation_keeps_config_and_outputs():
    sp = space("nasnet")
    a = sp.nasnet_a("6 @ 768")
    rng = random.Random(3)
    for _ in range(10):
        b = sp.mutate(a, rng)
        assert b[:2] == (6, 768) and b[2][1] == a[2][1] and b[3][1] == a[3][1]
        assert sum(x != y for x, y in zip(sp.to_decisions(a), sp.to_decisions(b))) == 1


def test_nasnet_every_operation_builds():
    sp = space("nasnet", blocks=1, config="1 @ 48")
    for op in sp.OPERATIONS:
        for cell in ("normal", "reduction"):
            text = (f"normal: {op}(h) + {op}(p) | reduction: {op}(h) & {op}(p)" if
                    cell == "normal" else
                    f"normal: {op}(p) & {op}(h) -> h p b1 | reduction: {op}(p) + {op}(h) "
                    f"-> h p b1")
            net = sp.build(sp.decode(text))
            s = deeparch.summary(net)
            assert s.output_shape == [10], (op, cell)
            assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("text, token, why", [
    ("2 @ 100 | normal: sep3(h) + sep3(p) | reduction: sep3(h) + sep3(p)", "2 @ 100",
     "multiple of 24"),
    ("normal: sep4(h) + sep3(p) | reduction: sep3(h) + sep3(p)", "sep4", "unknown operation"),
    ("normal: sep3(b1) + sep3(p) | reduction: sep3(h) + sep3(p)", "b1", "block 1 reads"),
    ("normal: sep3(h) * sep3(p) | reduction: sep3(h) + sep3(p)", "sep3(h) * sep3(p)",
     r"op\(input\)"),
    ("reduction: sep3(h) + sep3(p) | normal: sep3(h) + sep3(p)", "reduction",
     "expected 'normal:'"),
    ("normal: sep3(h) + sep3(p) -> b1 b7 | reduction: sep3(h) + sep3(p)", "b7",
     "is not one of"),
    ("normal: sep3(h) + sep3(p) -> b1 b1 | reduction: sep3(h) + sep3(p)", "b1",
     "named twice"),
])
def test_nasnet_bad_strings_have_a_caret(text, token, why):
    sp = space("nasnet", blocks=1)
    with pytest.raises(SearchError, match=why) as info:
        sp.decode(text)
    caret_under(info.value, token)


def test_nasnet_block_count_and_combines():
    sp = space("nasnet", blocks=2)
    with pytest.raises(SearchError, match="needs 2 blocks.*has 1"):
        sp.decode("normal: sep3(h) + sep3(p) | reduction: sep3(h) + sep3(p); sep3(h) + sep3(p)")
    add_only = space("nasnet", blocks=1, combines=("add",))
    assert add_only.decisions()[4] == ("normal.b1.combine", 1)
    with pytest.raises(SearchError, match="combines by add only"):
        add_only.decode("normal: sep3(h) & sep3(p) | reduction: sep3(h) + sep3(p)")
    with pytest.raises(SearchError, match="NASNet-A has 5 blocks"):
        sp.nasnet_a()
    with pytest.raises(SearchError, match="'N @ F'"):
        space("nasnet", config="6x768")


# -- mobile ---------------------------------------------------------------------------------
def test_mobile_expresses_b0_and_compound_scaling():
    from deeparch.search import scale
    sp = space("mobile")
    b0 = sp.from_scaling(0)
    assert sp.encode(b0) == (
        "224 | stem 32 | e1 k3 c16 x1 se | e6 k3 c24 x2 se | e6 k5 c40 x2 se | "
        "e6 k3 c80 x3 se | e6 k5 c112 x3 se | e6 k5 c192 x4 se | e6 k3 c320 x1 se | head 1280")
    count = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
    for phi in (0, 2):
        arch = sp.decode(sp.encode(sp.from_scaling(phi)))
        assert sp.input_size(arch) == scale(phi).input_size
        with torch.device("meta"):
            ours = sp.build(arch, num_classes=1000)
            zoo = deeparch.create_model("efficientnet_b0", **scale(phi).model_kwargs())
        assert count(ours) == count(zoo)
    assert count(ours) == 12_255_408
    s = deeparch.summary(sp.build(b0, num_classes=1000))
    assert (s.total_params, s.macs) == (5_288_548, 385_814_752)   # efficientnet_b0_keras' card
    with pytest.raises(SearchError, match="outside this space"):
        space("mobile", max_phi=1).from_scaling(3)


def test_mobile_small_network_runs():
    sp = space("mobile")
    arch = (96, 16, tuple((1, 3, sp.stage_widths[i][0], 1, 0) for i in range(7)), 640)
    net = sp.build(sp.decode(sp.encode(arch)), num_classes=4, in_chans=1)
    assert net(torch.randn(2, 1, 96, 96)).shape == (2, 4)
    assert sp.input_size(arch) == (3, 96, 96)
    assert deeparch.summary(net).output_shape == [4]
    assert net.features.stage1.block1.se is None


B0 = ("224 | stem 32 | e1 k3 c16 x1 se | e6 k3 c24 x2 se | e6 k5 c40 x2 se | "
      "e6 k3 c80 x3 se | e6 k5 c112 x3 se | e6 k5 c192 x4 se | e6 k3 c320 x1 se | head 1280")


@pytest.mark.parametrize("old, new, token, why", [
    ("224 |", "225 |", "225", "resolution 225"),
    ("stem 32", "stem 33", "33", "stem's width 33"),
    ("e1 k3 c16", "e1 k4 c16", "k4", "kernel 4"),
    ("e6 k3 c24 x2", "e5 k3 c24 x2", "e5", "expansion 5"),
    ("c320 x1 se", "c320 x1 sx", "sx", "'se' or nothing"),
    ("c320 x1", "c320 x99", "x99", "depth 99"),
    ("c40 x2", "w40 x2", "w40", "as cN"),
    ("head 1280", "tail 1280", "tail", "'head N'"),
])
def test_mobile_bad_strings_have_a_caret(old, new, token, why):
    with pytest.raises(SearchError, match=why) as info:
        space("mobile").decode(B0.replace(old, new, 1))
    caret_under(info.value, token)


def test_mobile_field_count_and_options():
    with pytest.raises(SearchError, match="10 fields.*has 3"):
        space("mobile").decode("224 | stem 32 | head 1280")
    with pytest.raises(SearchError, match="max_phi"):
        space("mobile", max_phi=-1)
    with pytest.raises(SearchError, match="resolutions"):
        space("mobile", resolutions=(8,))
    assert space("mobile").size() > 10 ** 20
    with pytest.raises(SearchError, match="too many to enumerate"):
        space("mobile").enumerate()


# -- plain ----------------------------------------------------------------------------------
VGG_BODY = "[CONV3-16 -> BN -> RELU]*2 -> POOL2 -> [CONV3-32 -> BN -> RELU]*2"


def test_plain_space_is_the_pattern_language():
    sp = space("plain")
    assert sp.size() == (7 * 3 * 2) ** 2 == 1764
    archs = list(sp.enumerate())
    assert len(archs) == len(set(archs)) == 1764
    arch = sp.decode(VGG_BODY)
    assert arch == ((16, 2, 3), (32, 2, 3))
    assert sp.encode(arch) == VGG_BODY
    whole = sp.pattern(arch)
    assert whole == f"INPUT(8x8x1) -> {VGG_BODY} -> GAP -> FC-10"
    assert sp.decode(whole) == arch                      # the whole pattern reads back too
    assert sp.decode(whole.lower().replace(" ", "")) == arch
    net = sp.build(arch)
    ref = deeparch.from_pattern(whole)
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    s = deeparch.summary(net, input_size=(1, 8, 8))
    assert s.macs == deeparch.summary(ref, input_size=(1, 8, 8)).macs


def test_plain_strings_outside_the_option_lists_still_build():
    sp = space("plain")
    arch = sp.decode("[CONV7-100 -> BN -> RELU]*4 -> POOL2 -> [CONV1-3 -> BN -> RELU]")
    assert arch == ((100, 4, 7), (3, 1, 1))
    assert sp.build(arch, num_classes=5, in_chans=3)(torch.zeros(1, 3, 8, 8)).shape == (1, 5)
    with pytest.raises(SearchError, match="stage1.width 100 is not among"):
        sp.to_decisions(arch)
    three = space("plain", stages=3, widths=(4, 8), depths=(1,), kernels=(3,),
                  input=(3, 16, 16))
    assert three.size() == 8
    assert three.build(three.sample(random.Random(0)), in_chans=3)(
        torch.zeros(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.parametrize("text, token, why", [
    ("[CONV3-8 -> BN -> RELU]*2 -> POOL3 -> [CONV3-8 -> BN -> RELU]", "POOL3", "joined by"),
    ("[CONV3-8 -> BN -> RELU]*2 -> POOL2 -> [CONV0-8 -> BN -> RELU]", "0", "kernel must be"),
    ("[CONV3-8 -> BN -> RELU]*2 -> POOL2 -> [CONV3-8 -> BN -> RELU]*99", "99", "depth must"),
    ("[CONV3-8 -> BN -> RELU]*2 -> POOL2 -> [CONV3-8 -> RELU]", "[CONV3-8", "expected a stage"),
    ("[CONV3-8 -> BN -> RELU]*2 -> POOL2 -> [CONV3-8 -> BN -> RELU] junk", "junk", "joined by"),
])
def test_plain_bad_strings_have_a_caret(text, token, why):
    with pytest.raises(SearchError, match=why) as e:
        space("plain").decode(text)
    caret_under(e.value, token)


TOKENS = st.sampled_from(["[CONV3-8 -> BN -> RELU]", "*2", " -> POOL2 -> ", "->", "POOL2",
                          "[", "]", "CONV5-", "INPUT(8x8x1) -> ", " -> GAP -> FC-10", "BN",
                          "*", "0", " ", "99999999999999999999"])


@SETTINGS
@given(st.lists(TOKENS, max_size=12).map("".join))
def test_plain_decode_never_fails_otherwise(text):
    """Any token soup is a SearchError or an architecture whose string reads back."""
    sp = space("plain")
    try:
        arch = sp.decode(text)
    except SearchError:
        return
    assert sp.decode(sp.encode(arch)) == arch


def test_plain_stage_count_and_options():
    with pytest.raises(SearchError, match="has 2 stages, the string has 1 .give -S stages=1"):
        space("plain").decode("[CONV3-8 -> BN -> RELU]*2")
    assert space("plain", stages=1).decode("[CONV3-8 -> BN -> RELU]*2") == ((8, 2, 3),)
    with pytest.raises(SearchError, match="at least 8 x 8, not 4 x 4"):
        space("plain", stages=4, input=(1, 4, 4))
    with pytest.raises(SearchError, match="at most 6 stages"):
        space("plain", stages=7)
    with pytest.raises(SearchError, match="widths must be whole numbers from 1"):
        space("plain", widths=(0, 8))
    with pytest.raises(SearchError, match="kernels must be a list"):
        space("plain", kernels=3)
    with pytest.raises(SearchError, match="input must be .channels, height, width."):
        space("plain", input="8x8")


def test_nb201_fewer_stages_for_small_images():
    sp = space("nb201", channels=4, cells=1, stages=2)
    net = sp.build(sp.decode(BEST_NB201), num_classes=10, in_chans=1)
    names = [n for n, _ in net.features.named_children()]
    assert names == ["stem", "stage1", "reduction1", "stage2", "lastact"]
    assert net.features[:-1](torch.zeros(1, 1, 8, 8)).shape == (1, 8, 4, 4)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(SearchError, match="at most 3 stages"):
        space("nb201", stages=4)


# -- which space a string is ----------------------------------------------------------------
def test_find_space():
    sp, arch = find_space(BEST_NB201)
    assert sp.name == "nb201" and sp.encode(arch) == BEST_NB201
    text = "1 @ 48 | normal: sep3(h) + identity(p); conv3(b1) & max3(h) | " \
           "reduction: avg3(h) + max5(p); dil3(p) + conv1x7_7x1(h)"
    sp, arch = find_space(text)
    assert (sp.name, sp.blocks, arch[:2]) == ("nasnet", 2, (1, 48))
    assert sp.encode(arch) == text
    sp, arch = find_space(B0)
    assert sp.name == "mobile" and sp.encode(arch) == B0
    with pytest.raises(SearchError, match="stem's width 33"):
        find_space(B0.replace("stem 32", "stem 33"))
    with pytest.raises(SearchError, match="unknown operation"):
        find_space("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    sp, arch = find_space(VGG_BODY)
    assert sp.name == "plain" and arch == ((16, 2, 3), (32, 2, 3))
    sp, arch = find_space("INPUT(8x8x1) -> [CONV5-8 -> BN -> RELU] -> GAP -> FC-10")
    assert (sp.name, sp.stages, arch) == ("plain", 1, ((8, 1, 5),))
