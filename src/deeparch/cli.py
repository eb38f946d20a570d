"""The ``deeparch`` command: a thin layer over the Python API.

User errors print one sentence to stderr and exit with status 2; nothing else is printed.
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from typing import Any, Sequence

from . import __version__
from .errors import DeeparchError, ModelOptionError


def _options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """``['alpha=0.5', 'groups=2']`` -> ``{'alpha': 0.5, 'groups': 2}``."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ModelOptionError(f"option {pair!r} must be written KEY=VALUE, e.g. alpha=0.5.")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def _target(name: str, options: dict[str, Any]):
    """A registered name with options becomes a built (meta) model; otherwise the name itself."""
    if not options:
        return name
    import torch

    from .models.registry import accepts, create_model, model_info
    card = model_info(name)
    with torch.device("meta"):
        model = create_model(name, **options)
    model.input_size = card.input_size
    if accepts(name, "img_size") and "img_size" not in options:
        model.input_size = card.input_size
    return model


def cmd_models(args) -> int:
    from .models.registry import list_models, model_info
    from .inspect.render import human_count
    from .inspect.summary import summary
    rows = []
    for name in list_models(args.filter, args.family):
        card = model_info(name)
        s = summary(name)
        rows.append({"name": name, "family": card.family, "year": card.year,
                     "input_size": list(card.input_size), "params": s.total_params,
                     "macs": s.macs, "published_params": card.params,
                     "published_macs": card.macs})
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    head = ("name", "family", "year", "input", "params", "mult-adds")
    table = [(r["name"], r["family"], str(r["year"]), "x".join(map(str, r["input_size"])),
              human_count(r["params"]), human_count(r["macs"])) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *table)] if table else [len(h) for h in head]
    for line in [head] + table:
        print("  ".join(c.rjust(w) if i >= 4 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return 0


def cmd_info(args) -> int:
    from .models.registry import model_info
    card = model_info(args.name)
    d = card.to_dict()
    if args.format == "json":
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        print(f"{k:>16}: {v}")
    return 0


def cmd_summary(args) -> int:
    from .inspect.summary import summary
    s = summary(_target(args.model, _options(args.option)), input_size=args.input_size)
    print(s.render(args.format))
    return 0


def cmd_explain(args) -> int:
    from .errors import ShapeError
    from .inspect.explain import explain
    try:
        ex = explain(_target(args.model, _options(args.option)), input_size=args.input_size,
                     layer=args.layer)
    except ShapeError as exc:
        partial = getattr(exc, "explanation", None)
        if partial is not None and partial.layers:
            print(partial.text().replace(f"! {exc}\n", ""), end="")
        raise
    print(ex.text(), end="")
    return 0


def cmd_compare(args) -> int:
    from .inspect.compare import compare, render_comparison
    rows = compare(args.models, input_size=args.input_size)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        print(render_comparison(rows))
    if args.plot:
        from .viz.complexity import plot_complexity
        print(f"complexity chart: {plot_complexity(rows, args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deeparch",
        description="Build, inspect, train, look inside, transfer and shrink deep CNNs.")
    p.add_argument("--version", action="version", version=f"deeparch {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    m = sub.add_parser("models", help="list the registered architectures",
                       description="List the registered architectures with their parameters "
                                   "and mult-adds at the default input size.")
    m.add_argument("filter", nargs="?", help="a glob or substring, e.g. 'vgg*'")
    m.add_argument("--family", help="only this family, e.g. resnet")
    m.add_argument("--format", choices=("table", "json"), default="table")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("info", help="show a model's card (paper, year, published figures)")
    i.add_argument("name")
    i.add_argument("--format", choices=("text", "json"), default="text")
    i.set_defaults(func=cmd_info)

    def model_args(sp):
        sp.add_argument("model", metavar="NAME|PATTERN",
                        help="a registered model name, or a layer pattern in quotes, e.g. "
                             "'INPUT(32x32x3) -> [CONV3-32 -> RELU -> POOL2]*2 -> FC-10'")
        sp.add_argument("--input-size", metavar="C,H,W", help="input size, channels first")
        sp.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                        help="a model knob, e.g. -o alpha=0.5 (repeatable)")

    s = sub.add_parser("summary", help="per-layer shapes, params, mult-adds, memory, receptive field",
                       description="Summarise a model or a layer pattern, layer by layer.")
    model_args(s)
    s.add_argument("--format", choices=("table", "keras", "markdown", "json"), default="table")
    s.set_defaults(func=cmd_summary)

    e = sub.add_parser("explain", help="the arithmetic of each layer, step by step",
                       description="Show how each layer's output size, parameters, mult-adds, "
                                   "memory and receptive field are computed, and flag surprises.")
    model_args(e)
    e.add_argument("--layer", action="append", metavar="L",
                   help="only this layer (name, glob or 1-based index); repeatable")
    e.set_defaults(func=cmd_explain)

    c = sub.add_parser("compare", help="several models side by side, and the complexity chart",
                       description="Compare models (params, mult-adds, memory, depth, receptive "
                                   "field) and optionally plot mult-adds against parameters.")
    c.add_argument("models", nargs="+", metavar="NAME|PATTERN")
    c.add_argument("--input-size", metavar="C,H,W", help="one input size for all (default: each "
                                                         "model's own)")
    c.add_argument("--plot", metavar="PNG", help="write the complexity chart to this PNG file")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(func=cmd_compare)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DeeparchError as exc:
        print(f"deeparch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deeparch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
