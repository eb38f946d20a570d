"""A tiny stand-in search space for the strategy/objective/run tests (not a real space):
six edges, five operations each, NAS-Bench-201's op names; built as a small residual chain."""
from __future__ import annotations

import itertools
import random

import torch
from torch import nn

from deeparch.errors import SearchError

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


class _Zero(nn.Module):
    def forward(self, x):
        return x * 0.0


def _op(name: str, c: int) -> nn.Module:
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1)
    k = 1 if name.endswith("1x1") else 3
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c))


class _Net(nn.Module):
    def __init__(self, arch, num_classes, in_chans, c=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))
        self.ops = nn.ModuleList(_op(OPS[i], c) for i in arch)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(c, num_classes))

    def forward(self, x):
        x = self.stem(x)
        for op in self.ops:
            x = x + op(x)
        return self.head(x)


class ToySpace:
    name = "toy"
    EDGES = 6

    def sample(self, rng: random.Random):
        return tuple(rng.randrange(len(OPS)) for _ in range(self.EDGES))

    def mutate(self, arch, rng: random.Random):
        a = list(arch)
        i = rng.randrange(self.EDGES)
        a[i] = rng.choice([k for k in range(len(OPS)) if k != a[i]])
        return tuple(a)

    def encode(self, arch) -> str:
        return "|".join(OPS[i] for i in arch)

    def decode(self, text: str):
        parts = text.split("|")
        pos = 0
        out = []
        for p in parts:
            if p not in OPS:
                raise SearchError(f"unknown operation {p!r}\n  {text}\n  {' ' * pos}"
                                  f"{'^' * max(1, len(p))}")
            out.append(OPS.index(p))
            pos += len(p) + 1
        if len(out) != self.EDGES:
            raise SearchError(f"a toy cell has {self.EDGES} edges, not {len(out)}.")
        return tuple(out)

    def build(self, arch, num_classes=10, in_chans=3):
        return _Net(arch, num_classes, in_chans)

    def input_size(self, arch):
        return (3, 8, 8)

    def decisions(self):
        return [(f"edge{i}", len(OPS)) for i in range(self.EDGES)]

    def from_decisions(self, choices):
        return tuple(int(c) for c in choices)

    def to_decisions(self, arch):
        return list(arch)

    def size(self):
        return len(OPS) ** self.EDGES

    def enumerate(self):
        return itertools.product(range(len(OPS)), repeat=self.EDGES)


# a made-up smooth score with a single optimum: conv3x3 on every edge
VALUE = (0.0, 1.0, 2.0, 3.0, 1.5)


def toy_score(space, arch) -> float:
    return 80.0 + sum(VALUE[i] for i in arch) + 0.01 * arch[0]


def toy_optimum() -> float:
    return toy_score(None, (3,) * 6)


def random_batch(n=8, c=3, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, hw, hw, generator=g), torch.randint(0, 10, (n,), generator=g)
