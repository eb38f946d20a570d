"""The search loop: ``run(space, strategy, objective, budget, seed, **constraints)``.

A query is one architecture the strategy asked for and the objective scored; the loop
stops after exactly ``budget`` queries (a repeated architecture counts again, see
:mod:`deeparch.search.strategies`). With hard constraints (``max_params``, ``max_macs``,
``max_latency_ms``) an architecture over a cap is **not** scored and does not use the
budget: the strategy is told ``-inf`` and the history keeps it as a rejected proposal
(``"rejected": "macs 6.1e+07 > 5e+07"``). After ``max_rejects`` (default 2,000) proposals
in a row without a feasible one the search stops with a SearchError that names the cheapest
cost it saw.

:func:`search` runs several strategies over several seeds, writes ``history.jsonl`` (one
JSON object per proposal, in order), ``best_so_far.png`` (mean and 10-90 % band of the
best score found against queries, one curve per strategy), ``best.txt`` (a ``# space:``
line, :func:`space_spec` of the space searched, then the best architecture string;
``deeparch summary --arch`` and ``deeparch train --arch`` read both) and ``search.json``.

An architecture becomes a model that the trainer can record and rebuild through the model
string ``search:SPACE:ARCH`` (:func:`arch_model_name`, :func:`build_arch_model`), SPACE
with the options that differ from the space's defaults (``nb201(channels=8, cells=1)``).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import SearchError
from .objectives import Constraints, arch_cost, make_objective
from .strategies import ScalingSpace, Strategy, make_strategy

ARCH_PREFIX = "search:"


# --------------------------------------------------------------------------- spaces

def get_space(space, **options):
    """A Space from a name (``nb201``, ``nasnet``, ``mobile``, ``scaling``) or itself."""
    if not isinstance(space, str):
        return space
    if space == "scaling":
        return ScalingSpace(**options)
    from .spaces import space as make_space
    try:
        return make_space(space, **options)
    except SearchError as exc:
        text = str(exc)
        if "scaling" not in text and "unknown" in text.lower():
            raise SearchError(text.rstrip(".") + " (and 'scaling' for the grid strategy).") \
                from None
        raise


def space_spec(space) -> str:
    """A space as it is recorded: its name, with the options that differ from the defaults
    in Python call syntax -- ``'nb201'``, ``"nb201(channels=8, cells=1)"`` --
    which :func:`space_from_spec` reads back."""
    space = get_space(space)
    name = space.name
    try:
        default = get_space(name)
    except SearchError:
        return name
    diff = [f"{k}={getattr(space, k)!r}" for k in getattr(space, "OPTIONS", ())
            if hasattr(space, k) and repr(getattr(space, k)) != repr(getattr(default, k, None))]
    spec = f"{name}({', '.join(diff)})" if diff else name
    if ":" in spec or "\n" in spec or len(spec) > MAX_SPEC:
        raise SearchError(f"the {name} space's options cannot be recorded with an "
                          f"architecture ({spec[:80]!r}).")
    return spec


MAX_SPEC = 2000
"""The longest space spec read back (a recorded run's config.json is not trusted)."""


def space_from_spec(spec: str):
    """The Space that :func:`space_spec` wrote: ``'plain'`` or ``"plain(widths=(4, 8))"``
    (option values are Python literals); a SearchError for anything else."""
    import ast
    if not isinstance(spec, str) or not spec.strip() or len(spec) > MAX_SPEC:
        raise SearchError(f"a search space is written NAME or NAME(option=value, ...), not "
                          f"{str(spec)[:80]!r}.")
    text = spec.strip()
    if "(" not in text:
        return get_space(text)
    try:
        node = ast.parse(text, mode="eval").body
        ok = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.args
              and all(kw.arg for kw in node.keywords))
        options = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords} if ok else {}
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        ok = False
    if not ok:
        raise SearchError(f"a search space is written NAME or NAME(option=value, ...) with "
                          f"literal values, not {text[:80]!r}.")
    return get_space(node.func.id, **options)


def space_for_arch(text: str, spec: str | None = None, name: str | None = None):
    """The space an architecture string is read in: ``name`` (``--space``) if given, with
    the options of ``spec`` (a best.txt's recorded space) when that names the same space;
    else ``spec``'s; else the space the string's own notation shows
    (:func:`deeparch.search.spaces.find_space`)."""
    if spec is not None:
        recorded = space_from_spec(spec)
        if name is None or name == recorded.name:
            return recorded
    if name is not None:
        return get_space(name)
    from .spaces import find_space
    return find_space(text)[0]


SPACE_HEADER = "# space: "
"""best.txt's first line: the space (and its options) the architecture below was searched
in, so that ``summary --arch`` and ``train --arch`` build the same network."""


def read_arch_spec(text: str) -> tuple[str, str | None]:
    """``(architecture string, recorded space spec or None)``: ``text`` itself, or from the
    file it names its first non-comment line and its ``# space:`` header."""
    p = Path(text)
    try:
        is_file = len(text) < 4096 and p.is_file()
    except OSError:
        is_file = False
    if is_file:
        if p.stat().st_size > 1_000_000:
            raise SearchError(f"{text} is too large to be an architecture file (over 1 MB).")
        spec = None
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith(SPACE_HEADER) and spec is None:
                spec = line[len(SPACE_HEADER):].strip()
            elif line.strip() and not line.lstrip().startswith("#"):
                return line.strip(), spec
        raise SearchError(f"{text} holds no architecture string (it is empty).")
    return text, None


def read_arch(text: str) -> str:
    """An architecture string, or the first non-empty line of the file it names."""
    return read_arch_spec(text)[0]


def arch_model_name(space, arch) -> str:
    """The model string ``search:SPACE:ARCH`` under which the trainer records ``arch``;
    SPACE is :func:`space_spec` (the options that differ from the defaults included)."""
    space = get_space(space)
    if isinstance(arch, str):
        arch = space.decode(arch)
    return f"{ARCH_PREFIX}{space_spec(space)}:{space.encode(arch)}"


def is_arch_model(model: Any) -> bool:
    return isinstance(model, str) and model.startswith(ARCH_PREFIX)


def build_arch_model(model: str, num_classes: int = 10, in_chans: int = 3):
    """Build a ``search:SPACE:ARCH`` model string; returns ``(module, space, arch)``."""
    space, arch = _parse_model(model)
    return space.build(arch, num_classes=num_classes, in_chans=in_chans), space, arch


def _parse_model(model: str):
    """``search:SPACE:ARCH`` -> ``(space, arch)``."""
    name, sep, text = model[len(ARCH_PREFIX):].partition(":")
    if not sep:
        raise SearchError(f"an architecture model is written search:SPACE:ARCH, not "
                          f"{model[:120]!r}.")
    space = space_from_spec(name)
    return space, space.decode(text)


def build_for_training(model: str, num_classes: int, input_size: Sequence[int],
                       options: dict[str, Any] | None = None, seed: int = 13,
                       fit_input: bool = True):
    """:func:`deeparch.train.run.build_model` for a ``search:SPACE:ARCH`` model string:
    ``(module, input size, note)``. The network is built for the data's channels and
    classes at the data's size when it takes it, else at the space's own input size."""
    import torch
    from ..errors import ShapeError, TrainingError
    if options:
        raise TrainingError("model options (-o KEY=VALUE) do not apply to a searched "
                            "architecture; the architecture string fixes the network.")
    c, h, w = (int(v) for v in input_size)
    space, arch = _parse_model(model)
    own = tuple(space.input_size(arch))[1:]
    sizes = [(h, w)] + ([own] if fit_input and own != (h, w) else [])
    last: Exception | None = None
    for size in sizes:
        torch.manual_seed(seed)
        net = space.build(arch, num_classes=num_classes, in_chans=c)
        try:
            net.eval()
            with torch.no_grad():
                out = net(torch.zeros(2, c, *size))
            net.train()
        except (RuntimeError, ValueError, ShapeError) as exc:
            last = exc
            continue
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.dim() != 2 or out.shape[1] != num_classes:
            raise TrainingError(f"the {space.name} architecture outputs shape "
                                f"{tuple(out.shape[1:])} per image, not {num_classes} classes.")
        note = None if size == (h, w) else (
            f"resizing the images from {h}x{w} to {size[0]}x{size[1]}: the {space.name} "
            f"architecture cannot take {h}x{w}")
        return net, (c, *size), note
    raise ShapeError(f"the {space.name} architecture cannot take {c}x{h}x{w} images ({last}).")


# --------------------------------------------------------------------------- result

@dataclass
class SearchResult:
    """The outcome of one search: the best architecture, its score and every proposal."""

    space: str
    strategy: str
    objective: str
    seed: int
    budget: int
    best_arch: Any = None
    best: str | None = None                 # the best architecture's string
    best_score: float = -math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def queries(self) -> list[dict[str, Any]]:
        """The scored proposals (the budget), in order."""
        return [h for h in self.history if "rejected" not in h]

    def best_so_far(self) -> list[float]:
        """The best score after each query."""
        return [q["best"] for q in self.queries]

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "strategy": self.strategy, "objective": self.objective,
                "seed": self.seed, "budget": self.budget, "best": self.best,
                "best_score": self.best_score, "queries": len(self.queries),
                "rejected": len(self.history) - len(self.queries), "wall_s": self.wall_s}

    def __repr__(self) -> str:
        return (f"SearchResult({self.strategy} on {self.space}, {self.objective}, seed "
                f"{self.seed}: best {self.best_score:.4g} {self.best!r} after "
                f"{len(self.queries)} queries)")


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        raise SearchError(f"the budget must be a positive whole number of queries, not "
                          f"{budget!r}.")
    return budget


def run(space, strategy, objective, budget: int, seed: int = 0, *,
        strategy_options: dict[str, Any] | None = None,
        objective_options: dict[str, Any] | None = None, record_cost: bool = False,
        max_rejects: int = 2000, progress: Callable[[int, int, dict], Any] | None = None,
        **constraints) -> SearchResult:
    """Search ``space`` with ``strategy`` for ``budget`` queries of ``objective``.

    ``space``: a Space or a name; ``strategy``: a Strategy or a name (options in
    ``strategy_options``); ``objective``: an Objective, a callable ``f(space, arch)`` or a
    name (options in ``objective_options``). ``constraints``: ``max_params``, ``max_macs``,
    ``max_latency_ms`` (hard caps). ``record_cost``: put params and mult-adds of every query
    into the history (they are always there under constraints). ``progress(i, budget,
    query)`` is called after every query.

    Each history entry: ``query`` (1-based; 0 for a rejected proposal), ``arch`` (the
    string), ``score``, ``best`` (best so far), ``wall_s`` (objective time), ``cost`` (when
    computed) and ``rejected`` (why, for a proposal over a cap)."""
    budget = _check_budget(budget)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SearchError(f"seed must be an integer, not {seed!r}.")
    caps = Constraints.from_kwargs(constraints)
    space = get_space(space)
    if isinstance(strategy, Strategy):
        strat = strategy
    else:
        strat = make_strategy(strategy, space, seed, **(strategy_options or {}))
    if strat.size is not None and budget > strat.size:
        raise SearchError(f"the {strat.name} strategy has only {strat.size} architectures to "
                          f"propose; use a budget of at most {strat.size}.")
    obj = make_objective(objective, **(objective_options or {}))
    if caps:
        _check_caps(space, caps)
    result = SearchResult(getattr(space, "name", "?"), strat.name, obj.name, seed, budget)
    t_start = time.perf_counter()
    n, rejects = 0, 0
    cheapest: dict[str, float] = {}
    while n < budget:
        arch = strat.ask()
        text = space.encode(arch)
        entry: dict[str, Any] = {"query": 0, "arch": text}
        cost = None
        if caps or record_cost:
            cost = arch_cost(space, arch, latency=caps.max_latency_ms is not None)
            entry["cost"] = cost
        why = caps.violation(cost) if caps else None
        if why is not None:
            rejects += 1
            for k in caps.caps():
                cheapest[k] = min(cheapest.get(k, math.inf), cost[k])
            entry.update(score=None, rejected=why)
            result.history.append(entry)
            strat.tell(arch, -math.inf)
            if rejects >= max_rejects:
                raise SearchError(caps.infeasible_message(cheapest, rejects).replace(
                    "of the", "of the last"))
            continue
        rejects = 0
        t0 = time.perf_counter()
        score = float(obj(space, arch))
        wall = time.perf_counter() - t0
        n += 1
        strat.tell(arch, score)
        if score > result.best_score or result.best is None:
            if not (math.isnan(score)):
                result.best_score, result.best_arch, result.best = score, arch, text
        entry.update(query=n, score=score, best=result.best_score, wall_s=round(wall, 6))
        result.history.append(entry)
        if progress is not None:
            progress(n, budget, entry)
    result.wall_s = time.perf_counter() - t_start
    return result


_CHECKED: dict[tuple, bool] = {}


def _check_caps(space, caps: Constraints) -> None:
    """Refuse, before any query, caps on params / mult-adds that even the cheapest
    architecture (:func:`~deeparch.search.objectives.cheapest`) breaks."""
    from .objectives import _WORD, _human, cheapest, space_key
    for key, cap in caps.caps().items():
        if key == "latency_ms" or not hasattr(space, "decisions"):
            continue
        memo = (space_key(space), key, cap)
        if _CHECKED.get(memo):
            continue
        arch, cost = cheapest(space, key)
        if cost > cap:
            raise SearchError(f"no architecture of the {space.name} space meets "
                              f"{_WORD[key]} <= {_human(key, cap)}: the cheapest, "
                              f"{space.encode(arch)}, has {_human(key, cost)} {_WORD[key]}; "
                              f"raise the cap.")
        _CHECKED[memo] = True


# --------------------------------------------------------------------------- many seeds, files

def search(space, strategies: Sequence[str] | str, objective, budget: int,
           seeds: int | Sequence[int] = 1, out: str | Path | None = None, *,
           strategy_options: dict[str, Any] | None = None,
           objective_options: dict[str, Any] | None = None, force: bool = False,
           log: Callable[[str], Any] | None = None, reference: float | None = None,
           **constraints) -> list[SearchResult]:
    """Run every strategy with every seed (``seeds``: a count, seeds 0..n-1, or a list) and,
    with ``out``, write the search folder (see the module docstring). The objective is made
    once and shared (a table is read once, a proxy's data loaded once)."""
    if isinstance(strategies, str):
        strategies = [s for s in strategies.split(",") if s]
    if not strategies:
        raise SearchError("give at least one strategy.")
    budget = _check_budget(budget)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SearchError(f"seeds must be at least 1, not {seeds}.")
        seeds = list(range(seeds))
    seeds = list(seeds)
    space = get_space(space)
    for name in strategies:                         # bad names before any work
        make_strategy(name, space, 0, **(strategy_options or {}))
    Constraints.from_kwargs(constraints)
    files = {}
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise SearchError(f"{out} is a file; give a folder for the search's files.")
        files = {k: out / k for k in ("history.jsonl", "best_so_far.png", "best.txt",
                                      "search.json")}
        there = [p.name for p in files.values() if p.exists()]
        if there and not force:
            raise SearchError(f"{out} already holds {', '.join(there)}; give another folder "
                              f"or --force to replace them.")
    obj = make_objective(objective, **(objective_options or {}))
    if reference is None and not constraints and hasattr(obj, "table") \
            and hasattr(obj.table, "best"):
        reference = float(obj.table.best()[1])          # the table's optimum, for the plot
    results: list[SearchResult] = []
    total = len(strategies) * len(seeds)
    t0 = time.perf_counter()
    for name in strategies:
        for seed in seeds:
            def tick(i, b, q, _name=name, _seed=seed):
                if log is not None and getattr(obj, "proxy", False) and obj.name == "proxy":
                    log(f"  {_name} seed {_seed}: query {i}/{b} score {q['score']:.4g} "
                        f"best {q['best']:.4g} ({q['wall_s']:.1f} s)")
            r = run(space, name, obj, budget, seed, strategy_options=strategy_options,
                    progress=tick, **constraints)
            results.append(r)
            if log is not None:
                log(f"[{len(results)}/{total}] {name} seed {seed}: best {r.best_score:.4g} "
                    f"{r.best} ({time.perf_counter() - t0:.1f} s)")
    if out is not None:
        write_search(results, out, reference=reference, space=space)
    return results


def _best_overall(results: Sequence[SearchResult]) -> SearchResult:
    return max(results, key=lambda r: r.best_score)


def write_search(results: Sequence[SearchResult], out: str | Path,
                 reference: float | None = None, space=None) -> dict[str, Path]:
    """Write history.jsonl, best_so_far.png, best.txt and search.json into ``out``
    (best.txt starts with a ``# space:`` line naming ``space`` and its options)."""
    from ..io import atomic_path, write_text
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in results:
        for h in r.history:
            lines.append(json.dumps({"strategy": r.strategy, "seed": r.seed, **h},
                                    allow_nan=False, default=_jsonable))
    paths = {"history": out / "history.jsonl", "plot": out / "best_so_far.png",
             "best": out / "best.txt", "summary": out / "search.json"}
    write_text(paths["history"], "\n".join(lines) + "\n")
    best = _best_overall(results)
    spec = space_spec(space) if space is not None else None
    write_text(paths["best"], (f"{SPACE_HEADER}{spec}\n" if spec else "") + best.best + "\n")
    summary = {"space": spec or best.space, "objective": best.objective, "budget": best.budget,
               "best": best.best, "best_score": best.best_score,
               "best_strategy": best.strategy, "best_seed": best.seed,
               "runs": [r.to_dict() for r in results]}
    write_text(paths["summary"], json.dumps(summary, indent=2, default=_jsonable) + "\n")
    with atomic_path(paths["plot"]) as tmp:
        plot_best_so_far(results, tmp, reference=reference)
    return paths


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def curves(results: Sequence[SearchResult]) -> dict[str, list[list[float]]]:
    """Best-so-far curves per strategy: ``{strategy: [curve of each seed]}``."""
    out: dict[str, list[list[float]]] = {}
    for r in results:
        out.setdefault(r.strategy, []).append(r.best_so_far())
    return out


def plot_best_so_far(results: Sequence[SearchResult], path, reference: float | None = None,
                     title: str | None = None, lower: float = 10, upper: float = 90):
    """Mean and ``lower``-``upper`` percentile band of the best score against queries,
    one curve per strategy; ``reference`` (e.g. the table's optimum) as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    lows, highs = [], []
    for name, runs in curves(results).items():
        n = min(len(c) for c in runs)
        arr = np.array([c[:n] for c in runs], dtype=float)
        arr[~np.isfinite(arr)] = np.nan
        x = np.arange(1, n + 1)
        mean = np.nanmean(arr, 0)
        ax.plot(x, mean, label=f"{name} (mean of {len(runs)} seed{'s' * (len(runs) != 1)})")
        lo, hi = np.nanpercentile(arr, lower, 0), np.nanpercentile(arr, upper, 0)
        if len(runs) > 1:
            ax.fill_between(x, lo, hi, alpha=0.2)
        k = min(n - 1, max(0, n // 20))        # the first 5 % of queries are off the scale
        lows.append(float(lo[k]))
        highs.append(float(np.nanmax(hi)))
    top = max(highs + ([reference] if reference is not None else []))
    bottom = min(lows)
    if np.isfinite(bottom) and np.isfinite(top) and top > bottom:
        pad = 0.05 * (top - bottom)
        ax.set_ylim(bottom - pad, top + pad)
    if reference is not None:
        ax.axhline(reference, ls="--", c="k", lw=1, label=f"optimum {reference:.2f}")
    r0 = results[0]
    ax.set_xlabel("queries")
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))       # whole queries
    ax.set_ylabel(f"best {r0.objective} so far")
    ax.set_title(title or f"{r0.space}: best {r0.objective} found (band: "
                          f"{lower:g}-{upper:g}th percentile over seeds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


__all__ = ["ARCH_PREFIX", "SearchResult", "arch_model_name", "build_arch_model",
           "build_for_training", "curves",
           "get_space", "is_arch_model", "plot_best_so_far", "read_arch", "read_arch_spec",
           "run", "search", "space_for_arch", "space_from_spec", "space_spec",
           "write_search"]
