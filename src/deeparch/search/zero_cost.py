"""Zero-cost proxies: scores of an untrained network from one minibatch (or none).

Higher is better for every score here (the sign is fixed so that a search maximises them
all). Each is computed on a copy of the network, which is left untouched.

``synflow``   (Tanaka et al. 2020, as Abdelfattah et al. 2021 use it for NAS): every weight
              replaced by its absolute value, batch norm removed (each BatchNorm becomes the
              identity, the zero-cost-NAS setting), an all-ones input of one sample, ``R =
              sum(f(1))``; the score is ``sum |theta * dR/dtheta|`` over all weights. Computed in
              **double precision**: in float32 the product over a deep net overflows to inf
              (or underflows to 0) and the ranking is lost.
``naswot``    (Mellor et al. 2021): each input of the batch gets a binary code, one bit per
              ReLU unit (pre-activation > 0); ``K[i, j]`` = the number of bits on which codes
              i and j agree; the score is ``log |det K|`` (``slogdet``: the determinant
              itself overflows). Batch-norm in training mode, as the authors ran it.
``snip``      (Lee et al. 2019): connection sensitivity ``sum |g * theta|``, ``g`` the gradient
              of the cross-entropy loss of the minibatch.
``grad_norm`` (Abdelfattah et al. 2021): the sum over layers of the Euclidean norm of that
              loss gradient.

"Weights" are those of every convolution and linear layer (``weight`` of ``nn.Conv*`` and
``nn.Linear``), as in the reference measurements. An untrained network's scores depend on
its initialisation: :func:`zero_cost_score` seeds it.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn

from ..errors import SearchError

ZERO_COST = ("synflow", "naswot", "snip", "grad_norm")


def _weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
            and getattr(m, "weight", None) is not None]


def _strip_bn(model: nn.Module) -> nn.Module:
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            _strip_bn(child)
    return model


def synflow(model: nn.Module, input_size: tuple[int, int, int]) -> float:
    """The synaptic-flow score ``sum |theta * dR/dtheta|`` (double precision, |weights|, no BN)."""
    net = _strip_bn(copy.deepcopy(model)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    out = net(torch.ones(1, *input_size, dtype=torch.float64))
    if isinstance(out, (tuple, list)):
        out = out[0]
    out.sum().backward()
    total = 0.0
    for m in _weighted(net):
        if m.weight.grad is not None:
            total += float((m.weight.detach() * m.weight.grad).abs().sum())
    return total


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """Mellor et al.'s ``log |det K_H|`` over the ReLU codes of a batch."""
    net = copy.deepcopy(model).train()
    n = images.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(module, inputs):
        x = inputs[0].detach().reshape(n, -1)
        c = (x > 0).double()
        # agreements = c c^T + (1 - c)(1 - c)^T  (= units - Hamming distance)
        kernel.add_(c @ c.t() + (1 - c) @ (1 - c).t())

    handles = [m.register_forward_pre_hook(hook) for m in net.modules()
               if isinstance(m, nn.ReLU)]
    if not handles:
        raise SearchError("naswot needs ReLU units; this network has no nn.ReLU module.")
    try:
        with torch.no_grad():
            net(images)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else -math.inf


def _loss_grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    net = copy.deepcopy(model).train()
    net.zero_grad(set_to_none=True)
    out = net(images)
    if isinstance(out, (tuple, list)):
        out = out[0]
    nn.functional.cross_entropy(out, labels).backward()
    return net


def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Connection sensitivity ``sum |g * theta|`` of the cross-entropy loss."""
    net = _loss_grads(model, images, labels)
    return float(sum(float((m.weight.grad * m.weight.detach()).abs().sum())
                     for m in _weighted(net) if m.weight.grad is not None))


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum over layers of ``||dL/dtheta||_2``."""
    net = _loss_grads(model, images, labels)
    return float(sum(float(m.weight.grad.norm()) for m in _weighted(net)
                     if m.weight.grad is not None))


def zero_cost_scores(kinds, build: Callable[[], nn.Module], input_size, images=None,
                     labels=None, seed: int = 0) -> dict[str, float]:
    """Several zero-cost scores of one freshly initialised network (snip and grad_norm
    share one backward pass): ``{kind: score}``."""
    kinds = list(kinds)
    for kind in kinds:
        if kind not in ZERO_COST:
            raise SearchError(f"unknown zero-cost score {kind!r}; they are "
                              f"{', '.join(ZERO_COST)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    out: dict[str, float] = {}
    if "synflow" in kinds:
        out["synflow"] = synflow(model, tuple(input_size))
    if any(k != "synflow" for k in kinds) and images is None:
        raise SearchError(f"{', '.join(k for k in kinds if k != 'synflow')} need a minibatch "
                          f"of images.")
    if "naswot" in kinds:
        out["naswot"] = naswot(model, images)
    if "snip" in kinds or "grad_norm" in kinds:
        if labels is None:
            raise SearchError("snip and grad_norm need the minibatch's labels.")
        net = _loss_grads(model, images, labels)
        layers = [m for m in _weighted(net) if m.weight.grad is not None]
        if "snip" in kinds:
            out["snip"] = float(sum(float((m.weight.grad * m.weight.detach()).abs().sum())
                                    for m in layers))
        if "grad_norm" in kinds:
            out["grad_norm"] = float(sum(float(m.weight.grad.norm()) for m in layers))
    return {k: out[k] for k in kinds}


def zero_cost_score(kind: str, build: Callable[[], nn.Module], input_size, images=None,
                    labels=None, seed: int = 0) -> float:
    """One zero-cost score of a freshly initialised network.

    ``build()`` makes the network (initialised under ``torch.manual_seed(seed)``);
    ``images`` (float, normalised, N x C x H x W) and ``labels`` are the minibatch that
    naswot, snip and grad_norm need (synflow needs none)."""
    if kind not in ZERO_COST:
        raise SearchError(f"unknown zero-cost score {kind!r}; they are {', '.join(ZERO_COST)}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if kind == "synflow":
        return synflow(model, tuple(input_size))
    if images is None:
        raise SearchError(f"{kind} needs a minibatch of images.")
    if kind == "naswot":
        return naswot(model, images)
    if labels is None:
        raise SearchError(f"{kind} needs the minibatch's labels.")
    return snip(model, images, labels) if kind == "snip" else grad_norm(model, images, labels)


__all__ = ["ZERO_COST", "grad_norm", "naswot", "snip", "synflow", "zero_cost_score",
           "zero_cost_scores"]
