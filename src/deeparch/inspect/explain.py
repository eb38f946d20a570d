"""``explain``: the arithmetic of every layer, written out as the slides do it.

    conv1 (Conv2d)
      output:  (227 - 11 + 2*0)/4 + 1 = 55  ->  55x55x96
      params:  96 x (11 x 11 x 3) + 96 = 34,944
      ...

It also flags what is wrong or surprising: a division that floors and drops pixels, a
stride larger than its kernel, a kernel larger than its padded input, and a figure from
the seed documents that disagrees with the exact sum of the rows.
"""
from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field

from ..errors import ShapeError, UnknownLayerError
from .render import dims, human_bytes
from .summary import _from_trace, parse_input_size, resolve
from .trace import LayerRecord, module_geometry, run_trace


def _n(v) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.2f}"


def _hw(shape) -> str:
    """Channels-last like the slides: [96, 55, 55] -> 55x55x96."""
    if not shape or isinstance(shape[0], list):
        return dims(shape)
    s = list(shape)
    return "x".join(str(v) for v in (s[1:] + s[:1])) if len(s) > 1 else str(s[0])


@dataclass
class LayerExplanation:
    record: LayerRecord
    lines: list[str]
    flags: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = [f"{self.record.name} ({self.record.type})"] + [f"  {ln}" for ln in self.lines]
        out += [f"  ! {f}" for f in self.flags]
        return "\n".join(out)


@dataclass
class Explanation:
    model: str
    input_size: tuple[int, ...]
    layers: list[LayerExplanation]
    totals: list[str]
    notes: list[str]

    @property
    def flags(self) -> list[str]:
        return [f for lx in self.layers for f in lx.flags] + self.notes

    def text(self) -> str:
        parts = [f"{self.model}: input {_hw(list(self.input_size))} "
                 f"(HxWxC; C,H,W = {','.join(map(str, self.input_size))})", ""]
        parts += [lx.text() + "\n" for lx in self.layers]
        if self.totals:
            parts += ["Totals"] + [f"  {t}" for t in self.totals]
        if self.notes:
            parts += [""] + [f"! {n}" for n in self.notes]
        return "\n".join(parts).rstrip() + "\n"

    __str__ = text


def _size_lines(geo: dict, in_shape: list, out_shape: list | None) -> tuple[list[str], list[str]]:
    """The output-size formula per spatial dimension, and what it drops or cannot do."""
    spatial = in_shape[1:]
    k, s, d = geo["kernel"], geo["stride"], geo["dilation"]
    pad = geo["padding"]
    if isinstance(pad, str):
        pad = tuple((kk - 1) * dd // 2 for kk, dd in zip(k, d)) if pad == "same" else (0,) * len(k)
    ceil = geo.get("ceil_mode", False)
    results, per_axis = [], []
    for size, kk, ss, pp, dd in zip(spatial, k, s, pad, d):
        eff = dd * (kk - 1) + 1
        kt = f"{kk}" if dd == 1 else f"{dd}*({kk}-1)+1"
        num = size - eff + 2 * pp
        exact = num / ss + 1
        val = (math.ceil(num / ss) if ceil else num // ss) + 1
        expr = f"({size} - {kt} + 2*{pp})/{ss} + 1"
        flags = []
        if size + 2 * pp < eff:
            flags.append(f"the {'x'.join(map(str, k))} kernel is larger than the padded input "
                         f"({size} + 2*{pp} = {size + 2 * pp} < {eff}): this layer cannot run")
            results.append(f"{expr} = {_n(exact)} < 1")
            per_axis.append(flags)
            continue
        if num % ss and ceil:
            flags.append(f"{expr} = {_n(exact)} is not whole: ceil mode rounds up to {val}, "
                         f"so the last window hangs over the edge")
        elif num % ss:
            lost = num % ss
            flags.append(f"{expr} = {_n(exact)} is not whole: it floors to {val}, so the last "
                         f"{lost} {{unit}}{'s' if lost > 1 else ''} of the padded input "
                         f"{'are' if lost > 1 else 'is'} never used")
        if ss > eff:
            flags.append(f"stride {ss} is larger than the kernel {eff}: {ss - eff} of every {ss} "
                         f"input positions are skipped")
        results.append(f"{expr} = {val}")
        per_axis.append(flags)
    if len(results) == 1 or len(set(results)) == 1:
        line = results[0]
        units = ["row/column"] if len(results) > 1 else ["position"]
        flag_sets = per_axis[:1]
    else:
        line = "; ".join(f"{ax}: {r}" for ax, r in zip("HWD", results))
        units = ["row", "column", "slice"][:len(results)]
        flag_sets = per_axis
    out_flags = []
    for unit, flags in zip(units, flag_sets):
        for f in flags:
            if f not in out_flags:
                out_flags.append(f.replace("{unit}", unit))
    return [line], out_flags


def _layer_lines(r: LayerRecord, nbytes: int) -> tuple[list[str], list[str]]:
    geo = r.geometry or {}
    kind = geo.get("kind")
    lines: list[str] = []
    flags: list[str] = []
    out = _hw(r.output_shape)
    if kind in ("conv", "maxpool", "avgpool") and r.input_shape:
        size, f = _size_lines(geo, r.input_shape, r.output_shape)
        flags += f
        lines.append(f"output:  {size[0]}  ->  {out}")
    elif kind == "linear":
        lines.append(f"output:  {geo['out_features']:,} units")
    else:
        lines.append(f"output:  {out}")
    if kind == "conv":
        k = " x ".join(map(str, geo["kernel"]))
        cin = geo["in_channels"] // geo["groups"]
        grp = f" (groups={geo['groups']}: each filter sees {cin} of {geo['in_channels']} channels)" \
            if geo["groups"] > 1 else ""
        bias = f" + {geo['out_channels']}" if geo["bias"] else ""
        lines.append(f"params:  {geo['out_channels']} x ({k} x {cin}){bias} = {r.params:,}{grp}")
        sp = " x ".join(map(str, r.output_shape[1:]))
        lines.append(f"mult-adds:  {sp} x {geo['out_channels']} x ({k} x {cin}) = {r.macs:,}")
    elif kind == "linear":
        bias = f" + {geo['out_features']}" if geo["bias"] else ""
        src = f"({_hw(r.input_shape)})" if r.input_shape and len(r.input_shape) > 1 else \
            f"{geo['in_features']:,}"
        lines.append(f"params:  {geo['in_features']:,} x {geo['out_features']:,}{bias} = "
                     f"{r.params:,}   (in: {src})")
        lines.append(f"mult-adds:  {geo['in_features']:,} x {geo['out_features']:,} = {r.macs:,}")
    elif kind in ("maxpool", "avgpool"):
        lines.append("params:  0 (pooling has no weights)")
    elif r.params:
        lines.append(f"params:  {r.params:,}")
    if r.shared:
        lines.append("params:  shared with its first use above (counted once)")
    if r.activations:
        n = r.output_shape if r.output_shape and not isinstance(r.output_shape[0], list) else []
        expr = " x ".join(map(str, n)) if n else ""
        lines.append(f"memory:  {expr + ' = ' if len(n) > 1 else ''}{r.activations:,} values"
                     f" = {human_bytes(r.activations * nbytes)}")
    else:
        lines.append("memory:  none new (in place, a view, or identity in inference)")
    if r.receptive_field is not None and r.whole_input:
        lines.append(f"receptive field:  the whole input ({_rf_dims(r.receptive_field)}): "
                     "every input pixel reaches each output")
    elif r.receptive_field is not None and kind in ("conv", "maxpool", "avgpool"):
        k, s, d = geo["kernel"][0], geo["stride"][0], geo["dilation"][0]
        rf, jump = r.receptive_field, r.jump
        rf0 = (rf[0] if isinstance(rf, list) else rf)
        j0 = (jump[0] if isinstance(jump, list) else jump)
        prev_j = j0 / s
        prev_rf = rf0 - d * (k - 1) * prev_j
        lines.append(f"receptive field:  {_n(prev_rf)} + ({d * (k - 1) + 1} - 1) x {_n(prev_j)} = "
                     f"{_n(rf0)};  jump {_n(prev_j)} x {s} = {_n(j0)}")
    elif r.receptive_field is not None:
        lines.append(f"receptive field:  {r.receptive_field}, jump {r.jump}")
    return lines, flags


def _rf_dims(rf) -> str:
    return "x".join(map(str, rf)) if isinstance(rf, list) else f"{rf}x{rf}"


def _seed_notes(s) -> list[str]:
    notes = []
    card = s.card
    if card is None:
        return notes
    actual = {"params": s.total_params, "macs": s.macs, "activations": s.activations}
    for fig in card.seed_figures:
        got = actual[fig.quantity]
        if abs(got - fig.value) > fig.tolerance:
            extra = ""
            if fig.quantity == "activations":
                extra = (f" ({got / 1e6:.1f}M, {human_bytes(got * s.bytes_per_value)} at "
                         f"{s.bytes_per_value} bytes)")
            notes.append(f"{fig.source} says \"{fig.quote}\", but the exact sum of its rows is "
                         f"{got:,}{extra}.")
        else:
            notes.append(f"{fig.source} says \"{fig.quote}\": agrees with the exact {got:,}.")
    if card.input_size == tuple(s.input_size):
        sources = source_by_quantity(card.source, card.params, card.macs)
        for what, published, got in (("parameters", card.params, s.total_params),
                                     ("mult-adds", card.macs, s.macs)):
            if published is None:
                continue
            src = sources["params" if what == "parameters" else "macs"]
            off = (got - published) / published
            if got == published:
                verdict = "the rows give exactly that"
            elif not card.exact and abs(off) <= 0.05:
                verdict = f"the rows give {got:,}, {off:+.2%} from a figure that is rounded"
            else:
                verdict = f"the rows give {got:,}: they DIFFER by {off:+.2%}"
            where = f" ({src})" if src else ""
            notes.append(f"published {what} {published:,}{where}: {verdict}.")
    return notes


# A figure in a source text: "138M", "1.814 GFLOPS", "0.39B", "7,978,856", "8,403.63M".
_FIGURE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?:\s?([KMGBT])(?![A-Za-z]))?")
_SCALE = {"K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
_LABELS = (("params", re.compile(r"(params|parameters)\s*:\s*", re.I)),
           ("macs", re.compile(r"(mult-adds|macs|flops)\s*:\s*", re.I)))


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside parentheses, each part stripped."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _about(item: str, published: dict[str, int | None]) -> set[str]:
    """Which quantities a piece of source text states: by the figures it gives (a figure
    within 10% of a published total belongs to that total), else by the words it uses
    (empty when it says neither)."""
    hits = set()
    for whole, frac, unit in _FIGURE.findall(item):
        if not unit and "," not in whole:
            continue      # a bare small number: a table or year, not a figure
        v = float(whole.replace(",", "") + frac) * _SCALE.get(unit, 1)
        hits |= {q for q, p in published.items() if p and abs(v - p) <= 0.1 * p}
    if hits:
        return hits
    return {q for q, pat in (("params", r"param"), ("macs", r"flop|mult-add|\bmacs?\b"))
            if re.search(pat, item, re.I)}


def source_by_quantity(source: str, params: int | None, macs: int | None) -> dict[str, str]:
    """The parts of a model card's ``source`` that are about its parameters and about its
    mult-adds, so that each published total is quoted with its own provenance.

    The source is read as clauses separated by ``;`` (``params: ...; mult-adds: ...``); a
    clause labelled ``params:`` / ``mult-adds:`` belongs to that quantity; an unlabelled
    ``where: figure, figure`` clause is split at its commas and each figure goes with the
    published total it matches (``paper: 138M`` is VGG-16's parameter count, not its
    mult-adds), or else with the quantity its words name (``parameters``, ``GFLOPS``);
    text that names neither goes with the quantities that have no labelled clause (with
    both when none has). A quantity left with nothing keeps the ``where`` part of the
    clauses (the reference, without the other quantity's figure).
    """
    published = {"params": params, "macs": macs}
    clauses = _split_top(source or "", ";")
    labels = [next(((q, m) for q, pat in _LABELS if (m := pat.match(c))), None) for c in clauses]
    # text that names no quantity belongs to those without a labelled clause of their own
    unlabelled = {"params", "macs"} - {lab[0] for lab in labels if lab}
    default = unlabelled or {"params", "macs"}
    out: dict[str, list[str]] = {"params": [], "macs": []}
    heads: list[str] = []
    for clause, label in zip(clauses, labels):
        if label is not None:
            out[label[0]].append(clause[label[1].end():])
            continue
        parts = _split_top(clause, ":")
        head, items = ("", [clause]) if len(parts) < 2 else \
            (parts[0], _split_top(": ".join(parts[1:]), ", "))
        if head:
            heads.append(head)
        per: dict[str, list[str]] = {"params": [], "macs": []}
        for item in items:
            for q in _about(item, published) or default:
                per[q].append(item)
        for q, got in per.items():
            if got:
                out[q].append(f"{head}: {', '.join(got)}" if head else ", ".join(got))
    return {q: "; ".join(v) if v else "; ".join(heads) for q, v in out.items()}


def _select(records: list[LayerRecord], layers) -> list[int]:
    if not layers:
        return list(range(len(records)))
    chosen: list[int] = []
    for want in layers:
        want = str(want)
        hits = [i for i, r in enumerate(records)
                if r.name == want or r.name.endswith("." + want) or fnmatch.fnmatch(r.name, want)]
        if not hits and want.isdigit() and 1 <= int(want) <= len(records):
            hits = [int(want) - 1]
        if not hits:
            names = ", ".join(r.name for r in records[:12])
            raise UnknownLayerError(f"the model has no layer {want!r}; its layers include "
                                    f"{names}{'...' if len(records) > 12 else ''}.")
        chosen += [h for h in hits if h not in chosen]
    return sorted(chosen)


def _with_explanation(exc: ShapeError, name: str, size: tuple, nbytes: int = 4) -> ShapeError:
    """Attach the arithmetic up to and including the failing layer to ``exc.explanation``."""
    items = [LayerExplanation(r, *_layer_lines(r, nbytes)) for r in getattr(exc, "partial", [])]
    mod = getattr(exc, "failed_module", None)
    in_shape = getattr(exc, "failed_input", None)
    geo = module_geometry(mod, len(in_shape) - 1) if mod is not None and in_shape else None
    if geo and "kernel" in geo:
        lines, flags = _size_lines(geo, in_shape, None)
        fake = LayerRecord(exc.failed_name, type(mod).__name__, [], 0, 0, 0, 0, None, None,
                           in_shape, geo)
        items.append(LayerExplanation(fake, [f"output:  {lines[0]}"], flags))
    exc.explanation = Explanation(name, size, items, [], [str(exc)])
    return exc


def explain(target, input_size=None, layer=None) -> Explanation:
    """Explain the arithmetic of each layer (or of the ``layer`` names / globs / 1-based indices).

    A geometry that cannot run raises :class:`ShapeError`; its ``explanation`` attribute
    holds the arithmetic up to and including the failing layer.
    """
    layers = [layer] if isinstance(layer, (str, int)) else (layer or [])
    try:
        model, name, size, card = resolve(target, input_size)
    except ShapeError as exc:  # a classifier sized at build time met an impossible geometry
        raise _with_explanation(exc, str(getattr(target, "model_name", target)),
                                parse_input_size(input_size) if input_size else ()) from None
    trace = run_trace(model, size)
    p = next(iter(model.parameters()), None)
    nbytes = p.element_size() if p is not None else 4
    if trace.failure is not None:
        raise _with_explanation(trace.failure, name, size, nbytes)
    s = _from_trace(model, name, size, card, trace.records, trace.output)
    items = []
    rf_full = False
    for i in _select(s.layers, layers):
        r = s.layers[i]
        lines, flags = _layer_lines(r, nbytes)
        rf = r.receptive_field
        if rf is not None and not rf_full and len(size) == 3 and not layers \
                and not r.whole_input:
            rf0 = max(rf) if isinstance(rf, list) else rf
            if rf0 >= max(size[1:]) and r.geometry and r.geometry.get("kind") != "linear":
                flags.append(f"from here on each output sees the whole {size[1]}x{size[2]} input "
                             f"(receptive field {rf})")
                rf_full = True
        items.append(LayerExplanation(r, lines, flags))
    bias = s.bias_params
    totals = [
        f"params:  sum of the rows = {s.total_params:,} (weights {s.total_params - bias:,} + "
        f"biases {bias:,}) = {human_bytes(s.param_bytes)} at {s.bytes_per_value} bytes",
        f"mult-adds:  {s.macs:,}",
        f"memory:  input {math.prod(size):,} + layers {s.activations - math.prod(size):,} = "
        f"{s.activations:,} values = {human_bytes(s.activation_bytes)} per image forward "
        f"(about twice that with the backward pass)",
    ]
    if layers:
        totals = []
    return Explanation(name, size, items, totals, [] if layers else _seed_notes(s))
