"""Objectives: the table, the proxy, zero-cost scores, costs, constraints and the reward."""
import copy
import math

import pytest
import torch
from torch import nn

from deeparch.errors import SearchError
from deeparch.search.objectives import (OBJECTIVES, Constraints, ProxyObjective, Reward,
                                        TableObjective, ZeroCostObjective, arch_cost,
                                        make_objective)
from deeparch.search.zero_cost import (grad_norm, naswot, snip, synflow, zero_cost_score,
                                       zero_cost_scores)
from searchhelp import ToySpace, random_batch

ALL_CONV3 = (3,) * 6
ALL_NONE = (0,) * 6


@pytest.fixture(scope="module")
def nb201():
    from deeparch.search.spaces import space
    return space("nb201")


@pytest.fixture(scope="module")
def small201():
    from deeparch.search.spaces import space
    return space("nb201", channels=4, cells=1)


def test_unknown_objective_lists_them():
    with pytest.raises(SearchError) as e:
        make_objective("accuracy")
    assert all(o in str(e.value) for o in OBJECTIVES)
    with pytest.raises(SearchError, match="no option 'bogus'"):
        make_objective("synflow", bogus=1)
    with pytest.raises(SearchError, match="takes no options"):
        make_objective("params", x=1)


def test_table_objective_on_a_synthetic_table(nb201):
    from deeparch.search.table import Table
    t = Table.synthetic(nb201, seed=3)
    obj = make_objective("table", table=t)
    arch, best = t.best()
    assert obj(nb201, arch) == best
    assert not obj.proxy


def test_table_objective_on_the_real_table(nb201):
    import importlib.util
    if importlib.util.find_spec("analognasbench") is None:    # (importing it needs pandas)
        pytest.skip("the NAS-Bench-201 table needs pip install 'deeparch[search]'")
    obj = make_objective("table")
    assert isinstance(obj, TableObjective)
    assert obj(nb201, obj.table.best()[0]) == pytest.approx(94.0664, abs=1e-3)
    assert 9.0 <= obj(nb201, ALL_NONE) <= 11.0          # a cell cut off: chance accuracy


def test_missing_table_package_names_the_extra(monkeypatch, nb201):
    import importlib.util

    from deeparch.errors import MissingDependencyError
    from deeparch.search import table as table_mod
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "analognasbench" else real(name, *a))
    table_mod._CACHE.clear()
    with pytest.raises(MissingDependencyError, match=r"deeparch\[search\]"):
        make_objective("table")


def test_costs_reproduce_the_published_range(nb201):
    lo, hi = arch_cost(nb201, ALL_NONE), arch_cost(nb201, ALL_CONV3)
    assert round(lo["params"] / 1e6, 3) == 0.073 and round(lo["macs"] / 1e6, 2) == 7.78
    assert round(hi["params"] / 1e6, 3) == 1.532 and round(hi["macs"] / 1e6, 2) == 220.12
    assert make_objective("params")(nb201, ALL_CONV3) == hi["params"]
    assert make_objective("macs")(nb201, ALL_NONE) == lo["macs"]


def test_reward_is_mnasnet_formula(nb201):
    acc = make_objective(lambda s, a: 90.0)
    r = Reward(acc, target=50e6)
    macs = arch_cost(nb201, ALL_CONV3)["macs"]
    assert r(nb201, ALL_CONV3) == pytest.approx(90.0 * (macs / 50e6) ** -0.07)
    assert r(nb201, ALL_CONV3) < 90.0 < r(nb201, ALL_NONE)    # over target costs, under gains
    r2 = make_objective(lambda s, a: 90.0, reward_target=220.12e6)
    assert r2(nb201, ALL_CONV3) == pytest.approx(90.0, rel=1e-4)
    with pytest.raises(SearchError, match="target"):
        Reward(acc, target=0)
    with pytest.raises(SearchError, match="cost"):
        Reward(acc, target=1, cost="energy")


def test_constraints(nb201):
    with pytest.raises(SearchError, match="max_macs"):
        Constraints(max_macs=-5)
    with pytest.raises(SearchError, match="unknown constraint 'max_flops'"):
        Constraints.from_kwargs({"max_flops": 1})
    c = Constraints(max_macs=50e6)
    assert c.violation(arch_cost(nb201, ALL_NONE)) is None
    assert c.violation(arch_cost(nb201, ALL_CONV3)).startswith("macs")
    tight = Constraints(max_macs=1e6)
    with pytest.raises(SearchError) as e:
        tight.check_feasible(nb201, [ALL_NONE, ALL_CONV3])
    assert "the cheapest had 7.783 M mult-adds" in str(e.value)
    assert "raise the cap" in str(e.value) and "\n" not in str(e.value)


def test_latency_is_measured():
    space = ToySpace()
    cost = arch_cost(space, (3, 3, 3, 3, 3, 3), latency=True)
    assert cost["latency_ms"] > 0
    with pytest.raises(SearchError):
        Constraints(max_latency_ms=0)


# --------------------------------------------------------------------------- zero-cost

def test_synflow_is_double_precision_and_leaves_the_model_alone(small201):
    torch.manual_seed(0)
    net = small201.build(ALL_CONV3)
    before = copy.deepcopy(net.state_dict())
    s = synflow(net, (3, 32, 32))
    assert math.isfinite(s) and s > 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])                     # |weights| taken on a copy
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_synflow_does_not_overflow_on_a_deep_net():
    # 60 layers of 3x3 convs, all weights 0.6: each layer multiplies by 8 * 9 * 0.6 = 43,
    # 43**60 ~ 1e98 -- far beyond float32 (3.4e38): a float32 synflow would be inf
    layers = []
    for _ in range(60):
        conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        nn.init.constant_(conv.weight, 0.6)
        layers += [conv, nn.BatchNorm2d(8), nn.ReLU()]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    plain = nn.Sequential(*[m for m in net if not isinstance(m, nn.BatchNorm2d)])
    with torch.no_grad():
        f32 = plain(torch.ones(1, 8, 8, 8)).sum()
    assert not math.isfinite(float(f32))                     # what float32 gives: inf or nan
    s = synflow(net, (8, 8, 8))
    assert math.isfinite(s) and s > 1e80


def test_synflow_ranks_a_cut_off_cell_last(small201):
    def score(arch):
        return zero_cost_score("synflow", lambda: small201.build(arch), (3, 32, 32))
    assert score(ALL_NONE) == 0.0                             # no path: no synaptic flow
    assert score(ALL_CONV3) > score((2,) * 6) > 0             # 3x3 > 1x1


def test_naswot_uses_slogdet_and_sees_duplicates(small201):
    torch.manual_seed(0)
    net = small201.build(ALL_CONV3)
    x, _ = random_batch(8, 3, 32)
    s = naswot(net, x)
    assert math.isfinite(s) and s > 0
    dup = torch.cat([x[:4], x[:4]])                           # identical codes: K singular
    assert naswot(net, dup) == -math.inf or naswot(net, dup) < s - 5
    with pytest.raises(SearchError, match="ReLU"):
        naswot(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), x)


def test_naswot_codes_count_agreements():
    # one ReLU unit per input; codes 1,0 and 1,1: K = [[1,0],[0,1]] + [[0,1],[1,0]]... by hand
    class One(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x).sum(1, keepdim=True)
    x = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    # codes (1,0) and (1,1): agreements K = [[2,1],[1,2]]: det 3
    assert naswot(One(), x) == pytest.approx(math.log(3))


def test_snip_and_grad_norm(small201):
    x, y = random_batch(8, 3, 32)
    torch.manual_seed(0)
    net = small201.build(ALL_CONV3)
    a, b = snip(net, x, y), grad_norm(net, x, y)
    assert a > 0 and b > 0
    both = zero_cost_scores(("snip", "grad_norm"), lambda: small201.build(ALL_CONV3),
                            (3, 32, 32), x, y, seed=0)
    assert both["snip"] == pytest.approx(a) and both["grad_norm"] == pytest.approx(b)
    with pytest.raises(SearchError, match="minibatch"):
        zero_cost_score("snip", lambda: small201.build(ALL_CONV3), (3, 32, 32))
    with pytest.raises(SearchError, match="unknown zero-cost"):
        zero_cost_score("jacov", lambda: small201.build(ALL_CONV3), (3, 32, 32))


def test_zero_cost_objectives_are_seeded_and_use_real_images(small201):
    for kind in ("synflow", "naswot", "snip", "grad_norm"):
        obj = make_objective(kind, batch=8)
        assert isinstance(obj, ZeroCostObjective) and obj.proxy
        v1, v2 = obj(small201, ALL_CONV3), obj(small201, ALL_CONV3)
        assert v1 == v2 and math.isfinite(v1)
    obj = make_objective("naswot", batch=8)
    x, y = obj.minibatch((3, 32, 32))
    assert x.shape == (8, 3, 32, 32) and abs(float(x.mean())) < 1e-4   # normalised digits
    noise = make_objective("naswot", batch=8, data=None)
    assert noise(small201, ALL_CONV3) != obj(small201, ALL_CONV3)
    with pytest.raises(SearchError, match="batch"):
        make_objective("naswot", batch=1)


# --------------------------------------------------------------------------- proxy

def test_proxy_trains_with_the_trainer():
    obj = make_objective("proxy", data="digits", epochs=1, subset=200)
    assert isinstance(obj, ProxyObjective) and obj.proxy and "proxy" in obj.describe()
    space = ToySpace()
    good = obj(space, (3, 3, 3, 3, 3, 3))
    assert 0.0 <= good <= 100.0
    assert obj.last["epochs"] == 1
    assert obj(space, (3, 3, 3, 3, 3, 3)) == good             # seeded: the same again
    assert good == obj.last["val_accuracy"]
    with pytest.raises(SearchError, match="epochs"):
        make_objective("proxy", epochs=0)


def test_proxy_can_score_by_validation_loss():
    acc = make_objective("proxy", data="digits", epochs=2, subset=200)
    loss = make_objective("proxy", data="digits", epochs=2, subset=200, metric="loss")
    space = ToySpace()
    a = acc(space, (3, 3, 3, 3, 3, 3))
    score = loss(space, (3, 3, 3, 3, 3, 3))
    assert loss.last["val_accuracy"] == a                    # the same training
    assert score == -loss.last["val_loss"] < 0                # higher is better: minus a loss
    assert "validation loss" in loss.describe()
    with pytest.raises(SearchError, match="metric is one of accuracy, loss, not 'top5'"):
        make_objective("proxy", metric="top5")
