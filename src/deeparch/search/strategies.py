"""Search strategies: seeded ask/tell optimisers over a search space.

Every strategy proposes an architecture with :meth:`Strategy.ask` and learns from its score
with :meth:`Strategy.tell` (higher is better; ``-inf`` for one that failed or broke a
constraint). The loop that drives them (:func:`deeparch.search.loop.run`) stops exactly at
the budget: a strategy never decides when to stop.

Counting: every ``ask`` that is scored is one query, **a repeated architecture included**
(random search samples with replacement; evolution may breed a child it has seen). This is
the convention of the NAS-Bench-201 papers' "number of queries" x-axis being simulated time,
and it keeps the budget honest for an objective that is not a lookup (a proxy training run
costs the same the second time). An objective may cache its scores; the query still counts.

Strategies (``make_strategy(name, space, seed, **options)``):

``random``
    uniform samples of ``space.sample``.
``evolution``
    regularized ("aging") evolution, Real et al. 2019: a population of ``population``
    (default 10) random architectures; then each step samples ``sample_size`` (default 3)
    members, mutates the best of them (``space.mutate``) and the *oldest* member dies.
    A proposal told ``-inf`` (failed, or over a hard cap) never joins the population.
    NATS-Bench/NAS-Bench-201 use P=10, S=3 on this space's table.
``reinforce``
    REINFORCE (Williams 1992) as Dong & Yang 2020 ran it on NAS-Bench-201: one categorical
    distribution per token of ``space.decisions()`` (independent softmax logits, for nb201
    one per edge), updated with Adam (``lr`` default 0.01) on ``-(R - b) log p(arch)`` where
    ``b`` is a moving-average baseline (``momentum`` 0.9). Scores are used as given (table
    accuracy in percent) divided by ``reward_scale`` (default 100).
``ppo``
    Zoph et al. 2018 (NASNet): an LSTM controller (one layer, ``hidden`` units, default 100)
    that emits the tokens of ``space.decisions()`` one at a time, each conditioned on the
    previous token, trained with PPO's clipped surrogate (Schulman et al. 2017, ``clip`` 0.2)
    on batches of ``batch`` (default 10) architectures, ``ppo_epochs`` passes over each
    batch, an exponential-moving-average baseline (``baseline_decay`` 0.95, the paper's) and
    an entropy bonus (``entropy`` 1e-4). The paper's learning rate is 0.00035 over 20,000
    child networks; for budgets of hundreds the default ``lr`` is 0.005.
``grid``
    EfficientNet's step 1 (Tan & Le 2019): a grid over the compound-scaling coefficients
    ``alpha, beta, gamma >= 1`` (``step`` 0.05, up to ``max`` 2.0) keeping those with
    ``|alpha * beta**2 * gamma**2 - 2| <= tol`` (default 0.1), nearest to 2 first. It works
    on a :class:`ScalingSpace` (architecture = the coefficients), whose ``build`` scales a
    base network by ``beta`` (width), ``alpha`` (depth) and ``gamma`` (resolution) at phi = 1.
    It has a finite number of points (``len(strategy)``); a budget above that is refused.
"""
from __future__ import annotations

import abc
import math
import random
from typing import Any, Sequence

from ..errors import SearchError

STRATEGIES = ("random", "evolution", "reinforce", "ppo", "grid")


class Strategy(abc.ABC):
    """The ask/tell protocol. Subclasses set :attr:`name` and implement ``ask``/``tell``."""

    name = "strategy"
    size: int | None = None          # finite number of proposals (grid), else None

    def __init__(self, space, seed: int = 0):
        self.space = space
        self.seed = int(seed)
        self.rng = random.Random(self.seed)
        self.asked = 0
        self.told = 0

    @abc.abstractmethod
    def ask(self):
        """Each subclass defines it."""

    def tell(self, arch, score: float) -> None:
        self.told += 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={getattr(self.space, 'name', '?')!r}, seed={self.seed})"


def _finite(score: float) -> bool:
    return score is not None and math.isfinite(score)


def _check_int(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SearchError(f"{name} must be an integer >= {lo}, not {value!r}.")
    return value


def _check_float(name: str, value: Any, lo: float, hi: float = math.inf,
                 open_lo: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if open_lo else value >= lo) and value <= hi
    if not ok:
        bound = f"> {lo}" if open_lo else f">= {lo}"
        raise SearchError(f"{name} must be a number {bound}" +
                          (f" and <= {hi}" if hi != math.inf else "") + f", not {value!r}.")
    return float(value)


# --------------------------------------------------------------------------- random

class RandomSearch(Strategy):
    """Uniform samples, with replacement."""

    name = "random"

    def ask(self):
        self.asked += 1
        return self.space.sample(self.rng)


# --------------------------------------------------------------------------- evolution

class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al. 2019, Algorithm 1): tournament of ``sample_size``
    members, the winner's mutant joins, the oldest member leaves."""

    name = "evolution"

    def __init__(self, space, seed: int = 0, population: int = 10, sample_size: int = 3):
        super().__init__(space, seed)
        self.population_size = _check_int("population", population, 1)
        self.sample_size = _check_int("sample_size", sample_size, 1)
        if self.sample_size > self.population_size:
            raise SearchError(f"sample_size ({sample_size}) cannot exceed the population "
                              f"({population}).")
        self.population: list[tuple[Any, float]] = []     # oldest first

    def ask(self):
        self.asked += 1
        if len(self.population) < self.population_size:
            return self.space.sample(self.rng)              # the random initial population
        contenders = [self.population[self.rng.randrange(len(self.population))]
                      for _ in range(self.sample_size)]     # with replacement, as the paper
        parent = max(contenders, key=lambda m: m[1])[0]
        return self.space.mutate(parent, self.rng)

    def tell(self, arch, score: float) -> None:
        super().tell(arch, score)
        if not _finite(score):
            return              # failed or over a cap: never a member (the parent tries again)
        self.population.append((arch, score))
        if len(self.population) > self.population_size:
            self.population.pop(0)                          # the oldest dies


# --------------------------------------------------------------------------- reinforce

class _Adam:
    """Adam for a list of numpy arrays (maximising)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        import numpy as np
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def ascend(self, grads) -> None:
        import numpy as np
        self.t += 1
        b1, b2 = self.betas
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mhat = m / (1 - b1 ** self.t)
            vhat = v / (1 - b2 ** self.t)
            p += self.lr * mhat / (np.sqrt(vhat) + self.eps)


def _softmax(z):
    import numpy as np
    e = np.exp(z - z.max())
    return e / e.sum()


class _Rewards:
    """A moving-average baseline; scores that failed (``-inf``) get the worst reward seen."""

    def __init__(self, momentum: float, scale: float):
        self.momentum, self.scale = momentum, scale
        self.baseline: float | None = None
        self.worst: float | None = None

    def reward(self, score: float) -> float:
        if _finite(score):
            r = score / self.scale
            self.worst = r if self.worst is None else min(self.worst, r)
        else:
            r = self.worst if self.worst is not None else 0.0
        return r

    def advantage(self, r: float) -> float:
        if self.baseline is None:
            self.baseline = r
        adv = r - self.baseline
        self.baseline = self.momentum * self.baseline + (1 - self.momentum) * r
        return adv


class Reinforce(Strategy):
    """A factorised categorical policy over ``space.decisions()``, REINFORCE with a
    moving-average baseline and Adam."""

    name = "reinforce"

    def __init__(self, space, seed: int = 0, lr: float = 0.01, momentum: float = 0.9,
                 reward_scale: float = 100.0):
        import numpy as np
        super().__init__(space, seed)
        self.lr = _check_float("lr", lr, 0.0, open_lo=True)
        momentum = _check_float("momentum", momentum, 0.0, 1.0)
        scale = _check_float("reward_scale", reward_scale, 0.0, open_lo=True)
        self.decisions = list(space.decisions())
        self.logits = [np.zeros(n) for _, n in self.decisions]
        self.opt = _Adam(self.logits, self.lr)
        self.rewards = _Rewards(momentum, scale)
        self.np_rng = np.random.default_rng(self.seed)
        self._pending: dict[Any, list[int]] = {}

    def probabilities(self) -> list[list[float]]:
        """The policy's current distribution, per decision."""
        return [_softmax(z).tolist() for z in self.logits]

    def ask(self):
        self.asked += 1
        choices = [int(self.np_rng.choice(len(z), p=_softmax(z))) for z in self.logits]
        arch = self.space.from_decisions(choices)
        self._pending[arch] = choices
        return arch

    def tell(self, arch, score: float) -> None:
        super().tell(arch, score)
        choices = self._pending.pop(arch, None)
        if choices is None:
            choices = list(self.space.to_decisions(arch))
        adv = self.rewards.advantage(self.rewards.reward(score))
        grads = []
        for z, c in zip(self.logits, choices):
            g = -_softmax(z)
            g[c] += 1.0                          # d log p(c) / d logits
            grads.append(adv * g)
        self.opt.ascend(grads)


# --------------------------------------------------------------------------- ppo

class PPOController(Strategy):
    """An LSTM controller emitting the tokens of ``space.decisions()``, trained with PPO."""

    name = "ppo"

    def __init__(self, space, seed: int = 0, hidden: int = 100, lr: float = 0.005,
                 batch: int = 10, ppo_epochs: int = 4, clip: float = 0.2,
                 baseline_decay: float = 0.95, entropy: float = 1e-4,
                 reward_scale: float = 100.0):
        import torch
        from torch import nn
        super().__init__(space, seed)
        hidden = _check_int("hidden", hidden, 1)
        self.batch = _check_int("batch", batch, 1)
        self.ppo_epochs = _check_int("ppo_epochs", ppo_epochs, 1)
        self.clip = _check_float("clip", clip, 0.0, open_lo=True)
        self.entropy = _check_float("entropy", entropy, 0.0)
        lr = _check_float("lr", lr, 0.0, open_lo=True)
        self.rewards = _Rewards(_check_float("baseline_decay", baseline_decay, 0.0, 1.0),
                                _check_float("reward_scale", reward_scale, 0.0, open_lo=True))
        self.decisions = list(space.decisions())
        sizes = [n for _, n in self.decisions]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            # token embedding: a start token plus one row per (decision, option)
            self.embed = nn.Embedding(self.offsets[-1] + 1, hidden)
            self.cell = nn.LSTMCell(hidden, hidden)
            self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)
        self.modules = nn.ModuleList([self.embed, self.cell, self.heads])
        self.optimizer = torch.optim.Adam(self.modules.parameters(), lr=lr)
        self.generator = g
        self.hidden = hidden
        self._pending: dict[Any, tuple[list[int], float]] = {}
        self._buffer: list[tuple[list[int], float, float]] = []   # choices, old logp, adv

    def _log_probs(self, choices: Sequence[int] | None):
        """Run the controller; sample the tokens (``choices`` None) or score the given ones.
        Returns (choices, log-prob sum, entropy sum) as tensors."""
        import torch
        h = torch.zeros(1, self.hidden)
        c = torch.zeros(1, self.hidden)
        token = torch.tensor([self.offsets[-1]])          # the start token
        out, logp, ent = [], torch.zeros(()), torch.zeros(())
        for i, head in enumerate(self.heads):
            h, c = self.cell(self.embed(token), (h, c))
            dist = torch.log_softmax(head(h)[0], dim=-1)
            if choices is None:
                k = int(torch.multinomial(dist.exp(), 1, generator=self.generator))
            else:
                k = int(choices[i])
            out.append(k)
            logp = logp + dist[k]
            ent = ent - (dist.exp() * dist).sum()
            token = torch.tensor([self.offsets[i] + k])
        return out, logp, ent

    def ask(self):
        import torch
        self.asked += 1
        with torch.no_grad():
            choices, logp, _ = self._log_probs(None)
        arch = self.space.from_decisions(choices)
        self._pending[arch] = (choices, float(logp))
        return arch

    def tell(self, arch, score: float) -> None:
        super().tell(arch, score)
        pending = self._pending.pop(arch, None)
        if pending is None:
            import torch
            choices = list(self.space.to_decisions(arch))
            with torch.no_grad():
                logp = float(self._log_probs(choices)[1])
        else:
            choices, logp = pending
        adv = self.rewards.advantage(self.rewards.reward(score))
        self._buffer.append((choices, logp, adv))
        if len(self._buffer) >= self.batch:
            self._update()

    def _update(self) -> None:
        import torch
        batch, self._buffer = self._buffer, []
        advs = torch.tensor([a for _, _, a in batch], dtype=torch.float32)
        old = torch.tensor([lp for _, lp, _ in batch], dtype=torch.float32)
        for _ in range(self.ppo_epochs):
            new, ents = [], []
            for choices, _, _ in batch:
                _, lp, ent = self._log_probs(choices)
                new.append(lp)
                ents.append(ent)
            ratio = torch.exp(torch.stack(new) - old)
            clipped = torch.clamp(ratio, 1 - self.clip, 1 + self.clip)
            surrogate = torch.minimum(ratio * advs, clipped * advs).mean()
            loss = -(surrogate + self.entropy * torch.stack(ents).mean())
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()


# --------------------------------------------------------------------------- grid

def scaling_grid(step: float = 0.05, maximum: float = 2.0, target: float = 2.0,
                 tol: float = 0.1) -> list[tuple[float, float, float]]:
    """Every ``(alpha, beta, gamma)`` on a grid of ``step`` in ``[1, maximum]`` with
    ``|alpha * beta**2 * gamma**2 - target| <= tol``, nearest to ``target`` first (ties in
    grid order)."""
    step = _check_float("step", step, 0.0, open_lo=True)
    maximum = _check_float("max", maximum, 1.0)
    tol = _check_float("tol", tol, 0.0)
    n = int(math.floor((maximum - 1.0) / step + 1e-9)) + 1
    if n > 401:
        raise SearchError(f"a grid step of {step} up to {maximum} has {n} values per "
                          f"coefficient; use a step of at least {(maximum - 1) / 400:.4g}.")
    values = [round(1.0 + i * step, 10) for i in range(n)]
    points = []
    for a in values:
        for b in values:
            for g in values:
                f = a * b * b * g * g
                if abs(f - target) <= tol + 1e-12:
                    points.append((abs(f - target), (a, b, g)))
    if not points:
        raise SearchError(f"no grid point has alpha * beta^2 * gamma^2 within {tol} of "
                          f"{target}; use a larger tol or a finer step.")
    points.sort(key=lambda p: p[0])
    return [p for _, p in points]


class ScalingSpace:
    """Compound-scaling coefficients as a search space (architecture ``(alpha, beta,
    gamma)`` at phi = 1), for the ``grid`` strategy.

    ``build`` scales ``base`` (a registered model taking ``width_mult``/``depth_mult``,
    default ``efficientnet_b0``; fully convolutional) by width ``beta``, depth ``alpha`` and input
    side ``round(resolution * gamma)`` (``resolution`` default 224)."""

    name = "scaling"

    def __init__(self, base: str = "efficientnet_b0", resolution: int = 224,
                 step: float = 0.05, maximum: float = 2.0, tol: float = 0.1):
        self.base, self.resolution = base, int(resolution)
        self.points = scaling_grid(step, maximum, 2.0, tol)
        self._set = set(self.points)

    def encode(self, arch) -> str:
        a, b, g = arch
        return f"alpha={a:g},beta={b:g},gamma={g:g}"

    def decode(self, text: str):
        parts = dict(p.partition("=")[::2] for p in str(text).replace(" ", "").split(","))
        try:
            return tuple(float(parts[k]) for k in ("alpha", "beta", "gamma"))
        except (KeyError, ValueError):
            raise SearchError(f"a scaling architecture is written alpha=A,beta=B,gamma=G, "
                              f"not {text!r}.") from None

    def sample(self, rng: random.Random):
        return self.points[rng.randrange(len(self.points))]

    def mutate(self, arch, rng: random.Random):
        """One of the (up to) five grid points nearest to ``arch``."""
        others = sorted((p for p in self.points if p != tuple(arch)),
                        key=lambda p: sum(abs(x - y) for x, y in zip(p, arch)))
        if not others:
            raise SearchError("the scaling grid has a single point: nothing to mutate to.")
        return others[rng.randrange(min(5, len(others)))]

    def input_size(self, arch) -> tuple[int, int, int]:
        side = max(8, int(round(self.resolution * arch[2])))
        return (3, side, side)

    def build(self, arch, num_classes: int = 10, in_chans: int = 3):
        from ..models.registry import accepts, create_model
        a, b, _ = arch
        kw = {"img_size": self.input_size(arch)[1]} if accepts(self.base, "img_size") else {}
        return create_model(self.base, num_classes=num_classes, in_chans=in_chans,
                            width_mult=b, depth_mult=a, **kw)

    def size(self) -> int:
        return len(self.points)

    def enumerate(self):
        return iter(self.points)

    def decisions(self):
        return [("point", len(self.points))]

    def from_decisions(self, choices):
        return self.points[int(choices[0])]

    def to_decisions(self, arch):
        return [self.points.index(tuple(arch))]


class GridSearch(Strategy):
    """The compound-scaling grid, nearest to alpha * beta^2 * gamma^2 = 2 first."""

    name = "grid"

    def __init__(self, space, seed: int = 0, step: float = 0.05, max: float = 2.0,
                 tol: float = 0.1):
        super().__init__(space, seed)
        self.points = scaling_grid(step, max, 2.0, tol)
        self.size = len(self.points)

    def __len__(self) -> int:
        return self.size

    def ask(self):
        if self.asked >= self.size:
            raise SearchError(f"the grid has only {self.size} points; use a budget of at most "
                              f"{self.size}.")
        self.asked += 1
        return self.points[self.asked - 1]


_CLASSES = {"random": RandomSearch, "evolution": RegularizedEvolution,
            "reinforce": Reinforce, "ppo": PPOController, "grid": GridSearch}


def make_strategy(name: str, space, seed: int = 0, **options) -> Strategy:
    """A strategy by name (see :data:`STRATEGIES`) for ``space``, seeded."""
    import inspect
    cls = _CLASSES.get(name)
    if cls is None:
        raise SearchError(f"unknown strategy {name!r}; the strategies are "
                          f"{', '.join(STRATEGIES)}.")
    if name == "grid" and not isinstance(space, ScalingSpace):
        raise SearchError(f"the grid strategy searches compound-scaling coefficients: use the "
                          f"'scaling' space, not {getattr(space, 'name', space)!r}.")
    params = inspect.signature(cls.__init__).parameters
    allowed = [p for p in params if p not in ("self", "space", "seed")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise SearchError(f"strategy {name!r} has no option {unknown[0]!r}; its options are "
                          f"{', '.join(allowed) or 'none'}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SearchError(f"seed must be an integer, not {seed!r}.")
    return cls(space, seed, **options)


__all__ = ["STRATEGIES", "GridSearch", "PPOController", "RandomSearch", "RegularizedEvolution",
           "Reinforce", "ScalingSpace", "Strategy", "make_strategy", "scaling_grid"]
