"""Renderers of a :class:`~deeparch.inspect.summary.Summary`: table, keras, markdown, json."""
from __future__ import annotations

from .._format import human_bytes, human_count  # noqa: F401  (re-exported)
from ..errors import DeeparchError

FORMATS = ("table", "keras", "markdown", "json")


def dims(shape) -> str:
    """``[96, 55, 55]`` -> ``96x55x55`` (a list of shapes for multi-output layers)."""
    if shape and isinstance(shape[0], list):
        return ", ".join(dims(s) for s in shape)
    return "x".join(str(s) for s in shape) if shape else "scalar"


def channels_last(shape) -> str:
    if shape and isinstance(shape[0], list):
        return ", ".join(channels_last(s) for s in shape)
    s = list(shape)
    if len(s) >= 2:
        s = s[1:] + s[:1]
    return "(None, " + ", ".join(str(v) for v in s) + ")"


def _rf(r) -> str:
    if r.receptive_field is None:
        return "-"
    rf = r.receptive_field
    return "x".join(map(str, rf)) if isinstance(rf, list) else str(rf)


def _jump(r) -> str:
    if r.jump is None:
        return "-"
    return "x".join(map(str, r.jump)) if isinstance(r.jump, list) else str(r.jump)


def receptive_field_text(s) -> str:
    """The footer's receptive field: the last feature map's and, when the output depends on
    every pixel (a dense layer or a global pooling), that too, as the last rows show it."""
    rf = s.receptive_field
    if not s.sees_whole_input:
        return "-" if rf is None else _rf_value(rf)
    whole = "x".join(map(str, s.input_size[1:]))
    if rf is None:
        return f"the whole {whole} input"
    return f"{_rf_value(rf)} (last feature map); the output sees the whole {whole} input"


def _rf_value(rf) -> str:
    return "x".join(map(str, rf)) if isinstance(rf, list) else str(rf)


def totals_lines(s) -> list[str]:
    nb = s.bytes_per_value
    return [
        f"Total params: {s.total_params:,} ({human_bytes(s.param_bytes)} at {nb} bytes)",
        f"Trainable params: {s.trainable_params:,}",
        f"Non-trainable params: {s.non_trainable_params:,}",
        f"Mult-adds: {s.macs:,} ({human_count(s.macs)})",
        f"Activations: {s.activations:,} values incl. the input "
        f"({human_bytes(s.activation_bytes)} forward per image)",
        f"Input: {dims(list(s.input_size))}   Output: {dims(s.output_shape)}   "
        f"Receptive field: {receptive_field_text(s)}",
    ]


def _table(s) -> str:
    head = ["#", "Layer", "Type", "Output", "Params", "Mult-adds", "Activations", "RF", "Jump"]
    rows = [[str(i), r.name, r.type, dims(r.output_shape), f"{r.params:,}", f"{r.macs:,}",
             f"{r.activations:,}", _rf(r), _jump(r)] for i, r in enumerate(s.layers, 1)]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    right = {0, 4, 5, 6, 7, 8}

    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(fmt(head))
    out = [f"Model: {s.model}   input {dims(list(s.input_size))}", rule, fmt(head), rule]
    out += [fmt(r) for r in rows]
    out += [rule] + totals_lines(s)
    return "\n".join(out)


_KERAS_TYPES = {
    "Conv2d": "Conv2D", "Conv1d": "Conv1D", "Linear": "Dense", "Dense": "Dense",
    "MaxPool2d": "MaxPooling2D", "AvgPool2d": "AveragePooling2D", "MaxPool1d": "MaxPooling1D",
    "AvgPool1d": "AveragePooling1D", "Dropout": "Dropout", "Flatten": "Flatten",
    "BatchNorm2d": "BatchNormalization", "BatchNorm1d": "BatchNormalization",
    "GlobalAvgPool2d": "GlobalAveragePooling2D", "GlobalMaxPool2d": "GlobalMaxPooling2D",
    "AdaptiveAvgPool2d": "GlobalAveragePooling2D", "DepthwiseConv2d": "DepthwiseConv2D",
    "PointwiseConv2d": "Conv2D", "add": "Add", "add_": "Add", "cat": "Concatenate",
    "mul": "Multiply", "ZeroPad2d": "ZeroPadding2D", "LayerNorm": "LayerNormalization",
}
_ACT_TYPES = {"ReLU", "ReLU6", "Tanh", "Sigmoid", "Softmax", "GELU", "SiLU", "ELU",
              "LeakyReLU", "Hardswish", "Hardsigmoid", "relu", "relu_", "sigmoid", "tanh"}


def _keras_name(name: str) -> str:
    for prefix in ("features.", "head."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _keras(s) -> str:
    rows = []
    for r in s.layers:
        kt = "Activation" if r.type in _ACT_TYPES else _KERAS_TYPES.get(r.type, r.type)
        rows.append((f"{_keras_name(r.name)} ({kt})", channels_last(r.output_shape), f"{r.params:,}"))
    w0 = max([28] + [len(a) + 1 for a, _, _ in rows])
    w1 = max([26] + [len(b) + 1 for _, b, _ in rows])
    width = w0 + w1 + 12
    out = [f'Model: "{s.model}"', "_" * width,
           f"{'Layer (type)'.ljust(w0)}{'Output Shape'.ljust(w1)}Param #", "=" * width]
    for i, (a, b, c) in enumerate(rows):
        out.append(f"{a.ljust(w0)}{b.ljust(w1)}{c}")
        out.append("=" * width if i == len(rows) - 1 else "_" * width)
    out += [f"Total params: {s.total_params:,}", f"Trainable params: {s.trainable_params:,}",
            f"Non-trainable params: {s.non_trainable_params:,}", "_" * width]
    return "\n".join(out)


def _markdown(s) -> str:
    out = [f"**{s.model}** — input {dims(list(s.input_size))}", "",
           "| # | Layer | Type | Output | Params | Mult-adds | Activations | RF | Jump |",
           "|---:|---|---|---|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(s.layers, 1):
        out.append(f"| {i} | `{r.name}` | {r.type} | {dims(r.output_shape)} | {r.params:,} | "
                   f"{r.macs:,} | {r.activations:,} | {_rf(r)} | {_jump(r)} |")
    out.append("")
    out += [f"- {line}" for line in totals_lines(s)]
    return "\n".join(out)


def render(s, format: str = "table") -> str:
    if format == "json":
        return s.to_json()
    fn = {"table": _table, "keras": _keras, "markdown": _markdown}.get(format)
    if fn is None:
        raise DeeparchError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}.")
    return fn(s)
