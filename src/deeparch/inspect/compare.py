"""Several networks side by side: parameters, mult-adds, memory, depth, receptive field."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .summary import summary


@dataclass
class Comparison:
    name: str
    input_size: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int
    param_bytes: int
    depth: int
    receptive_field: object

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def compare(names, input_size=None) -> list[Comparison]:
    """Summarise each model (or pattern) at its default input size, or at ``input_size``."""
    out = []
    for name in names:
        s = summary(name, input_size=input_size)
        out.append(Comparison(s.model, tuple(s.input_size), s.total_params, s.macs,
                              s.activation_bytes, s.param_bytes, s.depth, s.receptive_field))
    return out


def render_comparison(rows: list[Comparison]) -> str:
    from .render import human_bytes, human_count
    head = ("model", "input", "params", "mult-adds", "activations", "weights", "depth", "RF")
    table = [(r.name, "x".join(map(str, r.input_size)), human_count(r.params),
              human_count(r.macs), human_bytes(r.activation_bytes), human_bytes(r.param_bytes),
              str(r.depth), str(r.receptive_field)) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *table)]
    lines = ["  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in
                       enumerate(zip(line, widths))).rstrip() for line in [head] + table]
    return "\n".join(lines)
