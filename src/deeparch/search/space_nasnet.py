"""NASNet's cell search space (Zoph, Vasudevan, Shlens, Le 2018, section 3).

The controller designs two cells, a **normal** cell (stride 1) and a **reduction** cell
(its operations on the cell's inputs at stride 2). Each cell has B blocks (5 by default);
block ``i`` picks two inputs among the hidden states available to it -- ``h`` (this cell's
input), ``p`` (the cell before it) and the outputs ``b1 .. b(i-1)`` of earlier blocks --
applies one operation to each, from the paper's list

    identity, conv1x3_3x1, conv1x7_7x1, dil3, avg3, max3, max5, max7, conv1, conv3,
    sep3, sep5, sep7

(``sepK`` a KxK depthwise-separable conv, applied twice as NASNet-A does; ``dil3`` a 3x3
conv of dilation 2; ``conv1xK_Kx1`` a 1xK conv then a Kx1), and combines the two by
element-wise addition (``+``) or concatenation along the channels (``&``). The cell's
output concatenates its unused hidden states: the blocks no later block reads (the paper's
rule), unless the arch names the outputs itself -- NASNet-A does (``-> p b1 b2 b3 b4 b5``),
and the space expresses it exactly. The networks are built by
``deeparch.models.nasnet.nasnet_a`` around the two cells: N cells per stack, F the
penultimate filters, in the paper's "N @ F" notation.

An arch is ``(N, F, normal, reduction)``, a cell ``(blocks, outputs)``, a block
``(left input, left op, right input, right op, combine)``, ``outputs`` None for the paper's
rule. Its string::

    2 @ 192 | normal: sep5(h) + sep3(p); sep5(p) + sep3(p); ...; sep3(h) + identity(h)
            | reduction: ...; sep3(b1) + max3(h) -> b2 b3 b4 b5

The decisions (a controller's tokens) are, per cell and block: left input, left op, right
input, right op, combine -- 10 x B in all; N @ F and named outputs are not decisions (a
mutation keeps them).
"""
from __future__ import annotations

import re
from typing import Sequence

from ..errors import SearchError
from ..models.nasnet import (NORMAL_A, NORMAL_A_OUT, OPERATIONS, REDUCTION_A,
                             REDUCTION_A_OUT)
from .spaces import Space, _check_int, check_text, parse_error

COMBINES = ("add", "concat")
_SYMBOL = {"add": "+", "concat": "&"}
_BLOCK = re.compile(r"\s*(\w+)\s*\(\s*(\w+)\s*\)\s*([+&])\s*(\w+)\s*\(\s*(\w+)\s*\)\s*")
_CONFIG = re.compile(r"\s*(\d+)\s*@\s*(\d+)\s*")
CELLS = ("normal", "reduction")


def _states(i: int) -> tuple[str, ...]:
    """The hidden states block ``i`` (1-based) may read."""
    return ("h", "p") + tuple(f"b{j}" for j in range(1, i))


def unused_states(blocks) -> tuple[str, ...]:
    """The blocks no later block reads: what the paper's cell concatenates."""
    read = {src for b in blocks for src in (b[0], b[2])}
    return tuple(f"b{i}" for i in range(1, len(blocks) + 1) if f"b{i}" not in read)


class NASNetSpace(Space):
    """NASNet's cell space (see the module notes). Options: ``blocks`` B (5), ``config``
    'N @ F' of built networks ('2 @ 192'), ``stem`` 'cifar' (32x32 input) or 'imagenet'
    (224x224), ``stem_filters`` (3 x F / 24 for the CIFAR stem, 32 for the ImageNet one),
    ``combines`` ('add', 'concat'), ``skip_reduction`` (False; True for NASNet-A Large)."""

    name = "nasnet"
    OPTIONS = ("blocks", "config", "stem", "stem_filters", "combines", "skip_reduction")
    OPERATIONS = OPERATIONS

    def __init__(self, blocks: int = 5, config: str = "2 @ 192", stem: str = "cifar",
                 stem_filters: int | None = None, combines: Sequence[str] = COMBINES,
                 skip_reduction: bool = False):
        self.blocks = _check_int("blocks", blocks)
        if self.blocks > 20:
            raise SearchError(f"blocks must be at most 20, not {blocks}.")
        self.num_cells, self.penultimate = self._config(config)
        if stem not in ("cifar", "imagenet"):
            raise SearchError(f"stem must be 'cifar' or 'imagenet', not {stem!r}.")
        self.stem = stem
        self.stem_filters = (None if stem_filters is None
                             else _check_int("stem_filters", stem_filters))
        combines = tuple(combines)
        if not combines or any(c not in COMBINES for c in combines) \
                or len(set(combines)) != len(combines):
            raise SearchError(f"combines must be some of {', '.join(COMBINES)}, not "
                              f"{combines!r}.")
        self.combines = combines
        self.skip_reduction = bool(skip_reduction)

    @staticmethod
    def _config(config) -> tuple[int, int]:
        m = _CONFIG.fullmatch(str(config))
        if not m:
            raise SearchError(f"config must be 'N @ F' (e.g. '2 @ 192'), not {config!r}.")
        n, f = int(m.group(1)), int(m.group(2))
        NASNetSpace._check_nf(n, f)
        return n, f

    @staticmethod
    def _check_nf(n: int, f: int) -> None:
        if not 1 <= n <= 32:
            raise SearchError(f"N (cells per stack) must be 1..32, not {n}.")
        if f < 24 or f % 24 or f > 24 * 1024:
            raise SearchError(f"F (penultimate filters) must be a multiple of 24 up to "
                              f"{24 * 1024}, not {f}.")

    # -- decisions ------------------------------------------------------------------------
    def decisions(self) -> list[tuple[str, int]]:
        out = []
        for cell in CELLS:
            for i in range(1, self.blocks + 1):
                k = len(_states(i))
                out += [(f"{cell}.b{i}.left_in", k), (f"{cell}.b{i}.left_op", len(OPERATIONS)),
                        (f"{cell}.b{i}.right_in", k), (f"{cell}.b{i}.right_op", len(OPERATIONS)),
                        (f"{cell}.b{i}.combine", len(self.combines))]
        return out

    def from_decisions(self, choices: Sequence[int]) -> tuple:
        c = self.check_choices(choices)
        cells, k = [], 0
        for _ in CELLS:
            blocks = []
            for i in range(1, self.blocks + 1):
                states = _states(i)
                blocks.append((states[c[k]], OPERATIONS[c[k + 1]], states[c[k + 2]],
                               OPERATIONS[c[k + 3]], self.combines[c[k + 4]]))
                k += 5
            cells.append((tuple(blocks), None))
        return (self.num_cells, self.penultimate, cells[0], cells[1])

    def _parts(self, arch):
        try:
            n, f, normal, reduction = arch
            cells = []
            for cell in (normal, reduction):
                blocks, outputs = cell
                if len(blocks) != self.blocks:
                    raise ValueError
                cells.append((tuple(tuple(b) for b in blocks), outputs))
            if not (isinstance(n, int) and isinstance(f, int)):
                raise ValueError
        except (TypeError, ValueError):
            raise SearchError(f"a nasnet architecture of this space is (N, F, normal, "
                              f"reduction), each cell ({self.blocks} blocks, outputs), not "
                              f"{arch!r:.80}.") from None
        return n, f, cells

    def to_decisions(self, arch) -> list[int]:
        _, _, cells = self._parts(arch)
        out = []
        for cell_name, (blocks, _) in zip(CELLS, cells):
            for i, block in enumerate(blocks, 1):
                if len(block) != 5:
                    raise SearchError(f"{cell_name} block {i} is (input, op, input, op, "
                                      f"combine), not {block!r:.60}.")
                states = _states(i)
                l_in, l_op, r_in, r_op, comb = block
                for what, value, options in (("input", l_in, states), ("operation", l_op,
                                             OPERATIONS), ("input", r_in, states),
                                             ("operation", r_op, OPERATIONS),
                                             ("combine", comb, self.combines)):
                    if value not in options:
                        raise SearchError(f"{cell_name} block {i}'s {what} {value!r} is not one "
                                          f"of {', '.join(options)}.")
                    out.append(options.index(value))
        return out

    def check(self, arch) -> tuple:
        if isinstance(arch, str):
            return self.decode(arch)
        n, f, cells = self._parts(arch)
        self.to_decisions(arch)
        self._check_nf(n, f)
        for cell_name, (blocks, outputs) in zip(CELLS, cells):
            if outputs is not None:
                self._check_outputs(outputs, cell_name)
        return arch

    def _check_outputs(self, outputs, cell_name: str) -> None:
        names = ("h", "p") + tuple(f"b{i}" for i in range(1, self.blocks + 1))
        if not isinstance(outputs, tuple) or not outputs:
            raise SearchError(f"the {cell_name} cell's outputs are a non-empty tuple of "
                              f"states, not {outputs!r:.60}.")
        for o in outputs:
            if o not in names:
                raise SearchError(f"the {cell_name} cell concatenates states among "
                                  f"{', '.join(names)}, not {o!r}.")
        if len(set(outputs)) != len(outputs):
            raise SearchError(f"the {cell_name} cell names an output twice: {outputs}.")

    def mutate(self, arch, rng) -> tuple:
        """One decision changed; N @ F and any named outputs are kept."""
        n, f, cells = self._parts(self.check(arch))
        new = super().mutate(arch, rng)
        return (n, f, (new[2][0], cells[0][1]), (new[3][0], cells[1][1]))

    # -- NASNet-A -------------------------------------------------------------------------
    def nasnet_a(self, config: str | None = None) -> tuple:
        """NASNet-A's cells (the paper's Figure 4) as an arch of this space, at ``config``
        ('N @ F'; the space's own when None)."""
        if self.blocks != 5:
            raise SearchError(f"NASNet-A has 5 blocks per cell; this space has {self.blocks}.")
        n, f = self._config(config) if config is not None else (self.num_cells,
                                                                 self.penultimate)

        def cell(spec, outputs):
            return (tuple((li, lo, ri, ro, "add") for (lo, li), (ro, ri) in spec),
                    tuple(outputs))
        return self.check((n, f, cell(NORMAL_A, NORMAL_A_OUT), cell(REDUCTION_A, REDUCTION_A_OUT)))

    # -- strings --------------------------------------------------------------------------
    def encode(self, arch) -> str:
        n, f, cells = self._parts(self.check(arch))
        parts = [f"{n} @ {f}"]
        for name, (blocks, outputs) in zip(CELLS, cells):
            body = "; ".join(f"{lo}({li}) {_SYMBOL[c]} {ro}({ri})" for li, lo, ri, ro, c in blocks)
            if outputs is not None:
                body += " -> " + " ".join(outputs)
            parts.append(f"{name}: {body}")
        return " | ".join(parts)

    def decode(self, text: str) -> tuple:
        text = check_text(text, "nasnet")
        fields, start = [], 0
        for k, ch in enumerate(text + "|"):
            if ch == "|":
                fields.append((start, text[start:k]))
                start = k + 1
        if len(fields) not in (2, 3):
            pos = len(text) if len(fields) < 2 else fields[3][0] - 1
            raise parse_error("a nasnet architecture is [N @ F |] normal: ... | reduction: ...",
                              text, pos)
        n, f = self.num_cells, self.penultimate
        if len(fields) == 3:
            offset, field = fields.pop(0)
            m = _CONFIG.fullmatch(field)
            if not m:
                raise parse_error("expected 'N @ F' (e.g. 2 @ 192)", text, offset,
                                  max(1, len(field)))
            n, f = int(m.group(1)), int(m.group(2))
            try:
                self._check_nf(n, f)
            except SearchError as exc:
                raise parse_error(str(exc).rstrip("."), text, offset + m.start(1),
                                  m.end(2) - m.start(1)) from None
        cells = []
        for cell_name, (offset, field) in zip(CELLS, fields):
            cells.append(self._decode_cell(text, cell_name, offset, field))
        return self.check((n, f, cells[0], cells[1]))

    def _decode_cell(self, text: str, cell_name: str, offset: int, field: str):
        m = re.match(r"\s*(\w+)\s*:", field)
        if not m or m.group(1) != cell_name:
            pos = offset + (m.start(1) if m else len(field) - len(field.lstrip()))
            raise parse_error(f"expected '{cell_name}:' here", text, pos,
                              len(m.group(1)) if m else 1)
        body_at = offset + m.end()
        body = field[m.end():]
        outputs = None
        if "->" in body:
            arrow = body.index("->")
            out_text = body[arrow + 2:]
            out_at = body_at + arrow + 2
            body = body[:arrow]
            names = ("h", "p") + tuple(f"b{i}" for i in range(1, self.blocks + 1))
            outputs = []
            for tok in re.finditer(r"[^\s,]+", out_text):
                if tok.group() not in names or tok.group() in outputs:
                    why = ("named twice" if tok.group() in outputs
                           else f"is not one of {', '.join(names)}")
                    raise parse_error(f"output {tok.group()!r} {why}", text,
                                      out_at + tok.start(), len(tok.group()))
                outputs.append(tok.group())
            if not outputs:
                raise parse_error("'->' must be followed by the states to concatenate", text,
                                  out_at - 2, 2)
            outputs = tuple(outputs)
        pieces, start = [], 0
        for k, ch in enumerate(body + ";"):
            if ch == ";":
                pieces.append((body_at + start, body[start:k]))
                start = k + 1
        if len(pieces) != self.blocks:
            pos = body_at + len(body) if len(pieces) < self.blocks else pieces[self.blocks][0] - 1
            raise parse_error(f"the {cell_name} cell needs {self.blocks} blocks separated by "
                              f"';', this one has {len(pieces)}", text, pos)
        blocks = []
        for i, (at, piece) in enumerate(pieces, 1):
            bm = _BLOCK.fullmatch(piece)
            if not bm:
                lead = len(piece) - len(piece.lstrip())
                raise parse_error("expected op(input) + op(input), or & to concatenate", text,
                                  at + lead, max(1, len(piece.strip())))
            states = _states(i)
            for g in (1, 4):
                if bm.group(g) not in OPERATIONS:
                    raise parse_error(f"unknown operation {bm.group(g)!r}; the operations are "
                                      f"{', '.join(OPERATIONS)}", text, at + bm.start(g),
                                      len(bm.group(g)))
            for g in (2, 5):
                if bm.group(g) not in states:
                    raise parse_error(f"block {i} reads one of {', '.join(states)}, not "
                                      f"{bm.group(g)!r}", text, at + bm.start(g),
                                      len(bm.group(g)))
            comb = "add" if bm.group(3) == "+" else "concat"
            if comb not in self.combines:
                raise parse_error(f"this space combines by {', '.join(self.combines)} only",
                                  text, at + bm.start(3))
            blocks.append((bm.group(2), bm.group(1), bm.group(5), bm.group(4), comb))
        return (tuple(blocks), outputs)

    # -- networks -------------------------------------------------------------------------
    def input_size(self, arch) -> tuple[int, int, int]:
        self.check(arch)
        return (3, 32, 32) if self.stem == "cifar" else (3, 224, 224)

    def build(self, arch, num_classes: int = 10, in_chans: int = 3):
        from ..models.nasnet import nasnet_a
        n, f, cells = self._parts(self.check(arch))
        stem_filters = self.stem_filters or (3 * (f // 24) if self.stem == "cifar" else 32)
        specs = []
        for blocks, outputs in cells:
            spec = tuple(((lo, li), (ro, ri)) for li, lo, ri, ro, _ in blocks)
            outs = outputs if outputs is not None else unused_states(blocks)
            specs.append((spec, outs, tuple(b[4] for b in blocks)))
        model = nasnet_a(num_cells=n, penultimate_filters=f, stem=self.stem,
                         stem_filters=stem_filters, skip_reduction=self.skip_reduction,
                         num_classes=num_classes, in_chans=in_chans, drop_rate=0.0,
                         normal_cell=specs[0], reduction_cell=specs[1])
        c, h, w = self.input_size(arch)
        model.input_size = (in_chans, h, w)
        model.model_name = "nasnet " + self.encode(arch)
        return model
