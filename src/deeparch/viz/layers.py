"""Addressing the layers of any network by the rows of its summary, and recording their outputs.

Every tool that looks inside a network (activation maps, activation maximisation, saliency,
Grad-CAM, the lesion study) names a layer the way the summary table shows it:

* a row name: ``features.conv1``, ``layer1.0.add`` (a functional operation in a forward, as
  the summary names it), ``act`` (a module used several times: its first use),
  ``act@2`` (its second use);
* a row number as the table prints it: ``#3`` (or the int ``3``);
* a glob over row names: ``layer4.*``, ``*conv*`` (every use of every match, in order).

:func:`resolve_layers` turns such a spec into :class:`Layer` s (the summary row: name, type,
output shape, receptive field, jump and where the receptive field of each unit lies);
:func:`capture` runs the model for real and returns exactly the tensors those rows output.
Both use the inspector's own tracer (:mod:`deeparch.inspect.trace`), so the rows are the
summary's rows by construction: functional operations and the second use of a shared module
included, which forward hooks on modules cannot address.

Hygiene: the recording uses the tracer's global module hooks and a torch-function mode, both
removed in a ``finally`` (also after an error or a ``KeyboardInterrupt``); nothing is ever
registered on the model itself (:func:`count_hooks` lets tests check it). A recorded output is
the row's tensor itself; the rest of the forward pass gets a copy of it, so that an in-place
operation further on (``ReLU(inplace=True)``, ``out += identity``) can neither change what was
recorded nor break the gradient with respect to it.
"""
from __future__ import annotations

import difflib
import fnmatch
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..errors import DataError, DeeparchError, InputSizeError, UnknownLayerError
from ..inspect.trace import RF, LayerRecord, Tracer, _tensors

__all__ = ["Box", "Layer", "LayerError", "Network", "Shown", "capture", "count_hooks",
           "layer_table", "load_network", "load_shown", "resolve_layer", "resolve_layers"]


class LayerError(DeeparchError, ValueError):
    """A layer that cannot serve what was asked of it (no spatial map, a channel out of range,
    a forward pass that does not run the same way twice)."""


# --------------------------------------------------------------------------- boxes

@dataclass(frozen=True)
class Box:
    """A rectangle of input pixels: rows ``top:bottom``, columns ``left:right`` (ends
    exclusive, like slices). Unclipped boxes may reach past the image (into the padding)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def clip(self, height: int, width: int) -> "Box":
        return Box(max(0, self.top), max(0, self.left), min(height, self.bottom),
                   min(width, self.right))

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


# --------------------------------------------------------------------------- rows

@dataclass
class Layer:
    """One row of the summary table, addressed."""

    index: int                 # 0-based position in the table
    name: str                  # the row name (a shared module's name repeats)
    use: int                   # 1 for a module's first use, 2 for its second...
    record: LayerRecord        # the summary row (type, output_shape, receptive_field, ...)
    rf: tuple | None           # receptive field per spatial dimension (input pixels)
    jump: tuple | None         # distance between neighbouring units, in input pixels
    center: tuple | None       # input coordinate of the centre of unit (0, 0)'s field
    module: nn.Module | None = None   # the module of a module row (None: functional op)

    @property
    def number(self) -> int:
        """The row number as the summary table prints it (``#`` column, from 1)."""
        return self.index + 1

    @property
    def key(self) -> str:
        """A spec that names exactly this row: ``name`` or ``name@2`` for a later use."""
        return self.name if self.use == 1 else f"{self.name}@{self.use}"

    @property
    def label(self) -> str:
        return f"#{self.number} {self.key}"

    @property
    def type(self) -> str:
        return self.record.type

    @property
    def shape(self) -> list:
        """Output shape without the batch dimension (``[C, H, W]`` for a map)."""
        return self.record.output_shape

    @property
    def has_map(self) -> bool:
        """Whether the row outputs channels of a spatial map (``C x H x W`` or ``C x L``)."""
        s = self.shape
        return bool(s) and not isinstance(s[0], list) and len(s) >= 2 and \
            not self.record.whole_input

    @property
    def channels(self) -> int | None:
        s = self.shape
        return int(s[0]) if s and not isinstance(s[0], list) and len(s) >= 2 else None

    def box(self, *unit: int) -> Box:
        """The receptive field of unit ``(i, j)`` of this row's map as a box of input pixels,
        unclipped (its size is the summary's receptive field; :meth:`Box.clip` it to the
        image). Rows that see the whole input, or that have no map, have no box."""
        if self.rf is None or self.center is None or self.record.whole_input:
            raise LayerError(f"layer {self.key} ({self.type}) has no receptive-field box: its "
                             f"units {'see the whole input' if self.record.whole_input else 'are not positions of a map'}.")
        if len(unit) != len(self.rf):
            raise LayerError(f"layer {self.key} has a {len(self.rf)}-d map; give "
                             f"{len(self.rf)} unit coordinates, not {len(unit)}.")
        lo, hi = [], []
        for u, r, j, c in zip(unit, self.rf, self.jump, self.center):
            mid = c + u * j
            lo.append(int(math.floor(mid - (r - 1) / 2 + 1e-9)))
            hi.append(int(math.floor(mid + (r - 1) / 2 + 1e-9)) + 1)
        if len(lo) == 1:
            return Box(0, lo[0], 1, hi[0])
        return Box(lo[0], lo[1], hi[0], hi[1])

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape)) if self.shape and not isinstance(
            self.shape[0], list) else str(self.shape)
        return f"{self.label} ({self.type}, {shape})"


# --------------------------------------------------------------------------- the tracer

class _Stop(Exception):
    """Raised inside the forward pass once every wanted row is recorded (``stop=True``)."""


class _RowTracer(Tracer):
    """The inspector's tracer, plus: the centre of each row's receptive field, and (on real
    tensors) the outputs of chosen rows."""

    def __init__(self, model, nd, input_extent, want: dict[int, str] | None = None,
                 stop: bool = False):
        super().__init__(model, nd, input_extent)
        self._center: dict[int, tuple | None] = {}
        self._hold: list[RF] = []
        self._last: list[RF] = []
        self._pending: RF | None = None
        self.centers: list[tuple | None] = []
        self.rfs: list[tuple | None] = []
        self.jumps: list[tuple | None] = []
        self.want = dict(want or {})
        self.stop = stop
        self.outputs: dict[int, Any] = {}

    # -- receptive-field centres ------------------------------------------------------
    def start(self, x: torch.Tensor) -> None:
        info = RF((1,) * self.nd, (1,) * self.nd, tuple(x.shape[2:]))
        self._center[id(info)] = (0.0,) * self.nd
        self.track(x, info)

    def lookup(self, ts):
        infos = super().lookup(ts)
        if infos:
            self._last = infos
        return infos

    def _merged_center(self):
        infos = self._last
        maps = [i for i in infos if any(e > 1 for e in i.extent)] or infos
        maps = [i for i in maps if self._center.get(id(i)) is not None]
        if not maps:
            return None
        best = max(maps, key=lambda i: (max(i.rf), -infos.index(i)))
        return self._center[id(best)]

    def _register(self, info: RF, center) -> None:
        if id(info) not in self._center:
            self._center[id(info)] = None if info.whole else center
            self._hold.append(info)

    def track(self, t, info):
        if id(info) not in self._center:
            p = self._pending       # the tracer's copy of what _propagate made (depth + 1)
            if p is not None and (p.rf, p.jump, p.extent, p.whole) == (
                    info.rf, info.jump, info.extent, info.whole):
                self._register(info, self._center.get(id(p)))
            else:                   # a merge of several operands
                self._register(info, self._merged_center())
        super().track(t, info)

    def _propagate(self, src, out, geometry, full):
        if id(src) not in self._center:
            self._register(src, self._merged_center())
        info = super()._propagate(src, out, geometry, full)
        if info is src:
            return info
        c = self._center.get(id(src))
        if c is None or info.whole:
            center = None
        elif geometry and "kernel" in geometry:
            pad = geometry.get("padding", 0)
            k, d = geometry["kernel"], geometry["dilation"]
            if pad == "same":
                pad = tuple((kk - 1) * dd / 2 for kk, dd in zip(k, d))
            elif pad == "valid":
                pad = (0,) * len(k)
            pad = pad if isinstance(pad, (tuple, list)) else (pad,) * len(k)
            center = tuple(cc + ((kk - 1) * dd / 2 - pp) * jj for cc, kk, dd, pp, jj in
                           zip(c, k, d, pad, src.jump))
        else:   # a resize the tracer knows by the size ratio only
            ratio = tuple(e / s for e, s in zip(src.extent, info.extent))
            center = tuple(cc + (r - 1) / 2 * jj for cc, r, jj in zip(c, ratio, src.jump))
        self._register(info, center)
        self._pending = info
        return info

    def _add(self, name, kind, inputs, out, x, *args, **kwargs):
        super()._add(name, kind, inputs, out, x, *args, **kwargs)
        outs = _tensors(out)
        info = self.info.get(id(outs[0])) if outs else None
        self.centers.append(self._center.get(id(info)) if info is not None else None)
        self.rfs.append(tuple(info.rf) if info is not None else None)
        self.jumps.append(tuple(info.jump) if info is not None else None)

    # -- recording outputs ------------------------------------------------------------
    def _took(self, n: int, out):
        if n not in self.want:
            return out
        rec = self.records[n]
        if rec.name != self.want[n]:
            raise LayerError(f"the model ran differently on the real input than on the "
                             f"traced one (row #{n + 1} is {rec.name}, expected "
                             f"{self.want[n]}); its forward pass depends on the data, so its "
                             f"rows cannot be addressed.")
        self.outputs[n] = out
        if isinstance(out, torch.Tensor):
            copy = out.clone()      # what the rest of the network computes on
            info = self.info.get(id(out))
            if info is not None:
                self.track(copy, info)
            out = copy
        if self.stop and len(self.outputs) == len(self.want):
            raise _Stop
        return out

    def post_hook(self, module, args, out):
        n = len(self.records)
        super().post_hook(module, args, out)
        if len(self.records) > n:
            self._in_hook = True
            try:
                return self._took(n, out)
            finally:
                self._in_hook = False
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        n = len(self.records)
        out = super().__torch_function__(func, types, args, kwargs)
        if len(self.records) > n:
            out = self._took(n, out)
        return out


def _run(model: nn.Module, x: torch.Tensor, tracer: _RowTracer, meta: bool):
    """One forward pass under ``tracer``; the hooks go, whatever happens."""
    from ..layers.probe import is_meta, meta_state

    modes = {m: m.training for m in model.modules()}
    tracer.start(x)
    h1 = nn.modules.module.register_module_forward_pre_hook(tracer.pre_hook)
    h2 = None
    out = None
    try:
        h2 = nn.modules.module.register_module_forward_hook(tracer.post_hook)
        model.eval()
        with tracer:
            try:
                if meta and not is_meta(model):
                    out = functional_call(model, meta_state(model), (x,))
                else:
                    out = model(x)
            except _Stop:
                out = None
    finally:
        h1.remove()
        if h2 is not None:
            h2.remove()
        for m, flag in modes.items():
            m.training = flag
    return out


# --------------------------------------------------------------------------- the table

def _size(model: nn.Module, input_size) -> tuple[int, ...]:
    from ..inspect.summary import check_size, parse_input_size

    if input_size is None:
        input_size = getattr(model, "input_size", None)
        if input_size is None:
            raise InputSizeError("give the input size (C, H, W) to address the layers of a "
                                 "model of your own.")
    if isinstance(input_size, str):
        return parse_input_size(input_size)
    return check_size(tuple(input_size))


def layer_table(model: nn.Module, input_size=None) -> list[Layer]:
    """Every row of ``model``'s summary at ``input_size`` (C, H, W) as a :class:`Layer`, in
    the table's order. Traced on meta tensors: costs milliseconds, allocates nothing."""
    size = _size(model, input_size)
    nd = len(size) - 1
    x = torch.empty((1, *size), device="meta")
    tracer = _RowTracer(model, nd, tuple(size[1:]))
    try:
        with torch.no_grad():
            _run(model, x, tracer, meta=True)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as exc:
        if isinstance(exc, DeeparchError):
            raise
        from ..layers.probe import describe_failure
        if tracer.stack:
            module, inputs = tracer.stack[-1]
            raise describe_failure(exc, tracer.names[id(module)], module,
                                   tuple(inputs[0].shape) if inputs else None) from None
        raise describe_failure(exc, "", None, tuple(x.shape)) from None
    modules = dict(model.named_modules())
    uses: dict[str, int] = {}
    rows = []
    for i, rec in enumerate(tracer.records):
        uses[rec.name] = uses.get(rec.name, 0) + 1
        rows.append(Layer(i, rec.name, uses[rec.name], rec, tracer.rfs[i], tracer.jumps[i],
                          tracer.centers[i],
                          None if rec.functional else modules.get(rec.name)))
    return rows


# --------------------------------------------------------------------------- specs

_USE = re.compile(r"^(.*)@(\d+)$")


def _close(word: str, names: Iterable[str]) -> str:
    names = list(dict.fromkeys(names))
    near = difflib.get_close_matches(word, names, n=5, cutoff=0.5)
    if not near:
        tail = word.rsplit(".", 1)[-1]
        near = [n for n in names if n.rsplit(".", 1)[-1].startswith(tail[:3])][:5] if tail \
            else []
    if near:
        return "; close names: " + ", ".join(near)
    sample = names[:4] + (["..."] if len(names) > 5 else []) + names[-1:] if len(names) > 5 \
        else names
    return "; its rows are " + ", ".join(sample)


def _one(table: list[Layer], spec, model: nn.Module) -> list[Layer]:
    n = len(table)
    if isinstance(spec, bool):
        raise UnknownLayerError(f"layer {spec!r} is not a layer name or row number.")
    if isinstance(spec, int) or (isinstance(spec, str) and re.fullmatch(r"#\s*-?\d+",
                                                                        spec.strip())):
        num = spec if isinstance(spec, int) else int(spec.strip()[1:])
        if not 1 <= num <= n:
            raise UnknownLayerError(f"row #{num} does not exist: the summary of this model "
                                    f"has rows #1 to #{n}.")
        return [table[num - 1]]
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownLayerError(f"layer {spec!r} is not a layer name, row number (#3) or "
                                f"glob (layer4.*).")
    spec = spec.strip()
    names = [r.name for r in table]
    if any(ch in spec for ch in "*?["):
        hit = [r for r in table if fnmatch.fnmatchcase(r.name, spec)]
        if not hit:
            raise UnknownLayerError(f"no layer matches {spec!r}{_close(spec, names)}.")
        return hit
    m = _USE.match(spec)
    name, use = (m.group(1), int(m.group(2))) if m else (spec, 1)
    hit = [r for r in table if r.name == name]
    if hit:
        if not 1 <= use <= len(hit):
            raise UnknownLayerError(
                f"layer {name} is used {len(hit)} time{'s' if len(hit) != 1 else ''} in the "
                f"forward pass; {spec} asks for use {use} (give {name}@1 to "
                f"{name}@{len(hit)}).")
        return [hit[use - 1]]
    inside = [r for r in table if r.name.startswith(name + ".")]
    if inside and name in dict(model.named_modules()):
        raise UnknownLayerError(
            f"{name} is a block of {len(inside)} rows ({inside[0].name} ... "
            f"{inside[-1].name}), not one row; name one of them, or {name}.* for all.")
    raise UnknownLayerError(f"this model has no layer {spec!r}{_close(name, names)}.")


def resolve_layers(model: nn.Module, spec, input_size=None,
                   table: list[Layer] | None = None) -> list[Layer]:
    """The rows of ``model``'s summary that ``spec`` names, in table order, each once.

    ``spec``: a name (``features.conv1``; ``act@2`` for a shared module's second use), a row
    number (``"#3"`` or ``3``), a glob (``layer4.*``), a comma-separated string of these, or a
    list of them. ``input_size`` is (C, H, W) (default: ``model.input_size``). An unknown
    name raises :class:`~deeparch.errors.UnknownLayerError` listing the close names.
    """
    table = table if table is not None else layer_table(model, input_size)
    if isinstance(spec, str) and "," in spec:
        items: Sequence = [s for s in spec.split(",") if s.strip()]
    elif isinstance(spec, (list, tuple)):
        items = spec
    else:
        items = [spec]
    if not items:
        raise UnknownLayerError("no layer was named; give a name, a row number (#3) or a glob.")
    chosen: dict[int, Layer] = {}
    for item in items:
        for row in _one(table, item, model):
            chosen.setdefault(row.index, row)
    return [chosen[i] for i in sorted(chosen)]


def resolve_layer(model: nn.Module, spec, input_size=None,
                  table: list[Layer] | None = None) -> Layer:
    """Exactly one row (see :func:`resolve_layers`); a glob matching several is refused."""
    if isinstance(spec, Layer):
        return spec
    rows = resolve_layers(model, spec, input_size, table)
    if len(rows) != 1:
        raise UnknownLayerError(f"{spec!r} names {len(rows)} layers ({rows[0].key}, "
                                f"{rows[1].key}{', ...' if len(rows) > 2 else ''}); name one.")
    return rows[0]


# --------------------------------------------------------------------------- capture

def capture(model: nn.Module, x: torch.Tensor, layers, *, grad: bool = False,
            stop: bool = False, table: list[Layer] | None = None):
    """Run ``model`` on ``x`` (N x C x ...) in eval mode and return ``(output, outputs)``:
    ``outputs`` is a list with, for each of ``layers`` (specs or :class:`Layer` s, see
    :func:`resolve_layers`), the tensor its row outputs -- exactly, unscaled.

    ``grad=True`` keeps the graph: ``torch.autograd.grad(f(outputs[0]), x)`` or a gradient
    with respect to a recorded output works (in-place operations further on cannot break
    it). ``stop=True`` ends the forward pass once the last chosen row has run (``output`` is
    then None): cheaper for a layer early in a big network. The training flags of every
    module are restored, and no hook stays behind, also after an error.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        raise InputSizeError(f"capture needs a batch N x C x H x W, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    if table is None:
        table = layer_table(model, tuple(x.shape[1:]))
    rows = []
    specs = layers if isinstance(layers, (list, tuple)) else [layers]
    for spec in specs:
        rows.extend([spec] if isinstance(spec, Layer) else resolve_layers(model, spec,
                                                                           table=table))
    want = {r.index: r.name for r in rows}
    tracer = _RowTracer(model, x.dim() - 2, tuple(x.shape[2:]), want, stop)
    with torch.set_grad_enabled(bool(grad)):
        out = _run(model, x, tracer, meta=False)
    missing = [r for r in rows if r.index not in tracer.outputs]
    if missing:
        raise LayerError(f"layer {missing[0].key} did not run on this input (the forward pass "
                         f"took another path than the traced one).")
    return out, [tracer.outputs[r.index] for r in rows]


def count_hooks(model: nn.Module) -> int:
    """Hooks registered on ``model``'s modules plus the global module hooks (0 when nothing
    is left behind)."""
    from torch.nn.modules import module as M

    n = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks"):
            n += len(getattr(m, attr, {}) or {})
    for attr in ("_global_forward_hooks", "_global_forward_pre_hooks",
                 "_global_backward_hooks", "_global_backward_pre_hooks"):
        n += len(getattr(M, attr, {}) or {})
    return n


# --------------------------------------------------------------------------- networks and images
# What the `deeparch look ...` actions share: a network named on the command line (a run
# folder, RUN@best|last|init, or a model name / pattern with its weights) and the one image it
# is shown (a file, or sample N of a data set), fitted the way the network reads images.

@dataclass
class Network:
    """A network to look inside, with how it reads images."""

    model: nn.Module
    name: str
    input_size: tuple[int, int, int]
    preprocess: Any                   # deeparch.transfer.preprocess.Preprocess
    classes: list[str] | None
    source: str                       # what was named on the command line
    run: dict | None = None           # a run's config.json
    notes: list[str] | None = None


@dataclass
class Shown:
    """One image as the network sees it."""

    image: torch.Tensor               # uint8 C x H x W, after fitting (what is drawn)
    x: torch.Tensor                   # 1 x C x H x W float, normalised (what the network reads)
    source: str                       # the file, or "fashion_mnist test #3"
    notes: list[str]
    label: int | None = None          # the data set's label of a sample


_WHICH = ("best", "last", "init", "model")


def load_network(source, weights=None, seed: int = 0) -> Network:
    """A run folder (``RUN@best``/``RUN@last`` for a checkpoint, ``RUN@init`` for its
    architecture re-initialised from ``seed``), or a registered model name / pattern with its
    ``weights`` file (at its initialisation without one)."""
    from pathlib import Path

    from ..transfer.predict import load_model
    from ..transfer.preprocess import Preprocess

    text = str(source)
    which = None
    m = re.match(r"^(.*)@(best|last|init|model)$", text)
    if m and not Path(text).exists():
        text, which = m.group(1), m.group(2)
    run = None
    if which is not None:
        from ..train.run import load_run
        if not Path(text).is_dir():
            raise DataError(f"{source}: @{which} picks a checkpoint of a run folder, but "
                            f"{text} is not a folder.")
        net, run = load_run(text, "model" if which == "init" else which)
        if which == "init":
            torch.manual_seed(seed)
            for mod in net.modules():
                if hasattr(mod, "reset_parameters"):
                    mod.reset_parameters()
        c, h, w = run["input_size"]
        pre = Preprocess("deeparch", tuple(run["mean"]), tuple(run["std"]),
                         size=h if h == w else None, channels=c)
        label = f"{run['model'] if len(run['model']) <= 40 else 'pattern'} " \
                f"({Path(text).name}@{which})"
        return Network(net, label, (c, h, w), pre, list(run["classes"]), str(source), run, [])
    got = load_model(text, weights=weights, seed=seed)
    if got.kind == "run":
        from ..train.run import read_run_config
        run = read_run_config(text)
    if got.input_size is None:
        raise InputSizeError(f"nothing says what input size {got.name} takes; give a pattern "
                             f"with INPUT(C,H,W) or a registered model.")
    c = got.input_size[0]
    pre = got.preprocess or Preprocess("pixel/255", (0.0,) * c, (1.0,) * c,
                                       size=got.input_size[1], channels=c)
    return Network(got.model, got.name, tuple(got.input_size), pre, got.classes, str(source),
                   run, list(got.notes))


def load_shown(net: Network, image=None, data=None, sample=None, data_dir=None) -> Shown:
    """The image ``net`` is shown: an image ``file`` or ``sample`` N of ``data``'s test split
    (a run's own data by default), matched to the network's channels and resized to its
    input size (the notes say what was done)."""
    from ..transfer.preprocess import fit_images

    c, h, w = net.input_size
    if (image is None) == (sample is None):
        raise DataError("give one image: --image FILE, or --sample N (of --data DATA, or of a "
                        "run's own data).") if image is None else \
            DataError("give either --image or --sample, not both.")
    notes: list[str] = []
    label = None
    if image is not None:
        if data is not None:
            raise DataError("--data goes with --sample, not with --image.")
        from ..transfer.predict import read_images
        raw = read_images([image])[0][None]
        where = str(image)
    else:
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise DataError(f"--sample must be a whole number >= 0, got {sample!r}.")
        if data is None:
            if net.run is None:
                raise DataError(f"{net.source} is not a run folder, so it has no data of its "
                                f"own; give --data DATA with --sample.")
            data = net.run["data"]
        from ..train.run import load_data
        _, test, _ = load_data(data, data_dir)
        if sample >= len(test):
            raise DataError(f"--sample {sample} is past the end: {data}'s test split has "
                            f"{len(test)} images (0 to {len(test) - 1}).")
        raw = test.images[sample:sample + 1]
        label = int(test.labels[sample])
        where = f"{data} test #{sample}"
    got = f"{raw.shape[1]}x{raw.shape[2]}x{raw.shape[3]}"
    pre = net.preprocess
    if pre.size is not None and pre.resize and (h, w) == (pre.size, pre.size):
        fitted, how = fit_images(raw, pre, crop=True)
    else:
        fitted, how = fit_images(raw, pre, size=None)
        if tuple(fitted.shape[2:]) != (h, w):
            from ..data import resize_images
            fitted = resize_images(fitted, (h, w))
            how = how + [f"resized from {raw.shape[2]}x{raw.shape[3]} to {h}x{w}"]
    if how:
        notes.append(f"the network takes {c}x{h}x{w} and the image is {got}: "
                     + "; ".join(how))
    x = pre.normalise(fitted)
    return Shown(fitted[0], x, where, notes, label)
