"""The two slow members of the zoo for structured pruning: AlexNet (57M parameters, most of
them in its fully connected layers) and NASNet-A (1,500 modules: torch-pruning's graph of it
takes seconds). test_prune.py covers every other family."""
import importlib

import pytest
import torch

pytest.importorskip("torch_pruning", reason="the edge extra (torch-pruning) is not installed")

import deeparch  # noqa: E402

P = importlib.import_module("deeparch.edge.pruning")


@pytest.mark.parametrize("name,opts,size", [
    ("alexnet_tv", {}, (3, 63, 63)),
    ("nasnet_a_cifar", {"num_cells": 1, "penultimate_filters": 48}, (3, 32, 32)),
], ids=["alexnet_tv", "nasnet_a_cifar"])
def test_slow_families_prune_and_run(name, opts, size):
    torch.manual_seed(0)
    model = deeparch.create_model(name, num_classes=10, in_chans=size[0], **opts)
    n_before = sum(p.numel() for p in model.parameters())
    first = next(model.parameters()).detach().clone()
    x = torch.randn(2, *size)
    r = P.prune(model, x[:1], 0.3, by="channels")
    with torch.no_grad():
        y = r.model.eval()(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert sum(p.numel() for p in model.parameters()) == n_before
    assert torch.equal(next(model.parameters()), first)
    assert r.params_after == sum(p.numel() for p in r.model.parameters()) < r.params_before
    assert r.macs_after < r.macs_before and 0.3 < r.param_ratio < 0.7
