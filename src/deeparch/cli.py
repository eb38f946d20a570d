"""The ``deeparch`` command: a thin layer over the Python API.

User errors print one sentence to stderr and exit with status 2; nothing else is printed.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from ._format import human_count as _human_count
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
    from .errors import UnknownModelError
    from .models.registry import catalog, families, known_models
    order = {f: i for i, f in enumerate(families())}
    if args.family and args.family not in order:
        raise UnknownModelError(f"unknown family {args.family!r}; the families are "
                                f"{', '.join(order)}.")
    entries = catalog(args.filter, args.family)
    if not entries:
        where = f"no {args.family} model" if args.family else "no model"
        raise UnknownModelError(f"{where} matches {args.filter!r}; `deeparch models` lists all "
                                f"{len(known_models())}.")
    # families oldest first, then by size within a family
    entries.sort(key=lambda e: (order[e["card"]["family"]], e["params"], e["name"]))
    rows = [{"name": e["name"], "family": e["card"]["family"], "year": e["card"]["year"],
             "input_size": list(e["card"]["input_size"]), "params": e["params"],
             "macs": e["macs"], "published_params": e["card"]["published_params"],
             "published_macs": e["card"]["published_macs"]} for e in entries]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    head = ("name", "family", "year", "input", "params", "mult-adds")
    table = [(r["name"], r["family"], str(r["year"]), "x".join(map(str, r["input_size"])),
              _human_count(r["params"]), _human_count(r["macs"])) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *table)]
    for line in [head] + table:
        print("  ".join(c.rjust(w) if i >= 4 else c.ljust(w)
                        for i, (c, w) in enumerate(zip(line, widths))).rstrip())
    return 0


def cmd_info(args) -> int:
    from .models.registry import card_dict
    d = card_dict(args.name)
    if args.format == "json":
        print(json.dumps(d, indent=2))
        return 0
    for k, v in d.items():
        print(f"{k:>16}: {v}")
    return 0


def cmd_summary(args) -> int:
    from .inspect.summary import summary
    if getattr(args, "arch", None):
        target, size = _arch_target(args)
        s = summary(target, input_size=args.input_size or size)
    else:
        if not args.model:
            raise ModelOptionError("deeparch summary needs a MODEL (a name or a pattern), or "
                                   "--arch ARCH|FILE with --space SPACE.")
        s = summary(_target(args.model, _options(args.option)), input_size=args.input_size)
    print(s.render(args.format))
    return 0


def _arch_target(args):
    """``--arch STRING|FILE --space SPACE``: the architecture built on the meta device."""
    import torch

    from .search.loop import read_arch_spec, space_for_arch
    if args.model or args.option:
        raise ModelOptionError("give either a MODEL or --arch, not both (an architecture "
                               "string fixes the network; -o does not apply).")
    text, spec = read_arch_spec(args.arch)
    space = space_for_arch(text, spec, args.space)
    arch = space.decode(text)
    with torch.device("meta"):
        model = space.build(arch)
    return model, tuple(space.input_size(arch))


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


# --------------------------------------------------------------------------- search

def _amount(text: str | None, what: str) -> float | None:
    """``50M``, ``1.5k``, ``5e7`` -> a float (for --max-macs and friends)."""
    if text is None:
        return None
    from .errors import SearchError
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1.0)
    try:
        value = float(t[:-1] if scale != 1.0 else t)
    except ValueError:
        raise SearchError(f"{what} must be a number such as 50M or 5e7, not {text!r}.") from None
    return value * scale


def cmd_search(args) -> int:
    from .search.loop import search
    strategies = [x for part in (args.strategy or ["evolution"]) for x in part.split(",") if x]
    obj_opts = _options(args.objective_option)
    if args.table is not None:
        obj_opts["path"] = args.table
    if args.data is not None:
        obj_opts["data"] = args.data
    if args.epochs is not None:
        obj_opts["epochs"] = args.epochs
    if args.reward_target is not None:
        obj_opts.update(reward_target=_amount(args.reward_target, "--reward-target"),
                        reward_cost=args.reward_cost)
    caps = {k: v for k, v in (("max_params", _amount(args.max_params, "--max-params")),
                              ("max_macs", _amount(args.max_macs, "--max-macs")),
                              ("max_latency_ms", args.max_latency_ms)) if v is not None}
    log = None if args.no_progress else (lambda line: print(line, file=sys.stderr, flush=True))
    seeds = list(range(args.seed, args.seed + args.seeds)) if args.seeds >= 1 else args.seeds
    reference = None
    from .search.loop import get_space
    space = get_space(args.space, **_options(args.space_option))
    results = search(space, strategies, args.objective, args.budget, seeds, args.out,
                     strategy_options=_options(args.strategy_option), objective_options=obj_opts,
                     force=args.force, log=log, reference=reference, **caps)
    best = max(results, key=lambda r: r.best_score)
    if args.format == "json":
        print(json.dumps({"best": best.best, "best_score": best.best_score,
                          "runs": [r.to_dict() for r in results]}, indent=2))
    else:
        for name in strategies:
            rs = [r for r in results if r.strategy == name]
            mean = sum(r.best_score for r in rs) / len(rs)
            print(f"{name:>10}: best {args.objective} {max(r.best_score for r in rs):.4g} "
                  f"(mean over {len(rs)} seed(s) {mean:.4g}) after {args.budget} queries")
        print(f"best: {best.best}  ({best.objective} {best.best_score:.4g}, {best.strategy} "
              f"seed {best.seed})")
        if args.out:
            print(f"wrote {Path(args.out) / 'history.jsonl'}, best_so_far.png, best.txt, "
                  f"search.json")
    return 0


# --------------------------------------------------------------------------- training

_TRAIN_FIELDS = {
    # argparse dest -> TrainConfig field
    "epochs": "epochs", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
    "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay",
    "schedule": "schedule", "step_size": "step_size", "gamma": "gamma",
    "plateau_patience": "plateau_patience", "min_lr": "min_lr", "warmup": "warmup_epochs",
    "label_smoothing": "label_smoothing", "early_stopping": "early_stopping",
    "grad_clip": "grad_clip", "aux_weight": "aux_weight", "seed": "seed", "device": "device",
    "precision": "precision", "augment": "augment", "val_split": "val_split",
    "subset": "subset", "tensorboard": "tensorboard", "restore_best": "restore_best",
    "threads": "threads", "lr_backbone": "lr_backbone",
    "temperature": "temperature", "alpha": "alpha",          # distillation, with --teacher
}


def _train_changes(args) -> dict[str, Any]:
    changes = {}
    if args.recipe:
        from .train.config import RECIPES
        if args.recipe not in RECIPES:
            from .errors import TrainingError
            raise TrainingError(f"unknown recipe {args.recipe!r}; recipes are "
                                f"{', '.join(RECIPES)}.")
        changes.update(RECIPES[args.recipe])
    for dest, fld in _TRAIN_FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            changes[fld] = value
    return changes


def _image_size(text: str | None):
    if text is None:
        return None
    from .errors import DataError
    parts = text.lower().replace("x", ",").split(",")
    try:
        sizes = [int(p) for p in parts if p.strip()]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise DataError(f"--image-size must be N or HxW (e.g. 32 or 28x28), got {text!r}.")
    return sizes[0] if len(sizes) == 1 else sizes


# what --resume accepts besides DIR: everything else would be silently ignored or would
# change the run, so it is refused (see deeparch.train.run.resume)
_RESUME_FLAGS = {"resume", "epochs", "resume_from", "no_progress", "threads"}


def _flags_given(args, parser_defaults: dict[str, Any]) -> list[str]:
    given = []
    for dest, value in vars(args).items():
        if dest in ("func", "command", "model") or dest in _RESUME_FLAGS:
            continue
        if value != parser_defaults.get(dest):
            given.append(flag_for(dest))
    return given


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _stdout_log():
    """``print`` for the run's log lines that survives a reader who left (``train | head``):
    training goes on, the rest of its lines go nowhere. API keywords in the lines (a
    reader's note on resizing, say) are written as the command's flags."""
    state = {"closed": False}

    def log(line: str) -> None:
        if state["closed"]:
            return
        try:
            print(cli_message(line), flush=True)      # notes name flags, not API keywords
        except BrokenPipeError:
            state["closed"] = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())    # also for Python's flush at exit
            os.close(devnull)
    return log


def cmd_train(args) -> int:
    import signal

    from .errors import TrainingError
    progress = False if args.no_progress else None
    from .train import distributed
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    log = _stdout_log()
    try:
        if args.resume:
            if args.model or args.data:
                raise TrainingError("--resume DIR continues the run saved in DIR; leave out the "
                                    "model and --data (they are in DIR/config.json).")
            given = _flags_given(args, _TRAIN_DEFAULTS)
            if given:
                raise TrainingError(
                    f"--resume continues a run with its own settings, so {', '.join(given)} "
                    f"cannot apply; only --epochs (to train longer), --from best and "
                    f"--threads may be given, and a run with other settings is a new run "
                    f"(deeparch train ... --out NEWDIR).")
            from .train.run import resume
            try:
                resume(args.resume, epochs=args.epochs, checkpoint=args.resume_from,
                       threads=args.threads, progress=progress, log=log)
            except KeyboardInterrupt:
                print(f"deeparch: continue with: deeparch train --resume {args.resume}",
                      file=sys.stderr)
                raise
            return 0
        if args.resume_from != "last":
            raise TrainingError("--from applies to --resume DIR only.")
        if args.arch:                   # a searched architecture: recorded as search:SPACE:ARCH
            if args.model:
                raise TrainingError("give either a MODEL or --arch, not both.")
            from .search.loop import arch_model_name, read_arch_spec, space_for_arch
            text, spec = read_arch_spec(args.arch)
            args.model = arch_model_name(space_for_arch(text, spec, args.space), text)
        elif args.space:
            raise TrainingError("--space applies to --arch only.")
        if not (args.model or args.from_run) or not args.data:
            raise TrainingError("deeparch train needs a MODEL (or a pattern) and --data "
                                "NAME|PATH, or --resume DIR.")
        changes = _train_changes(args)
        for dest in ("temperature", "alpha"):
            if getattr(args, dest, None) is not None and not args.teacher:
                raise TrainingError(f"--{dest} is a setting of distillation; give --teacher "
                                    f"RUN with it, or leave it out.")
        if args.teacher and args.overfit is not None:
            raise TrainingError("--overfit checks the model alone, without a teacher; leave "
                                "--teacher out.")
        if args.overfit is not None:
            return _overfit(args, changes)
        if not args.out:
            raise TrainingError("deeparch train needs --out DIR, the folder for the run's "
                                "files.")
        from .train.run import train
        try:
            train(args.model, args.data, args.out, args.data_dir, force=args.force,
                  model_options=_options(args.option), image_size=_image_size(args.image_size),
                  download=args.download, progress=progress, log=log, weights=args.weights,
                  from_run=args.from_run, regime=args.regime, teacher=args.teacher,
                  **changes)
        except KeyboardInterrupt:
            if (Path(args.out) / "checkpoints" / "last.safetensors").is_file():
                print(f"deeparch: continue with: deeparch train --resume {args.out}",
                      file=sys.stderr)
            raise
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        distributed.cleanup()


def _overfit(args, changes: dict[str, Any]) -> int:
    from .train.config import make_config
    from .train.run import build_model, load_data
    from .train.trainer import overfit_check
    cfg = make_config(**changes)
    train, _, _ = load_data(args.data, args.data_dir, args.download, _image_size(args.image_size))
    c, h, w = train.input_size
    size = _image_size(args.image_size)
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
    model, input_size, note = build_model(args.model, train.num_classes, (c, h, w),
                                          _options(args.option), seed=cfg.seed)
    if note:
        print(note)
    if tuple(train.images.shape[2:]) != tuple(input_size[1:]):
        import dataclasses
        from .data import resize_images
        train = dataclasses.replace(train, images=resize_images(train.images, input_size[1:]))
    steps = args.overfit_steps
    report = overfit_check(model, train, n=args.overfit, steps=steps, lr=cfg.lr,
                           optimizer=cfg.optimizer, seed=cfg.seed, device=cfg.device)
    print(report.message())
    return 0 if report.passed else 1


def cmd_evaluate(args) -> int:
    from .train.run import evaluate
    m = evaluate(args.runs, crops=args.crops, crop_size=args.crop_size, which=args.weights,
                 device=args.device)
    if args.format == "json":
        print(json.dumps(m, indent=2))
        return 0
    what = args.runs[0] if len(args.runs) == 1 else f"ensemble of {len(args.runs)} runs"
    print(f"{what}: {m['n']} test images, {m['crops']} crops, {m['weights']} weights")
    print(f"  loss      {m['loss']:.4f}")
    print(f"  accuracy  {m['accuracy']:.2%}")
    print(f"  top-{m['top5_k']}     {m['top5']:.2%}")
    classes = m.get("classes") or [str(i) for i in range(len(m["per_class_accuracy"]))]
    width = max(len(c) for c in classes)
    print("  per class:")
    for c, a in zip(classes, m["per_class_accuracy"]):
        print(f"    {c:<{width}}  {'-' if a is None else f'{a:.2%}'}")
    return 0


def cmd_augment(args) -> int:
    from .data import load_dataset, subset
    from .data.augment import augment_from_spec, pre_augment
    from .errors import DataError
    if not args.preview and not args.save:
        raise DataError("deeparch augment needs --preview PNG (a picture of the augmentation) "
                        "and/or --expand N --save FILE.npz (pre-augmentation).")
    aug = augment_from_spec(args.augment, seed=args.seed)
    if args.preview:                   # bad numbers are refused before any data is read
        from .viz.grid import check_preview
        check_preview(args.n, args.samples, seed=args.seed)
    if args.save and args.expand is None:
        raise DataError("--save needs --expand N, the number of copies (1 = the originals).")
    if args.expand is not None and args.expand < 1:
        raise DataError(f"--expand must be a whole number >= 1 (1 = the originals), got "
                        f"{args.expand}.")
    ds = load_dataset(args.data, args.split, root=args.data_dir)
    if args.preview:
        from .viz.grid import preview
        picked = subset(ds, min(args.n, len(ds)), seed=args.seed)
        path = preview(aug, picked.images, args.preview, n=args.n, samples=args.samples,
                       seed=args.seed)
        print(f"preview: {path}")
    if args.save:
        images, labels = pre_augment(ds.images, ds.labels, aug, args.expand, seed=args.seed,
                                     path=args.save, classes=ds.classes, groups=ds.groups)
        print(f"pre-augmented {len(ds)} -> {len(images)} images: {args.save}")
    return 0


# --------------------------------------------------------------------------- weights

def cmd_identify(args) -> int:
    from .transfer import identify
    names = identify(args.file)
    if args.format == "json":
        print(json.dumps(names))
        return 0
    if not names:
        from .errors import WeightsError
        raise WeightsError(f"{args.file} fits no registered model; `deeparch models` lists "
                           f"them.")
    print(f"{args.file} fits: {', '.join(names)}")
    return 0


def cmd_convert(args) -> int:
    from .transfer import convert
    path = convert(args.file, args.model, args.output)
    print(f"converted {args.file} -> {path}")
    return 0


def cmd_weights(args) -> int:
    from .transfer import hub
    if args.action == "list":
        entries = hub.known(args.source)
        if args.format == "json":
            print(json.dumps([e.to_dict() for e in entries], indent=2))
            return 0
        width = max(len(e.name) for e in entries)
        for e in entries:
            mark = "cached" if e.cached else ""
            print(f"{e.name:<{width}}  {e.model:<22} {mark}")
        print(f"{len(entries)} published files; cache: {hub.cache_dir()}")
        return 0
    from .errors import WeightsError
    if not args.names:
        raise WeightsError("deeparch weights fetch needs one or more names, e.g. "
                           "torchvision:resnet18.")
    [hub.entry(name) for name in args.names]   # every name checked before any is fetched
    for name in args.names:
        path = hub.resolve(name, progress=None if not args.no_progress else False)
        print(f"{hub.entry(name).name}: {path}")
    return 0


def _cut_names(values: Sequence[str] | None) -> list[str | int] | None:
    """``--at stage1,stage2 --at head.fc`` -> the names; a bare number is a stage number."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return [int(n) if n.isdigit() else n for n in names] or None


def cmd_probe(args) -> int:
    from .train.run import load_data
    from .transfer.predict import load_model
    from .transfer.probe import probe
    train, test, note = load_data(args.data, args.data_dir)
    size = _image_size(args.image_size)
    hw = ((size, size) if isinstance(size, int) else tuple(size)) if size \
        else tuple(train.images.shape[2:])
    got = load_model(args.model, weights=args.weights, input_size=(train.images.shape[1], *hw),
                     seed=args.seed)
    kw = {"epochs": args.epochs} if args.epochs is not None else {}
    result = probe(got.model, train, test, at=_cut_names(args.at), seed=args.seed,
                   preprocess=got.preprocess, image_size=size, pool=args.pool,
                   progress=False if args.no_progress else None, **kw)
    result.model = got.name
    result.notes[:0] = [n for n in [note, *got.notes] if n]
    if args.plot:
        result.plot(args.plot)
    if args.json:
        d = result.to_dict()
        if args.plot:
            d["plot"] = str(args.plot)
        print(json.dumps(d, indent=2))
        return 0
    print(result.table())
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def cmd_predict(args) -> int:
    from .transfer.predict import load_predictor, plot_predictions, read_images
    pred = load_predictor(args.model, weights=args.weights, labels=args.labels_file)
    images = read_images(args.images)          # every file read before anything is written
    preds = pred.predict(images, topk=args.topk, sources=args.images)
    if args.plot:
        plot_predictions(preds, args.plot, title=f"{pred.name}: top-{args.topk} predictions")
    if args.json:
        d = {"model": pred.name, "preprocess": pred.preprocess.to_dict(),
             "predictions": [p.to_dict() for p in preds], "notes": pred.notes}
        if args.plot:
            d["plot"] = str(args.plot)
        print(json.dumps(d, indent=2))
        return 0
    print(f"{pred.name}: {pred.describe()}")
    for n in pred.notes:
        print(f"note: {n}")
    for p in preds:
        print(p.source)
        width = max(len(c) for c in p.classes)
        for i, (c, v) in enumerate(zip(p.classes, p.probabilities)):
            print(f"  {i + 1:>2}. {c:<{width}}  {v:7.2%}")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


# --------------------------------------------------------------------------- export, bench

def _edge_model(source: str, input_size: str | None):
    """RUN|MODEL (a run folder, a registered name or a pattern) -> (model, name, C,H,W)."""
    from .errors import EdgeError
    from .inspect.summary import parse_input_size
    from .transfer.predict import load_model
    size = parse_input_size(input_size) if input_size else None
    got = load_model(source, input_size=size)
    size = size or got.input_size
    if size is None:
        raise EdgeError(f"the input size of {source} is not known; give it with --input-size "
                        f"C,H,W.")
    return got.model, got.name, tuple(size)


def cmd_export(args) -> int:
    from .edge.onnx import export_onnx
    from .errors import EdgeError
    if Path(args.output).suffix.lower() != ".onnx":
        raise EdgeError(f"the output {args.output} must be an .onnx file (OUT.onnx).")
    model, name, size = _edge_model(args.model, args.input_size)
    r = export_onnx(model, args.output, size, opset=args.opset)
    if args.json:
        print(json.dumps({"model": name, **r.to_dict()}, indent=2))
        return 0
    for n in r.notes:
        print(f"note: {n}")
    print(f"{name}: {r}")
    return 0


def cmd_bench(args) -> int:
    import tempfile

    from .edge.latency import bench
    from .edge.onnx import export_onnx, load_onnx
    from .errors import EdgeError
    from .inspect.summary import parse_input_size
    batches = _batches(args.batch)
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise EdgeError("--repeats and --threads must be at least 1.")
    kw = dict(batches=batches, repeats=args.repeats, warmup=args.warmup, threads=args.threads)
    src = Path(args.model)
    if src.suffix.lower() == ".onnx" and not src.is_dir():
        om = load_onnx(src)
        size = parse_input_size(args.input_size) if args.input_size else om.input_size
        if any(s is None for s in size):
            raise EdgeError(f"{src} does not fix its input size; give it with --input-size "
                            f"C,H,W.")
        r = bench({src.name: om}, size, **kw)
    else:
        model, name, size = _edge_model(args.model, args.input_size)
        with tempfile.TemporaryDirectory(prefix="deeparch-bench-") as tmp:
            export_onnx(model, Path(tmp) / "model.onnx", size)
            r = bench({f"{name} torch": model,
                       f"{name} onnxruntime": load_onnx(Path(tmp) / "model.onnx")}, size, **kw)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    print(r.table())
    return 0


# --------------------------------------------------------------------------- look

def _look_input_args(p: argparse.ArgumentParser) -> None:
    """The image a `look` action shows the network: a file, or sample N of a data set."""
    p.add_argument("--image", metavar="FILE", help="an image file (PNG, JPEG, ...)")
    p.add_argument("--data", metavar="DATA",
                   help="a data set name or path (default for a run: its own data)")
    p.add_argument("--sample", type=int, metavar="N", help="the N-th test image of --data")
    p.add_argument("--data-dir", metavar="DIR", help="where named data sets are kept")


def cmd_look_maps(args) -> int:
    from .viz.activations import look_maps
    print(look_maps(args.model, args.layer, args.output, image=args.image, data=args.data,
                    sample=args.sample, data_dir=args.data_dir, channels=args.channels,
                    all_layers=args.all_layers, scale=args.scale, weights=args.weights))
    return 0


def cmd_look_filters(args) -> int:
    from .viz.activations import look_filters
    print(look_filters(args.model, args.layer, args.output, weights=args.weights,
                       channels=args.channels))
    return 0


def cmd_look_compare(args) -> int:
    from .viz.activations import look_compare
    print(look_compare(args.run_a, args.run_b, args.layer, args.output, image=args.image,
                       data=args.data, sample=args.sample, data_dir=args.data_dir,
                       channels=args.channels, scale=args.scale))
    return 0


def cmd_lesion(args) -> int:
    from .viz.lesion import lesion_run
    say = None if args.json else (lambda line: print(f"  {line}", flush=True))
    r = lesion_run(args.run, limit=args.limit, kind=args.kind, draws=args.draws,
                   seed=args.seed, ks=args.ks, out=args.out, which=args.which, log=say)
    where = Path(args.out) if args.out else Path(args.run)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    worst = min(r.units, key=lambda u: u["accuracy"])
    print(f"{r.model}: base accuracy {r.base_accuracy:.2%} on {r.n} test images; "
          f"{len(r.units)} {r.kind} removed one at a time, the worst {worst['name']} "
          f"({worst['accuracy']:.2%}; chance {r.chance:.0%})")
    print(f"lesion: {where / 'lesion.json'} {where / 'lesion.png'}")
    return 0


def _batches(text: str) -> tuple[int, ...]:
    from .errors import EdgeError
    try:
        got = tuple(int(b) for b in str(text).split(","))
    except ValueError:
        got = ()
    if not got or any(b < 1 for b in got):
        raise EdgeError(f"--batch takes batch sizes >= 1 separated by commas (1,32), got "
                        f"{text!r}.")
    return got


def cmd_shrink(args) -> int:
    from .edge.pipeline import shrink
    say = None if args.json else (lambda line: print(line, flush=True))
    r = shrink(args.run, args.out, prune=args.prune, importance=args.importance,
               iterative_steps=args.iterative_steps, finetune=args.finetune,
               teacher=args.teacher, temperature=args.temperature, alpha=args.alpha,
               lr=args.lr, quantize=None if args.quantize == "none" else args.quantize,
               method=args.method, calibration=args.calibration, qat=args.qat,
               batches=_batches(args.batch), repeats=args.repeats, threads=args.threads,
               force=args.force, seed=args.seed, log=say,
               progress=False if args.no_progress else None)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    print(r.table())
    for n in r.notes:
        print(f"note: {n}")
    out = Path(args.out)
    print(f"report: {out / 'report.json'} {out / 'report.txt'} {out / 'tradeoff.png'}")
    return 0


def cmd_look_attribution(args) -> int:
    from .viz.attribution import look_attribution
    kind = args.look_action
    r = look_attribution(args.model, args.output, kind=kind, images=args.image,
                         data=args.data, samples=args.sample, data_dir=args.data_dir,
                         method=getattr(args, "method", "grad"), target=args.target,
                         layer=getattr(args, "layer", "auto"),
                         plus=getattr(args, "plus", False), weights=args.weights,
                         seed=args.seed)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for n in r["notes"]:
        print(f"note: {n}")
    what = f"Grad-CAM{'++' if args.plus else ''} at {r['layer']}" if kind == "gradcam" \
        else f"saliency ({r['method']})"
    print(f"{r['model']}: {what}")
    for row in r["images"]:
        print(f"  {row['image']}: target {row['target']} (p={row['probability']:.3f}, "
              f"top1 {row['top1']})")
    print(f"{kind}: {r['plot']}")
    return 0


def cmd_look_maximize(args) -> int:
    from .viz.maximize import look_maximize
    unit = args.unit if args.unit in ("center", "mean") else tuple(
        int(v) for v in args.unit.replace("x", ",").split(",") if v.strip().lstrip("-").isdigit())
    r = look_maximize(args.model, args.layer, args.output, channels=args.channels, unit=unit,
                      recipe=args.recipe, setting=args.setting, steps=args.steps, lr=args.lr,
                      seed=args.seed, view=args.view, weights=args.weights, data=args.data,
                      data_dir=args.data_dir)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    for n in r["warnings"]:
        print(f"warning: {n}", file=sys.stderr)
    for n in r["notes"]:
        print(f"note: {n}")
    print(f"{r['model']}: {r['layer']} (row #{r['row']}), {len(r['channels'])} channel"
          f"{'s' if len(r['channels']) != 1 else ''} maximised, recipe {r['recipe']}, "
          f"{r['steps']} steps")
    for c in r["channels"]:
        box = c["box"]
        where = f"  receptive field rows {box[0]}:{box[2]}, columns {box[1]}:{box[3]}" \
            if box else ""
        print(f"  channel {c['channel']}: {c['start_activation']:.4g} -> "
              f"{c['activation']:.4g}{where}")
    print(f"maximize: {r['plot']}")
    return 0


# the choices of viz.maximize.RECIPES and viz.attribution.METHODS, spelled out so that
# building the parser imports no torch (tests/test_models_cli.py checks both)
_MAXIMIZE_RECIPES = ("plain", "yosinski", "olah")
_SALIENCY_METHODS = ("grad", "smoothgrad", "guided", "integrated", "occlusion")


def _look_maximize_parser(look, ex) -> None:
    """`deeparch look maximize` (part 2: activation maximisation)."""
    xp = look.add_parser(
        "maximize", help="the input that a layer's channels respond to most (gradient ascent)",
        description="Activation maximisation: climb the gradient of one unit (or the mean) of "
                    "each chosen channel of a layer with respect to the input, from a seeded "
                    "random image. Recipes: plain (the slides' update), yosinski (Yosinski et "
                    "al. 2015: L2 decay, blur, clipping; --setting 1-4 of their Table 1), olah "
                    "(Olah et al. 2017: Fourier parameterisation, the training set's colours "
                    "decorrelated, transformation robustness). For a single unit each picture "
                    "is cropped to its receptive field (the box in the summary's geometry).",
        epilog="examples:\n"
               "  deeparch look maximize runs/lenet5 --layer features.c1 --channels all "
               "-o sheet.png\n"
               "  deeparch look maximize runs/lenet5 --layer #4 --channels 0:8 --recipe olah "
               "-o olah.png\n"
               "  deeparch look maximize runs/lenet5 --layer head.output --channels all "
               "--recipe yosinski -o classes.png",
        formatter_class=ex)
    xp.add_argument("model", metavar="RUN|MODEL",
                    help="a run folder (or RUN@best|last|init), or a model name or pattern "
                         "with --weights")
    xp.add_argument("--layer", metavar="L", required=True, help="the layer: name or #row")
    xp.add_argument("--channels", default="all", metavar="all|A:B",
                    help="channels to maximise: all (default), 0:8, 3 or 1,4,7")
    xp.add_argument("--unit", default="center", metavar="center|mean|I,J",
                    help="the unit of each channel's map: center (default), mean (the whole "
                         "channel) or map coordinates I,J")
    xp.add_argument("--recipe", choices=_MAXIMIZE_RECIPES, default="plain", help="plain (default), "
                    "yosinski or olah")
    xp.add_argument("--setting", type=int, choices=(1, 2, 3, 4), default=3,
                    help="yosinski: the row of Yosinski et al.'s Table 1 (default 3)")
    xp.add_argument("--steps", type=int, metavar="N", help="gradient steps (default per "
                    "recipe: 200, the setting's, 512)")
    xp.add_argument("--lr", type=float, metavar="X", help="step size (plain 0.05 std per "
                    "step; yosinski progress per step 2.0; olah Adam 0.05)")
    xp.add_argument("--seed", type=int, default=0, help="the start image (default 0)")
    xp.add_argument("--view", choices=("auto", "full", "crop", "both"), default="auto",
                    help="cells: the full image with the box, the receptive-field crop, or "
                         "both (default auto)")
    xp.add_argument("--data", metavar="DATA", help="olah: the training set whose colours "
                    "are decorrelated (default: a run's own data)")
    xp.add_argument("--data-dir", metavar="DIR", help="where named data sets are kept")
    xp.add_argument("--weights", metavar="FILE", help="weights for MODEL")
    xp.add_argument("--json", action="store_true", help="what was done, as JSON")
    xp.add_argument("-o", "--output", metavar="OUT.png", required=True, help="the PNG to write")
    xp.set_defaults(func=cmd_look_maximize)


def _look_attribution_parsers(look, ex) -> None:
    """`deeparch look saliency|gradcam` (part 3: attribution)."""
    for kind in ("saliency", "gradcam"):
        sp = look.add_parser(
            kind, help="which input pixels a class score depends on" if kind == "saliency"
            else "Grad-CAM: where in a layer's map the evidence for a class lies",
            description=("Saliency: the gradient of a class score with respect to the input "
                         "(grad, smoothgrad, guided backprop, integrated gradients) or the "
                         "score drop when a patch is occluded, drawn beside and over each "
                         "image (raw values on the colour bar).") if kind == "saliency" else
                        ("Grad-CAM (Selvaraju et al. 2017; --plus: Grad-CAM++) at a layer "
                         "(default: the last spatial map), bilinearly upsampled and drawn "
                         "beside and over each image (raw values on the colour bar)."),
            epilog="examples:\n"
                   f"  deeparch look {kind} runs/fashion --image shoe.png -o {kind}.png\n"
                   f"  deeparch look {kind} runs/fashion --sample 0 1 2 3 --target top1 "
                   f"-o {kind}.png" + ("\n  deeparch look saliency runs/fashion --sample 0 "
                                      "--method integrated -o ig.png" if kind == "saliency"
                                      else "\n  deeparch look gradcam runs/fashion --sample 0 "
                                           "--layer features.stage2.2.act2 --plus -o c.png"),
            formatter_class=ex)
        sp.add_argument("model", metavar="RUN|MODEL",
                        help="a run folder (or RUN@best|last|init), or a model name or "
                             "pattern with --weights")
        sp.add_argument("--image", nargs="+", metavar="FILE", help="image files (PNG, JPEG..)")
        sp.add_argument("--data", metavar="DATA",
                        help="a data set name or path (default for a run: its own data)")
        sp.add_argument("--sample", nargs="+", type=int, metavar="N",
                        help="test images of --data by index")
        sp.add_argument("--data-dir", metavar="DIR", help="where named data sets are kept")
        sp.add_argument("--target", default="top1", metavar="top1|CLASS",
                        help="the class explained: top1 (each image's prediction, default), "
                             "a class name or index")
        if kind == "saliency":
            sp.add_argument("--method", choices=_SALIENCY_METHODS, default="grad",
                            help="grad (default), smoothgrad, guided, integrated, occlusion")
        else:
            sp.add_argument("--layer", default="auto", metavar="L",
                            help="the layer: name or #row (default auto: the last spatial map)")
            sp.add_argument("--plus", action="store_true", help="Grad-CAM++")
        sp.add_argument("--seed", type=int, default=0, help="SmoothGrad's noise, RUN@init")
        sp.add_argument("--weights", metavar="FILE", help="weights for MODEL")
        sp.add_argument("--json", action="store_true", help="what was done, as JSON")
        sp.add_argument("-o", "--output", metavar="OUT.png", required=True,
                        help="the PNG to write")
        sp.set_defaults(func=cmd_look_attribution, plus=False)


def _look_parsers(look) -> None:
    """The `deeparch look ACTION` sub-actions; each part adds its own here."""
    ex = argparse.RawDescriptionHelpFormatter
    mp = look.add_parser(
        "maps", help="the activation maps of a layer for one image, as one sheet",
        description="Draw the input and every chosen channel of a layer's output for one "
                    "image, labelled with the layer's name and shape. Layers are the rows of "
                    "`deeparch summary`: a name (features.conv1; act@2 for a module's second "
                    "use), a row number (#3) or a glob (layer4.*).",
        epilog="examples:\n"
               "  deeparch look maps runs/lenet5 --sample 0 --layer features.conv1 -o maps.png\n"
               "  deeparch look maps runs/lenet5 --image digit.png --all-layers -o rows.png",
        formatter_class=ex)
    mp.add_argument("model", metavar="RUN|MODEL",
                    help="a deeparch run folder, or a registered model name or a pattern")
    _look_input_args(mp)
    mp.add_argument("--layer", metavar="L", help="the layer(s): name, #row or glob")
    mp.add_argument("--all-layers", action="store_true",
                    help="one row per layer with a spatial map (--layer narrows them)")
    mp.add_argument("--channels", metavar="A:B", help="channels to draw, e.g. 0:6 or 0,3,5 "
                    "(default: all, up to 64 per layer; 8 per row with --all-layers)")
    mp.add_argument("--scale", choices=("channel", "layer"), default="channel",
                    help="grey scale per channel (default) or shared by the layer")
    mp.add_argument("--weights", metavar="FILE", help="weights for MODEL")
    mp.add_argument("-o", "--output", metavar="OUT.png", required=True, help="the PNG to write")
    mp.set_defaults(func=cmd_look_maps)

    fp = look.add_parser(
        "filters", help="the kernels of a convolution",
        description="Draw the kernels of a convolution layer: one cell per filter, in colour "
                    "when it reads three channels, else one cell per input channel.",
        epilog="example:\n  deeparch look filters runs/lenet5 --layer features.conv1 -o f.png",
        formatter_class=ex)
    fp.add_argument("model", metavar="RUN|MODEL",
                    help="a deeparch run folder, or a registered model name or a pattern")
    fp.add_argument("--layer", metavar="L", required=True, help="a convolution: name or #row")
    fp.add_argument("--channels", metavar="A:B", help="filters to draw (default: up to 64)")
    fp.add_argument("--weights", metavar="FILE", help="weights for MODEL")
    fp.add_argument("-o", "--output", metavar="OUT.png", required=True, help="the PNG to write")
    fp.set_defaults(func=cmd_look_filters)

    cp = look.add_parser(
        "compare", help="the maps of a layer in two checkpoints, side by side",
        description="Draw the maps of one layer for one image under two networks of the same "
                    "architecture: RUN@best / RUN@last pick a checkpoint of a run, RUN@init "
                    "its architecture re-initialised (seed 0).",
        epilog="examples:\n"
               "  deeparch look compare runs/a runs/a@init --sample 0 --layer conv1 -o c.png\n"
               "  deeparch look compare runs/epoch1 runs/epoch20 --image x.png --layer #4 "
               "-o c.png",
        formatter_class=ex)
    cp.add_argument("run_a", metavar="RUN_A", help="a run folder (or RUN@best|last|init)")
    cp.add_argument("run_b", metavar="RUN_B", help="a run folder (or RUN@best|last|init)")
    _look_input_args(cp)
    cp.add_argument("--layer", metavar="L", required=True, help="the layer: name or #row")
    cp.add_argument("--channels", metavar="A:B", help="channels to draw (default: the first 8)")
    cp.add_argument("--scale", choices=("channel", "layer"), default="channel",
                    help="grey scale per channel (default) or shared by the layer")
    cp.add_argument("-o", "--output", metavar="OUT.png", required=True, help="the PNG to write")
    cp.set_defaults(func=cmd_look_compare)
    # parts 2 and 3 add their actions below (maximize, saliency, gradcam)
    _look_maximize_parser(look, ex)
    _look_attribution_parsers(look, ex)


# --------------------------------------------------------------------------- messages

# API keyword -> argparse dest, where the command names a thing differently from the API and
# _TRAIN_FIELDS does not already say so (evaluate(which=...) is `--weights`, ...).
_API_ALIASES = {"which": "weights", "root": "data_dir", "model_options": "option"}


@functools.lru_cache(maxsize=1)
def _flags() -> dict[str, argparse.Action]:
    """API keyword -> the argparse action of the flag that sets it, read off the parser."""
    by_dest: dict[str, argparse.Action] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.option_strings and not isinstance(
                    action, (argparse._HelpAction, argparse._VersionAction)):
                by_dest.setdefault(action.dest, action)

    walk(build_parser())
    api = {dest: dest for dest in by_dest}
    api.update({field: dest for dest, field in _TRAIN_FIELDS.items()})
    api.update(_API_ALIASES)
    return {name: by_dest[dest] for name, dest in api.items() if dest in by_dest}


def _flag(action: argparse.Action) -> str:
    return max(action.option_strings, key=lambda o: (o.startswith("--"), len(o)))


def flag_for(dest: str) -> str:
    """The flag of an argparse dest, as the parser spells it (``restore_best`` ->
    ``--last-weights``, ``warmup`` -> ``--warmup``)."""
    return _flag(_flags()[dest])


@functools.lru_cache(maxsize=1)
def _message_patterns() -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    table = _flags()
    names = sorted((n for n in table if len(n) > 1), key=len, reverse=True)
    # one-letter names (augment's --n) only in the name=value form
    alt = "|".join(map(re.escape, names + sorted(n for n in table if len(n) == 1)))
    # a switch that stores False (--last-weights: restore_best=False) names the opposite
    said = [n for n in names if table[n].const is not False]
    ident = "|".join(re.escape(n) for n in said if "_" in n)
    subject = "|".join(map(re.escape, said))
    edge = r"(?<![\w./\\-])"  # not inside a word, a path or a flag
    return (
        # name=value: val_split=0.2, optimizer='sgd', download=True
        # (not after -o/--option, whose name=value is a model option: -o alpha=0.5)
        re.compile(edge + r"(?<!-o )(?<!--option )"
                   + rf"({alt})=('[^'\s]*'|\"[^\"\s]*\"|[\w+-]+(?:\.[\w+-]+)*)"),
        # identifiers that are not English words, anywhere: val_split, warmup_epochs
        re.compile(edge + rf"({ident})(?![\w/\\-]|\.\w)"),
        # plain words (epochs, lr, seed, device) only as the subject of a sentence: "lr must be"
        re.compile(rf"(?:^|(?<=; )|(?<=: )|(?<=\. ))({subject})(?= must\b)"),
    )


def cli_message(text: str) -> str:
    """An API message in the command's words: keyword names become the flags that set them
    (``val_split`` -> ``--val-split``, ``warmup_epochs`` -> ``--warmup``, ``download=True`` ->
    ``--download``, ``val_split=0.2`` -> ``--val-split 0.2``); everything else is kept."""
    table = _flags()
    assign, ident, subject = _message_patterns()

    def value(m: re.Match) -> str:
        action, given = table[m.group(1)], m.group(2)
        if action.nargs == 0:  # a switch: only its own value can be said with the flag alone
            return _flag(action) if given == str(action.const) else m.group(0)
        return f"{_flag(action)} {given.strip(chr(39) + chr(34))}"

    text = assign.sub(value, text)
    text = ident.sub(lambda m: _flag(table[m.group(1)]), text)
    return subject.sub(lambda m: _flag(table[m.group(1)]), text)


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

    def model_args(sp, optional=False):
        sp.add_argument("model", metavar="NAME|PATTERN", nargs="?" if optional else None,
                        help="a registered model name, or a layer pattern in quotes, e.g. "
                             "'INPUT(32x32x3) -> [CONV3-32 -> RELU -> POOL2]*2 -> FC-10'")
        sp.add_argument("--input-size", metavar="C,H,W", help="input size, channels first")
        sp.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                        help="a model knob, e.g. -o alpha=0.5 (repeatable)")

    s = sub.add_parser("summary", help="per-layer shapes, params, mult-adds, memory, receptive field",
                       description="Summarise a model or a layer pattern, layer by layer.")
    model_args(s, optional=True)
    s.add_argument("--format", choices=("table", "keras", "markdown", "json"), default="table")
    s.add_argument("--arch", metavar="STRING|FILE",
                   help="a searched architecture (e.g. best.txt of `deeparch search`) instead "
                        "of MODEL; with --space")
    s.add_argument("--space", choices=("nb201", "nasnet", "mobile", "plain", "scaling"),
                   help="the search space of --arch (default: the one best.txt records, "
                        "else the one the string's notation shows)")
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

    sr = sub.add_parser(
        "search", help="architecture search: spaces, strategies, objectives",
        description="Search an architecture space with one or more strategies over several "
                    "seeds. With -o DIR writes DIR/history.jsonl (every query, in order), "
                    "best_so_far.png (mean and band over seeds, one curve per strategy), "
                    "best.txt (the best architecture: `deeparch summary --arch` and "
                    "`deeparch train --arch` read it) and search.json.",
        epilog="examples:\n"
               "  deeparch search --space nb201 --strategy evolution --objective table "
               "--budget 100 --seeds 20 -o out/\n"
               "  deeparch search --space nb201 --strategy random,evolution,reinforce "
               "--budget 300 --seeds 10 --max-macs 50M -o out/\n"
               "  deeparch search --space nb201 --strategy evolution --objective proxy "
               "--data digits --epochs 2 --budget 20 -o out/\n"
               "spaces: nb201 nasnet mobile plain scaling; strategies: random evolution "
               "reinforce ppo grid;\nobjectives: table proxy synflow naswot snip grad_norm "
               "params macs",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sr.add_argument("--space", default="nb201",
                    help="nb201 (default), nasnet, mobile, plain, scaling")
    sr.add_argument("-S", "--space-option", action="append", metavar="KEY=VALUE",
                    help="a space option, e.g. -S channels=8 -S cells=1 for a small nb201 "
                         "skeleton (repeatable)")
    sr.add_argument("--strategy", action="append", metavar="NAME[,NAME...]",
                    help="random, evolution (default), reinforce, ppo, grid; several: one "
                         "curve each")
    sr.add_argument("--objective", default="table",
                    help="table (default), proxy, synflow, naswot, snip, grad_norm, params, macs")
    sr.add_argument("--budget", type=int, default=100, help="queries per search (default 100)")
    sr.add_argument("--seeds", type=int, default=1, help="searches per strategy (default 1)")
    sr.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    sr.add_argument("-o", "--out", metavar="DIR", help="the folder for the search's files")
    sr.add_argument("--force", action="store_true", help="replace a previous search's files")
    sr.add_argument("--max-params", metavar="N", help="hard cap on parameters, e.g. 0.5M")
    sr.add_argument("--max-macs", metavar="N", help="hard cap on mult-adds, e.g. 50M")
    sr.add_argument("--max-latency-ms", type=float, metavar="MS",
                    help="hard cap on measured latency of one image on this CPU")
    sr.add_argument("--reward-target", metavar="T",
                    help="MnasNet reward: objective x (cost/T)^-0.07, e.g. 50M")
    sr.add_argument("--reward-cost", choices=("macs", "params", "latency_ms"), default="macs")
    sr.add_argument("--table", metavar="FILE", help="the table's data.anb (default: the "
                                                    "installed analog-nasbench's)")
    sr.add_argument("--data", metavar="NAME|PATH",
                    help="proxy and zero-cost objectives: the data set (default digits)")
    sr.add_argument("--epochs", type=int, help="proxy objective: epochs per query (default 2)")
    sr.add_argument("-s", "--strategy-option", action="append", metavar="KEY=VALUE",
                    help="e.g. -s population=20 -s sample_size=5 (repeatable)")
    sr.add_argument("-O", "--objective-option", action="append", metavar="KEY=VALUE",
                    help="e.g. -O batch_size=32 (repeatable)")
    sr.add_argument("--format", choices=("text", "json"), default="text")
    sr.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    sr.set_defaults(func=cmd_search)

    t = sub.add_parser(
        "train", help="train a model on a data set; writes curves, metrics and checkpoints",
        description="Train a registered model or a layer pattern on a data set. Writes "
                    "OUT/config.json, history.json, log.csv, metrics.json, "
                    "model.safetensors, curves.png, confusion.png and checkpoints/.",
        epilog="examples:\n"
               "  deeparch train lenet5 --data digits --epochs 30 --out runs/lenet5-digits\n"
               "  deeparch train fashion_cnn --data fashion_mnist --recipe fashion_keras "
               "--out runs/fashion\n"
               "  deeparch train lenet5 --data digits --overfit 50\n"
               "  deeparch train --resume runs/lenet5-digits\n"
               "  deeparch train --from-run runs/lenet5-digits --data digits --regime "
               "linear --out runs/linear\n"
               "  deeparch train 'INPUT(8x8x1) -> CONV3-8 -> RELU -> POOL2 -> FC-10' --data "
               "digits --teacher runs/lenet5-digits --out runs/student\n"
               "  torchrun --nproc_per_node 2 -m deeparch train lenet5 --data digits "
               "--out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("model", nargs="?", metavar="MODEL|PATTERN",
                   help="a registered model name or a layer pattern in quotes")
    t.add_argument("--arch", metavar="STRING|FILE",
                   help="instead of MODEL: a searched architecture (e.g. best.txt of "
                        "`deeparch search`), with --space")
    t.add_argument("--space", choices=("nb201", "nasnet", "mobile", "plain", "scaling"),
                   help="the search space of --arch (default: the one best.txt records, "
                        "else the one the string's notation shows)")
    t.add_argument("--data", metavar="NAME|PATH",
                   help="digits, mnist, fashion_mnist, cifar10, cifar100, or a file/folder")
    t.add_argument("--data-dir", metavar="DIR", help="where named data sets live")
    t.add_argument("--download", action="store_true", help="fetch a missing named data set")
    t.add_argument("--out", metavar="DIR", help="the run folder to write")
    t.add_argument("--resume", metavar="DIR",
                   help="continue the run in DIR with its own settings (only --epochs may "
                        "change)")
    t.add_argument("--from", dest="resume_from", choices=("last", "best"), default="last",
                   help="with --resume: the checkpoint to continue from (default last)")
    t.add_argument("--force", action="store_true",
                   help="replace the deeparch run in --out (only its files are removed; a "
                        "folder that holds no deeparch run is never written)")
    t.add_argument("--recipe", metavar="NAME",
                   help="start from a named recipe: fashion_keras, alexnet, resnet")
    t.add_argument("-o", "--option", action="append", metavar="KEY=VALUE",
                   help="a model knob, e.g. -o alpha=0.5 (repeatable)")
    t.add_argument("--image-size", metavar="N|HxW", help="resize the images first")
    tl = t.add_argument_group("transfer learning")
    tl.add_argument("--weights", metavar="FILE|NAME",
                   help="start from pretrained weights: a .pth/.h5/.safetensors file or a "
                        "name such as torchvision:resnet18")
    tl.add_argument("--from-run", metavar="RUN", help="start from a trained run's weights")
    tl.add_argument("--regime", metavar="R",
                   help="what trains: full (default), linear (a new head only), cached (the "
                        "head on features computed once), top:K (the last K stages)")
    tl.add_argument("--lr-backbone", type=float, metavar="LR",
                   help="learning rate of the pretrained layers (default: --lr)")
    kd = t.add_argument_group("distillation (Hinton et al. 2015)")
    kd.add_argument("--teacher", metavar="RUN|FILE|NAME",
                    help="learn from this trained model's soft targets: a run folder, a "
                         "model.safetensors of deeparch train, or a hub name")
    kd.add_argument("--temperature", type=float, metavar="T",
                    help="with --teacher: softmax temperature (default 4)")
    kd.add_argument("--alpha", type=float, metavar="A",
                    help="with --teacher: weight of the soft targets in [0, 1] (default 0.9)")
    g = t.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="the global batch (default 64)")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw"))
    g.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    g.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--schedule", choices=("none", "step", "plateau", "cosine", "onecycle"))
    g.add_argument("--step-size", type=int, help="'step': epochs between decays")
    g.add_argument("--gamma", type=float, help="'step'/'plateau' decay factor (default 0.1)")
    g.add_argument("--plateau-patience", type=int,
                   help="'plateau': epochs without improvement before lr x gamma (default 3)")
    g.add_argument("--min-lr", type=float)
    g.add_argument("--warmup", type=float, metavar="EPOCHS", help="linear warm-up epochs")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                   help="stop after this many epochs without improvement")
    g.add_argument("--grad-clip", type=float, metavar="NORM", help="clip the gradient norm")
    g.add_argument("--aux-weight", type=float, help="weight of auxiliary classifiers (0.3)")
    g.add_argument("--last-weights", dest="restore_best", action="store_false", default=None,
                   help="keep the last epoch's weights instead of the best validation epoch's")
    d = t.add_argument_group("data")
    d.add_argument("--augment", metavar="SPEC",
                   help="online augmentation, e.g. 'rotation=8,shift=0.08,zoom=0.08' or slides")
    d.add_argument("--val-split", type=float, help="validation fraction (default 0.2; 0: none)")
    d.add_argument("--subset", type=int, metavar="N",
                   help="train on N samples (stratified); test on at most N")
    d.add_argument("--seed", type=int, help="one seed for split, init, order (default 13)")
    h = t.add_argument_group("hardware and logging")
    h.add_argument("--device", help="auto (default), cpu, cuda, cuda:1")
    h.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: mixed precision on CUDA, fp32 on CPU")
    h.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads while training (default: PyTorch's choice)")
    h.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard logs to OUT/tensorboard")
    h.add_argument("--no-progress", action="store_true", help="no progress bar")
    h.add_argument("--overfit", type=int, metavar="N",
                   help="only check that the model can overfit N samples (no run folder)")
    h.add_argument("--overfit-steps", type=int, default=300, metavar="S",
                   help="full-batch steps for --overfit (default 300)")
    t.set_defaults(func=cmd_train)
    _TRAIN_DEFAULTS.update({a.dest: a.default for a in t._actions})   # for --resume's check

    ev = sub.add_parser("evaluate", help="evaluate a trained run on its test split",
                        description="Re-evaluate run folders on their test split: loss, "
                                    "top-1, top-5, per-class accuracy; several folders are "
                                    "an ensemble (softmax averaged).")
    ev.add_argument("runs", nargs="+", metavar="DIR")
    ev.add_argument("--crops", choices=("none", "flip", "center", "5crop", "10crop", "multi"),
                    default="none", help="test-time views (5crop: 4 corners + centre; 10crop: "
                                         "those and their mirrors; multi: 10crop at 2 scales "
                                         "+ the image and its mirror)")
    ev.add_argument("--crop-size", type=int, help="crop side in pixels (default 87.5%%)")
    ev.add_argument("--weights", choices=("model", "best", "last"), default="model")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--format", choices=("text", "json"), default="text")
    ev.set_defaults(func=cmd_evaluate)

    w = sub.add_parser("identify", help="which registered models a weights file fits",
                       description="Name the registered architectures whose tensors a weights "
                                   "file (torchvision .pth, deeparch .safetensors or run "
                                   "folder) fits, best first. Nothing in the file is run.")
    w.add_argument("file", metavar="FILE")
    w.add_argument("--format", choices=("text", "json"), default="text")
    w.set_defaults(func=cmd_identify)

    cv = sub.add_parser("convert", help="a weights file as deeparch safetensors",
                        description="Convert a weights file (torchvision .pth, ...) into a "
                                    "deeparch .safetensors file for one registered model.")
    cv.add_argument("file", metavar="FILE")
    cv.add_argument("--model", metavar="NAME", help="the registered model (default: the best "
                                                     "that `identify` finds)")
    cv.add_argument("-o", "--output", required=True, metavar="OUT.safetensors")
    cv.set_defaults(func=cmd_convert)

    wt = sub.add_parser("weights", help="published pretrained weights: list or fetch them",
                        description="The torchvision and Keras ImageNet weight files deeparch "
                                    "knows (URLs and published checksums): list them, or fetch "
                                    "them into the cache ($DEEPARCH_WEIGHTS, default "
                                    "~/.cache/deeparch/weights; $DEEPARCH_WEIGHTS_MIRROR: a "
                                    "local copy). `--weights NAME` fetches on first use too.")
    wt.add_argument("action", choices=("list", "fetch"))
    wt.add_argument("names", nargs="*", metavar="NAME", help="e.g. torchvision:resnet18")
    wt.add_argument("--source", choices=("torchvision", "keras"))
    wt.add_argument("--format", choices=("text", "json"), default="text")
    wt.add_argument("--no-progress", action="store_true")
    wt.set_defaults(func=cmd_weights)

    a = sub.add_parser("augment", help="preview augmentation, or pre-augment a data set",
                       description="Show what an augmentation does (a PNG grid: originals and "
                                   "augmented copies), or expand a data set N times once and "
                                   "save it (.npz).")
    a.add_argument("--data", required=True, metavar="NAME|PATH")
    a.add_argument("--data-dir", metavar="DIR")
    a.add_argument("--split", choices=("train", "test"), default="train")
    a.add_argument("--augment", required=True, metavar="SPEC",
                   help="e.g. 'rotation=8,shift=0.08,shear=0.3,zoom=0.08' or slides; "
                        "elastic=ALPHA:SIGMA adds Simard's local warping (elastic=34:4)")
    a.add_argument("--preview", metavar="PNG", help="write a preview grid here")
    a.add_argument("--n", type=int, default=8, help="images in the preview (default 8)")
    a.add_argument("--samples", type=int, default=7, help="augmented copies of each (7)")
    a.add_argument("--expand", type=int, metavar="N", help="pre-augment: N copies per image")
    a.add_argument("--save", metavar="FILE.npz", help="where to save the expanded data set")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=cmd_augment)

    pb = sub.add_parser(
        "probe", help="a linear probe at every cut point: where to cut, measured",
        description="Freeze a network, compute its features at every cut point (or at --at) "
                    "once, train a linear softmax classifier on each and report train and "
                    "test accuracy, feature size and parameter counts. Spatial maps are "
                    "global-average-pooled (--pool flatten: flattened).",
        epilog="examples:\n"
               "  deeparch probe runs/lenet5-digits --data digits\n"
               "  deeparch probe resnet20 --data digits --image-size 32 --plot probe.png\n"
               "  deeparch probe resnet18 --weights resnet18.pth --data DIR --at "
               "layer1,layer2,layer3,layer4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pb.add_argument("model", metavar="RUN|MODEL",
                    help="a deeparch run folder, or a registered model name or a pattern")
    pb.add_argument("--data", required=True, metavar="NAME|PATH",
                    help="the data set to probe with (its test split is held out)")
    pb.add_argument("--data-dir", metavar="DIR", help="where named data sets live")
    pb.add_argument("--weights", metavar="FILE", help="weights for MODEL (.pth, .safetensors)")
    pb.add_argument("--at", action="append", metavar="NAMES",
                    help="only these cut points, comma-separated (stage names, layer names "
                         "or stage numbers); default: every one")
    pb.add_argument("--epochs", type=int, metavar="N",
                    help="L-BFGS iterations per probe (default 100)")
    pb.add_argument("--pool", choices=("avg", "flatten"), default="avg",
                    help="spatial maps: global average (default) or flattened")
    pb.add_argument("--image-size", metavar="N|HxW",
                    help="resize the images to this input size (default: the weights' or "
                         "the model's)")
    pb.add_argument("--seed", type=int, default=0,
                    help="held-out split for the weight decay; initialisation without "
                         "weights (default 0)")
    pb.add_argument("--plot", metavar="OUT.png", help="write accuracy per cut point here")
    pb.add_argument("--json", action="store_true", help="the result as JSON")
    pb.add_argument("--no-progress", action="store_true", help="no progress bar")
    pb.set_defaults(func=cmd_probe)

    pr = sub.add_parser(
        "predict", help="the top classes of image files",
        description="Predict the top-k classes of image files with a trained run or a model "
                    "and its weights, fitting each image the way the weights' source "
                    "evaluates (torchvision: shorter side 256, centre crop 224; a run: its "
                    "input size, mean and std).",
        epilog="examples:\n"
               "  deeparch predict runs/lenet5-digits digit.png\n"
               "  deeparch predict resnet50 --weights resnet50.pth cat.jpg dog.jpg "
               "--plot top5.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("model", metavar="RUN|MODEL",
                    help="a deeparch run folder, or a registered model name or a pattern")
    pr.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    pr.add_argument("--weights", metavar="FILE", help="weights for MODEL (.pth, .safetensors)")
    pr.add_argument("--topk", type=int, default=5, metavar="K",
                    help="classes shown per image (default 5)")
    pr.add_argument("--labels", dest="labels_file", metavar="FILE",
                    help="class names, one per line (default: the run's, ImageNet's for "
                         "ImageNet weights, else the indices)")
    pr.add_argument("--plot", metavar="OUT.png",
                    help="write each image beside its top-k bars here")
    pr.add_argument("--json", action="store_true", help="the predictions as JSON")
    pr.set_defaults(func=cmd_predict)

    xo = sub.add_parser(
        "export", help="a model as one ONNX file (dynamic batch), checked in ONNX Runtime",
        description="Export a trained run or a model to ONNX with torch.onnx (dynamo), with "
                    "a dynamic batch dimension; ONNX Runtime runs the file on a random batch "
                    "and its logits must match torch's.",
        epilog="examples:\n"
               "  deeparch export runs/lenet5-digits -o lenet5.onnx\n"
               "  deeparch export resnet20 -o resnet20.onnx --input-size 3,32,32",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    xo.add_argument("model", metavar="RUN|MODEL",
                    help="a deeparch run folder, or a registered model name or a pattern")
    xo.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the file to write")
    xo.add_argument("--input-size", metavar="C,H,W",
                    help="input size (default: the run's or the model's)")
    xo.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    xo.add_argument("--json", action="store_true", help="the export report as JSON")
    xo.set_defaults(func=cmd_export)

    xb = sub.add_parser(
        "bench", help="latency: torch eager vs ONNX Runtime, or an .onnx file",
        description="Time a model at each batch size on random inputs: for a run or a model, "
                    "torch eager and ONNX Runtime fp32 side by side (exported to a temporary "
                    "file); for an .onnx file, that file in ONNX Runtime. Measurement rounds "
                    "visit every (runtime, batch) in turn; min and median are reported.",
        epilog="examples:\n"
               "  deeparch bench resnet20 --input-size 3,32,32 --threads 2\n"
               "  deeparch bench model.int8.onnx --batch 1,8,32 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    xb.add_argument("model", metavar="RUN|MODEL|FILE.onnx",
                    help="a run folder, a registered model name, a pattern or an .onnx file")
    xb.add_argument("--batch", default="1,32", metavar="B,B",
                    help="batch sizes timed (default 1,32)")
    xb.add_argument("--repeats", type=int, default=30, metavar="N",
                    help="timing rounds (default 30)")
    xb.add_argument("--warmup", type=int, default=5, metavar="N",
                    help="untimed calls first (default 5)")
    xb.add_argument("--threads", type=int, metavar="N",
                    help="CPU threads of both runtimes (default torch's)")
    xb.add_argument("--input-size", metavar="C,H,W",
                    help="input size (default: the run's, the model's or the file's)")
    xb.add_argument("--json", action="store_true", help="the timings as JSON")
    xb.set_defaults(func=cmd_bench)

    ls = sub.add_parser(
        "lesion", help="the residual lesion study: remove each block, measure the accuracy",
        description="Veit et al. 2016's lesion study of a trained run: each residual block "
                    "in turn made the identity (its shortcut kept), then k random blocks at "
                    "once; a network without residual blocks loses single conv layers (with "
                    "their BN and activation) where the shapes allow. Measured on the run's "
                    "test split; writes lesion.json and lesion.png.",
        epilog="examples:\n"
               "  deeparch lesion runs/resnet20-fashion\n"
               "  deeparch lesion runs/plain20-fashion --limit 2000 --draws 4 -o out/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("run", metavar="RUN", help="a deeparch run folder")
    ls.add_argument("--limit", type=int, metavar="N",
                    help="measure on N test images (stratified; default all)")
    ls.add_argument("--draws", type=int, default=4, metavar="D",
                    help="random sets of k units per k (default 4)")
    ls.add_argument("--k", type=int, nargs="+", metavar="K", dest="ks",
                    help="numbers of random units to remove (default 1 .. all)")
    ls.add_argument("--kind", choices=("auto", "blocks", "layers"), default="auto",
                    help="what to remove (auto: residual blocks if any, else layers)")
    ls.add_argument("--seed", type=int, default=0, help="the random sets' seed")
    ls.add_argument("--weights", dest="which", choices=("model", "best", "last"),
                    default="model", help="which weights of the run")
    ls.add_argument("-o", "--out", metavar="DIR",
                    help="where lesion.json and lesion.png go (default: the run folder)")
    ls.add_argument("--json", action="store_true", help="the result as JSON")
    ls.set_defaults(func=cmd_lesion)

    sh = sub.add_parser(
        "shrink", help="prune, fine-tune and quantize a trained run; measure every stage",
        description="The edge pipeline on a trained run: structured pruning (a fraction of "
                    "the parameters removed), fine-tuning (optionally distilled from a "
                    "teacher), ONNX export and int8 quantization. Every stage is measured "
                    "the same way: test accuracy in torch and ONNX Runtime, parameters, "
                    "mult-adds, file size, latency at batch 1 and 32 (interleaved, min and "
                    "median). Writes report.json, report.txt, tradeoff.png and the models.",
        epilog="examples:\n"
               "  deeparch shrink runs/cnn --prune 0.5 --finetune 5 --quantize int8 -o edge/\n"
               "  deeparch shrink runs/cnn --prune 0.3 --finetune 3 --teacher runs/big -o e2/\n"
               "  deeparch shrink runs/cnn --quantize int8 --method entropy -o e3/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sh.add_argument("run", metavar="RUN", help="a deeparch run folder")
    sh.add_argument("-o", "--out", required=True, metavar="DIR", help="the folder for the results")
    sh.add_argument("--prune", type=float, metavar="RATIO",
                    help="fraction of the parameters to remove, between 0 and 1")
    sh.add_argument("--importance", choices=("l1", "l2", "taylor", "bn"), default="l1",
                    help="which channels go first (default l1 magnitude)")
    sh.add_argument("--steps", type=int, default=1, metavar="N", dest="iterative_steps",
                    help="prune in N steps (default 1)")
    sh.add_argument("--finetune", type=int, default=0, metavar="EPOCHS",
                    help="epochs of fine-tuning after pruning (the run's own recipe)")
    sh.add_argument("--lr", type=float, help="the fine-tuning learning rate (default: the run's)")
    sh.add_argument("--teacher", metavar="RUN|FILE",
                    help="distil from this network while fine-tuning")
    sh.add_argument("--temperature", type=float, default=4.0, help="distillation T (default 4)")
    sh.add_argument("--alpha", type=float, default=0.9,
                    help="weight of the distillation term (default 0.9)")
    sh.add_argument("--quantize", choices=("int8", "none"), default="int8",
                    help="int8 (ONNX Runtime static, default) or none")
    sh.add_argument("--method", choices=("minmax", "entropy", "percentile"), default="minmax",
                    help="activation calibration (default minmax)")
    sh.add_argument("--calibration", type=int, default=256, metavar="N",
                    help="training images used to calibrate int8 (default 256)")
    sh.add_argument("--qat", type=int, default=0, metavar="EPOCHS",
                    help="epochs of quantization-aware fine-tuning before int8")
    sh.add_argument("--batch", default="1,32", metavar="B,B",
                    help="batch sizes timed (default 1,32)")
    sh.add_argument("--repeats", type=int, default=20, help="timing rounds (default 20)")
    sh.add_argument("--threads", type=int, help="CPU threads for timing (default torch's)")
    sh.add_argument("--seed", type=int, default=0)
    sh.add_argument("--force", action="store_true",
                    help="replace the results of an earlier shrink in DIR")
    sh.add_argument("--json", action="store_true", help="print report.json")
    sh.add_argument("--no-progress", action="store_true", help="no progress bar")
    sh.set_defaults(func=cmd_shrink)

    lk = sub.add_parser(
        "look", help="look inside a network: activation maps, filters, maximisation, "
                     "saliency, Grad-CAM",
        description="Look inside a trained network. Layers are addressed by the rows of "
                    "`deeparch summary`: name, #row number or glob.")
    look = lk.add_subparsers(dest="look_action", metavar="ACTION")
    look.required = True
    _look_parsers(look)
    return p


_TRAIN_DEFAULTS: dict[str, Any] = {}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DeeparchError as exc:
        from .errors import CheckpointError
        # API keyword names become the command's flags; a damaged run folder's message
        # names the keys of its config.json, which are the right words there
        text = str(exc) if isinstance(exc, CheckpointError) else cli_message(str(exc))
        print(f"deeparch: error: {text}", file=sys.stderr)
        return 2
    except Terminated:
        print("deeparch: stopped by SIGTERM", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("deeparch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `deeparch summary vgg16 | head`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


if __name__ == "__main__":
    sys.exit(main())
