"""Objectives (what a search maximises), costs, constraints and the MnasNet reward.

``make_objective(name, **options)``; every objective is called as ``objective(space, arch)``
and returns a float, higher is better:

``table``      the benchmark table's 200-epoch CIFAR-10 test accuracy in percent
               (:func:`deeparch.search.table.load_table`; ``table=`` a Table, e.g.
               ``Table.synthetic(...)``, or ``path=`` a data.anb file). Exact, no training.
``proxy``      a **proxy**: validation accuracy (percent) of the architecture trained for
               ``epochs`` (default 2) on the data set ``data`` (default ``digits``) with
               deeparch's Trainer, ``val_split`` 0.2, seed ``seed``. Short training ranks
               architectures only roughly; it is not the accuracy the network would reach.
               ``metric='loss'``: minus the lowest validation loss instead, which still
               separates networks once their validation accuracies have saturated (on
               digits most reach 98-99 % of 287 images, a step of 0.35 points).
``synflow``, ``naswot``, ``snip``, ``grad_norm``
               zero-cost scores of the untrained network (:mod:`deeparch.search.zero_cost`)
               on one minibatch of ``batch`` (default 64) images of ``data`` (default
               ``digits``, resized to the space's input size; ``data=None``: Gaussian noise).
``params``, ``macs``
               the parameter count and mult-adds themselves: the baselines a zero-cost score
               has to beat (a bigger NAS-Bench-201 cell is usually a better one).

Costs (:func:`arch_cost`): params and mult-adds from deeparch's inspector (meta tensors,
nothing allocated) at ``space.input_size(arch)``; ``latency_ms`` measured on demand
(median of timed forward passes of one image on this CPU).

Constraints (:class:`Constraints`): hard caps ``max_params``, ``max_macs``,
``max_latency_ms``; an architecture over a cap is not scored. The reward of MnasNet (Tan et
al. 2019) / EfficientNet: :class:`Reward` ``score * (cost / target) ** w``, ``w = -0.07``.
"""
from __future__ import annotations

import abc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import SearchError

OBJECTIVES = ("table", "proxy", "synflow", "naswot", "snip", "grad_norm", "params", "macs")
COSTS = ("params", "macs", "latency_ms")
PROXY_METRICS = ("accuracy", "loss")


# --------------------------------------------------------------------------- costs

_COST_CACHE: dict[tuple, dict[str, float]] = {}


def space_key(space) -> tuple:
    """A space's name and options (``space.OPTIONS``): two spaces with equal keys build the
    same networks."""
    opts = tuple((k, repr(getattr(space, k, None))) for k in getattr(space, "OPTIONS", ()))
    return (getattr(space, "name", type(space).__name__), opts)


def arch_cost(space, arch, latency: bool = False) -> dict[str, float]:
    """``{'params': ..., 'macs': ...}`` (and ``'latency_ms'`` with ``latency``) of ``arch``
    built by ``space`` for 10 classes at ``space.input_size(arch)``; cached."""
    key = (space_key(space), space.encode(arch))
    cost = _COST_CACHE.get(key)
    if cost is None:
        import torch

        from ..inspect.summary import summary
        with torch.device("meta"):
            model = space.build(arch)
        s = summary(model, input_size=tuple(space.input_size(arch)))
        cost = {"params": int(s.total_params), "macs": int(s.macs)}
        if len(_COST_CACHE) > 200_000:
            _COST_CACHE.clear()
        _COST_CACHE[key] = cost
    if latency and "latency_ms" not in cost:
        cost["latency_ms"] = measure_latency(space.build(arch), space.input_size(arch))
    return dict(cost)


def cheapest(space, key: str = "macs", sweeps: int = 2):
    """The architecture of least ``key`` (params or macs) that coordinate descent over
    ``space.decisions()`` finds from the all-first-options one, and its cost: each decision
    in turn set to its cheapest option, the others held (``sweeps`` passes). Exact when the
    cost is a sum over decisions (NAS-Bench-201's is); a good bound otherwise."""
    if key not in ("params", "macs"):
        raise SearchError(f"cheapest() needs params or macs, not {key!r}.")
    dec = space.decisions()
    choice = [0] * len(dec)
    best = arch_cost(space, space.from_decisions(choice))[key]
    for _ in range(sweeps):
        changed = False
        for i, (_, n) in enumerate(dec):
            for k in range(n):
                if k == choice[i]:
                    continue
                trial = list(choice)
                trial[i] = k
                c = arch_cost(space, space.from_decisions(trial))[key]
                if c < best:
                    best, choice, changed = c, trial, True
        if not changed:
            break
    return space.from_decisions(choice), best


def prime_costs(space, costs) -> None:
    """Give :func:`arch_cost` known costs (``{arch: {'params': .., 'macs': ..}}``), e.g.
    a whole finite space's computed in one go, so that a constrained search does not run
    the inspector on every new architecture."""
    name = space_key(space)
    for arch, cost in costs.items():
        _COST_CACHE[(name, space.encode(arch))] = {"params": int(cost["params"]),
                                                   "macs": int(cost["macs"])}


def measure_latency(model, input_size, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of one forward pass of a single image, in milliseconds (this CPU,
    PyTorch's current thread count; it varies with the machine's load)."""
    import torch
    x = torch.randn(1, *input_size)
    model = model.eval()
    times = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


@dataclass(frozen=True)
class Constraints:
    """Hard caps; ``None`` is no cap."""

    max_params: float | None = None
    max_macs: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self):
        for name in ("max_params", "max_macs", "max_latency_ms"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not v > 0 or not math.isfinite(v)):
                raise SearchError(f"{name} must be a positive number, not {v!r}.")

    @classmethod
    def from_kwargs(cls, kw: dict[str, Any]) -> "Constraints":
        unknown = [k for k in kw if k not in ("max_params", "max_macs", "max_latency_ms")]
        if unknown:
            raise SearchError(f"unknown constraint {unknown[0]!r}; the constraints are "
                              f"max_params, max_macs and max_latency_ms.")
        return cls(**kw)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.max_params, self.max_macs,
                                           self.max_latency_ms))

    def caps(self) -> dict[str, float]:
        return {k: v for k, v in (("params", self.max_params), ("macs", self.max_macs),
                                  ("latency_ms", self.max_latency_ms)) if v is not None}

    def violation(self, cost: dict[str, float]) -> str | None:
        """``None`` when ``cost`` meets every cap, else which cap it breaks."""
        for key, cap in self.caps().items():
            if cost[key] > cap:
                return f"{key} {cost[key]:g} > {cap:g}"
        return None

    def check_feasible(self, space, archs) -> None:
        """Raise :class:`SearchError` when none of ``archs`` (e.g. a whole finite space, or
        samples of one) meets the caps; the message names the cheapest one's cost."""
        if not self:
            return
        caps = self.caps()
        cheapest: dict[str, float] = {}
        n = 0
        for arch in archs:
            n += 1
            cost = arch_cost(space, arch)
            if all(cost[k] <= v for k, v in caps.items() if k != "latency_ms"):
                if "latency_ms" not in caps:
                    return
                cost = arch_cost(space, arch, latency=True)
                if cost["latency_ms"] <= caps["latency_ms"]:
                    return
            for k in caps:
                if k in cost:
                    cheapest[k] = min(cheapest.get(k, math.inf), cost[k])
        raise SearchError(self.infeasible_message(cheapest, n))

    def infeasible_message(self, cheapest: dict[str, float], n: int) -> str:
        said = ", ".join(f"{_human(k, cheapest[k])} {_WORD[k]}" for k in self.caps()
                         if k in cheapest)
        caps = ", ".join(f"{_WORD[k]} <= {_human(k, v)}" for k, v in self.caps().items())
        return (f"no architecture of the {n} tried meets {caps}: the cheapest had {said}; "
                f"raise the cap.")


_WORD = {"params": "parameters", "macs": "mult-adds", "latency_ms": "latency"}


def _human(key: str, v: float) -> str:
    if key == "latency_ms":
        return f"{v:.3g} ms"
    return f"{v / 1e6:.4g} M" if v >= 1e4 else f"{v:g}"


# --------------------------------------------------------------------------- objectives

class Objective(abc.ABC):
    """``objective(space, arch) -> float`` (higher is better)."""

    name = "objective"
    proxy = False            # True: an approximation of what one really wants (say so)

    @abc.abstractmethod
    def __call__(self, space, arch) -> float:
        """Each subclass defines it."""

    def describe(self) -> str:
        return self.name


class TableObjective(Objective):
    """Lookup of the benchmark table (CIFAR-10 test accuracy after 200 epochs, percent)."""

    name = "table"

    def __init__(self, table=None, path=None):
        if table is None:
            from .table import load_table
            table = load_table(path)
        self.table = table

    def __call__(self, space, arch) -> float:
        return float(self.table.accuracy(arch))

    def describe(self) -> str:
        return "table: 200-epoch CIFAR-10 test accuracy (%) from the benchmark table"


def _load_images(data: str, data_dir=None, size=None):
    """Train split of ``data`` as (uint8 images, labels, num_classes, in_chans)."""
    from ..train.run import load_data
    train, _, _ = load_data(data, data_dir)
    return train


class ProxyObjective(Objective):
    """A proxy: validation accuracy (%) after ``epochs`` epochs of deeparch's Trainer on
    ``data``. The images keep their own size (the space's networks are built for the data's
    channels and classes; NAS-Bench-201 nets are fully convolutional and take 8x8 digits)."""

    name = "proxy"
    proxy = True

    def __init__(self, data: str = "digits", epochs: int = 2, batch_size: int = 64,
                 lr: float = 0.01, optimizer: str = "adam", seed: int = 0,
                 val_split: float = 0.2, subset: int | None = None, data_dir=None,
                 threads: int | None = None, image_size=None, metric: str = "accuracy"):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise SearchError(f"the proxy's epochs must be an integer >= 1, not {epochs!r}.")
        if metric not in PROXY_METRICS:
            raise SearchError(f"the proxy's metric is one of {', '.join(PROXY_METRICS)}, not "
                              f"{metric!r}.")
        self.data, self.epochs, self.seed, self.metric = data, epochs, int(seed), metric
        from ..train.run import load_data
        from ..train.trainer import split_data
        from ..train.config import make_config
        self.config = dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                           seed=self.seed, val_split=val_split, subset=subset,
                           schedule="cosine", threads=threads or 0)
        train, self.test, _ = load_data(data, data_dir, image_size=image_size)
        self.train, self.val = split_data(train, make_config(**self.config))
        self.num_classes = train.num_classes
        self.in_chans = train.input_size[0]
        self.last: dict[str, Any] = {}

    def fit(self, space, arch):
        """Train ``arch`` as the proxy does; returns the Trainer (its model trained)."""
        import torch

        from ..train.trainer import Trainer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(arch, num_classes=self.num_classes, in_chans=self.in_chans)
        trainer = Trainer(model, self.train, self.val, self.config, log=None, progress=False)
        trainer.fit()
        return trainer

    def __call__(self, space, arch) -> float:
        trainer = self.fit(space, arch)
        val = [r for r in trainer.history if r.get("val_loss") is not None]
        accuracy = 100.0 * max(float(r["val_accuracy"]) for r in val)
        loss = min(float(r["val_loss"]) for r in val)
        self.last = {"val_accuracy": accuracy, "val_loss": loss, "epochs": trainer.epoch}
        return accuracy if self.metric == "accuracy" else -loss

    def describe(self) -> str:
        what = ("validation accuracy (%)" if self.metric == "accuracy"
                else "minus the lowest validation loss")
        return (f"proxy: {what} after {self.epochs} epoch(s) on {self.data} "
                f"(a short-training proxy, not the final accuracy)")


class ZeroCostObjective(Objective):
    """A zero-cost score of the untrained network (see :mod:`deeparch.search.zero_cost`)."""

    proxy = True

    def __init__(self, kind: str, data: str | None = "digits", batch: int = 64,
                 seed: int = 0, data_dir=None, in_chans: int | None = None,
                 num_classes: int = 10):
        from .zero_cost import ZERO_COST
        if kind not in ZERO_COST:
            raise SearchError(f"unknown zero-cost score {kind!r}; they are "
                              f"{', '.join(ZERO_COST)}.")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
            raise SearchError(f"the zero-cost batch must be an integer >= 2, not {batch!r}.")
        self.name, self.kind, self.batch, self.seed = kind, kind, batch, int(seed)
        self.data, self.data_dir = data, data_dir
        self.num_classes, self.in_chans = num_classes, in_chans
        self._pool = None
        self._batches: dict[tuple, Any] = {}

    def minibatch(self, input_size):
        """The fixed minibatch (float images normalised per channel, labels) at
        ``input_size``: the same images for every architecture."""
        import torch
        key = tuple(input_size)
        if key in self._batches:
            return self._batches[key]
        c, h, w = key
        g = torch.Generator().manual_seed(self.seed)
        if self.data is None:
            x = torch.randn(self.batch, c, h, w, generator=g)
            y = torch.randint(0, self.num_classes, (self.batch,), generator=g)
        else:
            if self._pool is None:
                self._pool = _load_images(self.data, self.data_dir)
            ds = self._pool
            idx = torch.randperm(len(ds.labels), generator=g)[:self.batch]
            x = ds.images[idx].float() / 255.0
            y = ds.labels[idx].long()
            if x.shape[1] != c:                     # grey digits for a 3-channel net
                x = x.mean(1, keepdim=True).expand(-1, c, -1, -1)
            if tuple(x.shape[2:]) != (h, w):
                x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear",
                                                    align_corners=False)
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
            x = ((x - mean) / std).contiguous()
            self.num_classes = max(self.num_classes, int(y.max()) + 1)
        self._batches[key] = (x, y)
        return x, y

    def __call__(self, space, arch) -> float:
        from .zero_cost import zero_cost_score
        size = tuple(space.input_size(arch))
        c = self.in_chans or size[0]
        size = (c, *size[1:])
        images, labels = (None, None) if self.kind == "synflow" else self.minibatch(size)
        return zero_cost_score(
            self.kind, lambda: space.build(arch, num_classes=self.num_classes, in_chans=c),
            size, images, labels, seed=self.seed)

    def describe(self) -> str:
        return f"{self.kind}: zero-cost score of the untrained network (a proxy)"


class CostObjective(Objective):
    """The parameter count or the mult-adds themselves (the baselines)."""

    proxy = True

    def __init__(self, key: str):
        self.name = self.key = key

    def __call__(self, space, arch) -> float:
        return float(arch_cost(space, arch)[self.key])


class Reward(Objective):
    """MnasNet's / EfficientNet's soft-constrained reward ``ACC * (cost / target) ** w``
    (``w = -0.07``; ``cost`` params, macs or latency_ms)."""

    def __init__(self, objective: Objective, target: float, cost: str = "macs",
                 w: float = -0.07):
        if cost not in COSTS:
            raise SearchError(f"the reward's cost must be one of {', '.join(COSTS)}, not "
                              f"{cost!r}.")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise SearchError(f"the reward's target must be a positive number, not "
                              f"{target!r}.")
        self.objective, self.target, self.cost, self.w = objective, float(target), cost, float(w)
        self.name = f"{objective.name}*({cost}/T)^{w:g}"
        self.proxy = objective.proxy

    def __call__(self, space, arch) -> float:
        acc = self.objective(space, arch)
        c = arch_cost(space, arch, latency=self.cost == "latency_ms")[self.cost]
        return acc * (max(c, 1e-12) / self.target) ** self.w

    def describe(self) -> str:
        return (f"{self.objective.describe()} x ({self.cost}/{self.target:g})^{self.w:g} "
                f"(MnasNet reward)")


def make_objective(name: str | Objective | Callable, **options) -> Objective:
    """An objective by name (see :data:`OBJECTIVES`); an Objective or a callable
    ``f(space, arch) -> float`` passes through. ``reward_target=T`` (with
    ``reward_cost``, default macs, and ``reward_w``, default -0.07) wraps it in the MnasNet
    reward."""
    target = options.pop("reward_target", None)
    rcost = options.pop("reward_cost", "macs")
    rw = options.pop("reward_w", -0.07)
    if isinstance(name, Objective):
        obj = name
    elif callable(name):
        obj = _Callable(name)
    elif name == "table":
        obj = _construct(TableObjective, name, options)
    elif name == "proxy":
        obj = _construct(ProxyObjective, name, options)
    elif name in ("synflow", "naswot", "snip", "grad_norm"):
        obj = _construct(lambda **kw: ZeroCostObjective(name, **kw), name, options,
                         ZeroCostObjective)
    elif name in ("params", "macs"):
        if options:
            raise SearchError(f"objective {name!r} takes no options.")
        obj = CostObjective(name)
    else:
        raise SearchError(f"unknown objective {name!r}; the objectives are "
                          f"{', '.join(OBJECTIVES)}.")
    if target is not None:
        obj = Reward(obj, target, rcost, rw)
    return obj


class _Callable(Objective):
    def __init__(self, f):
        self.f = f
        self.name = getattr(f, "__name__", "objective")

    def __call__(self, space, arch) -> float:
        return float(self.f(space, arch))


def _construct(factory, name, options, cls=None):
    import inspect
    cls = cls or factory
    allowed = [p for p in inspect.signature(cls.__init__).parameters
               if p not in ("self", "kind")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise SearchError(f"objective {name!r} has no option {unknown[0]!r}; its options are "
                          f"{', '.join(allowed)}.")
    return factory(**options)


__all__ = ["COSTS", "OBJECTIVES", "Constraints", "CostObjective", "Objective",
           "ProxyObjective", "Reward", "TableObjective", "ZeroCostObjective", "arch_cost",
           "cheapest", "make_objective", "measure_latency", "prime_costs"]
