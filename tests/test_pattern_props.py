"""Property tests of the layer-pattern parser and builder.

(i) whatever the text, :func:`deeparch.from_pattern` either builds a network or raises
:class:`PatternError` (or :class:`InputSizeError` for a bad ``input_size=``), never another
exception; (ii) for generated valid patterns the expansion and the parameter arithmetic
agree with independent counts.
"""
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import deeparch
from deeparch import pattern
from deeparch.errors import InputSizeError, PatternError

FAST = settings(deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow])


def builds_or_pattern_error(spec, input_size=None):
    """Build on meta (nothing allocated); the only acceptable failures are the typed ones."""
    try:
        net = deeparch.from_pattern(spec, input_size=input_size, device="meta")
    except (PatternError, InputSizeError) as exc:
        lines = str(exc).splitlines()
        assert lines and lines[0].strip(), "an error needs a sentence"
        if len(lines) > 1:                      # the quoted pattern and the caret under it
            assert len(lines) == 3 and set(lines[2].strip()) == {"^"}, str(exc)
        return None
    assert isinstance(net, nn.Sequential)
    return net


# -- (i) any text ---------------------------------------------------------------------------

@FAST
@given(st.text(max_size=80))
def test_any_text_builds_or_raises_pattern_error(text):
    builds_or_pattern_error(text)


GRAMMAR_CHARS = list("[]*->→()x0123456789 CONVFCPOLGNDRIUTBSE=,/.pgsd²٣\n\t\x1e")


@FAST
@given(st.text(alphabet=st.sampled_from(GRAMMAR_CHARS), max_size=60))
def test_text_of_grammar_characters_builds_or_raises_pattern_error(text):
    builds_or_pattern_error(text)
    builds_or_pattern_error("INPUT(9x9x2) -> " + text)


NUMBERS = st.one_of(
    st.integers(0, 9).map(str), st.integers(0, 300).map(str),
    st.sampled_from(["00", "07", "999999", "1000001", "65536", "65537",
                     "99999999999999999999", "1" * 60, "²", "٣", "3.5", "-1", "", "x"]))
KEYWORDS = ["CONV", "conv", "DWCONV", "SEPCONV", "PWCONV", "POOL", "MAXPOOL", "AVGPOOL", "FC",
            "DENSE", "GN", "DROPOUT", "DROP", "INPUT"]
BARE = ["RELU", "relu6", "LEAKYRELU", "ELU", "GELU", "SWISH", "TANH", "SIGMOID", "SOFTMAX",
        "soft-max", "BN", "LN", "IN", "LRN", "GAP", "GMP", "FLATTEN", "GN", "POOL", "DROPOUT",
        "DROPOUT0.5", "DROPOUT(0.5)", "DROPOUT1.5", "RELUU", "INPUT"]
OPTION_KEYS = ["s", "p", "d", "g", "bias", "stride", "padding", "q", ""]
OPTION_VALUES = ["0", "1", "2", "3", "same", "valid", "true", "maybe", "99999999999", "²", ""]


@st.composite
def layer_tokens(draw):
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from(BARE))
    if kind == 1:
        dims = draw(st.lists(NUMBERS, min_size=0, max_size=4))
        return f"INPUT({'x'.join(dims)})"
    word = draw(st.sampled_from(KEYWORDS))
    text = word + draw(NUMBERS)
    if draw(st.booleans()):
        text += "x" + draw(NUMBERS)
    if draw(st.booleans()):
        text += "-" + draw(NUMBERS)
    if draw(st.booleans()):
        text += "/" + draw(NUMBERS)
    if draw(st.booleans()):
        opts = draw(st.lists(st.tuples(st.sampled_from(OPTION_KEYS),
                                       st.sampled_from(OPTION_VALUES)), max_size=3))
        text += "(" + ",".join(f"{k}={v}" if k else v for k, v in opts) + ")"
    return text


@st.composite
def near_valid(draw, depth=0):
    """Sequences of grammar tokens with random counts, brackets and junk separators."""
    terms = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 3 and draw(st.integers(0, 4)) == 0:
            term = "[" + draw(near_valid(depth + 1)) + draw(st.sampled_from(["]", "]", ""]))
        else:
            term = draw(layer_tokens())
        if draw(st.integers(0, 3)) == 0:
            term += "*" + draw(NUMBERS)
        terms.append(term)
    seps = draw(st.lists(st.sampled_from([" -> ", "->", " → ", " ", " -> -> ", "*", "]"]),
                         min_size=len(terms), max_size=len(terms)))
    return "".join(t + s for t, s in zip(terms, seps))[:-len(seps[-1]) or None]


@FAST
@given(near_valid(), st.one_of(st.none(), st.sampled_from(
    [(3, 32, 32), (1, 8, 8), (1, 1, 1), (0, 4, 4), (3, 32), (3, 70000, 2), "3,8,8", 5])))
def test_near_valid_patterns_build_or_raise_pattern_error(spec, size):
    builds_or_pattern_error("INPUT(16x16x3) -> " + spec if spec[:1] != "I" else spec, size)
    builds_or_pattern_error(spec, size)


# -- (ii) invariants of valid patterns ------------------------------------------------------

@st.composite
def valid_tree(draw, depth=0):
    """A valid shape-preserving body: (pattern text, expected layer count, conv count)."""
    items, layers, convs = [], 0, 0
    for _ in range(draw(st.integers(1, 3))):
        count = draw(st.integers(0, 3))
        if depth < 3 and draw(st.booleans()):
            text, n, c = draw(valid_tree(depth + 1))
            text = f"[{text}]"
        else:
            tok = draw(st.sampled_from(["CONV3-4", "CONV1-4", "BN", "RELU", "DWCONV3",
                                        "SEPCONV3-4", "PWCONV-4", "GN2", "DROPOUT0.1", "LRN"]))
            text, n, c = tok, 1, int(tok.startswith("CONV"))
        items.append(f"{text}*{count}")
        layers += count * n
        convs += count * c
    return " -> ".join(items), layers, convs


@FAST
@given(valid_tree())
def test_expanded_layer_count_is_the_product_formula(tree):
    body, n_layers, n_convs = tree
    spec = f"INPUT(8x8x4) -> CONV1-4 -> {body} -> GAP -> FC-3"
    tokens = pattern.parse(spec)
    assert len(tokens) == 1 + 1 + n_layers + 2
    net = deeparch.from_pattern(spec, device="meta")
    assert len(net) == len(tokens) - 1          # INPUT makes no module
    plain = [m for m in net if type(m).__name__ == "Conv2d"]
    assert len(plain) == 1 + n_convs


@st.composite
def small_networks(draw):
    side = draw(st.integers(4, 24))
    chans = draw(st.integers(1, 5))
    parts, cur, c = [f"INPUT({side}x{side}x{chans})"], side, chans
    for _ in range(draw(st.integers(1, 5))):
        choice = draw(st.integers(0, 6))
        if choice == 0:
            k = draw(st.sampled_from([1, 3, 5]))
            n = draw(st.integers(1, 12))
            g = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0 and n % g == 0]))
            bias = draw(st.sampled_from(["", ",bias=0"]))
            parts.append(f"CONV{k}-{n}(g={g}{bias})")
            c = n
        elif choice == 1:
            parts.append(f"SEPCONV3-{draw(st.integers(1, 9))}")
            c = int(parts[-1].split("-")[1])
        elif choice == 2:
            parts.append("DWCONV3")
        elif choice == 3:
            n = draw(st.integers(1, 9))
            parts.append(f"PWCONV-{n}")
            c = n
        elif choice == 4:
            parts.append(draw(st.sampled_from(["BN", "LN", "IN", "LRN", "RELU", f"GN{c}"])))
        elif choice == 5 and cur >= 2:
            parts.append("POOL2")
            cur //= 2
    parts.append(draw(st.sampled_from(["FC-7", "GAP -> FC-5", "FLATTEN -> BN -> FC-2"])))
    return " -> ".join(parts)


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(small_networks())
def test_planned_parameters_equal_the_module_and_the_summary(spec):
    _, size, planned = pattern.plan(spec)
    net = deeparch.from_pattern(spec)
    real = sum(p.numel() for p in net.parameters())
    assert planned == real
    assert deeparch.summary(spec).total_params == real
    assert math.prod(size) == math.prod(net.input_size)
