"""Structured pruning on every zoo family, unstructured magnitude pruning, the save/load of
pruned models without pickles, and the bad inputs."""
import copy
import importlib
import json
import sys

import pytest
import torch
from torch import nn

pytest.importorskip("torch_pruning", reason="the edge extra (torch-pruning) is not installed")

import deeparch  # noqa: E402
from deeparch.errors import EdgeError, MissingDependencyError, WeightsError  # noqa: E402

P = importlib.import_module("deeparch.edge.pruning")
prune, magnitude_prune, sparsity = P.prune, P.magnitude_prune, P.sparsity
save_pruned, load_pruned = P.save_pruned, P.load_pruned

# one small member of every family: (name, options, input size, by); AlexNet and NASNet,
# the slow ones, are in test_prune_zoo.py
FAMILIES = [
    ("lenet5", {}, (1, 32, 32), "params"),
    ("vgg11_cifar", {"batch_norm": True, "hidden": 64}, (3, 32, 32), "params"),
    ("fashion_cnn", {}, (1, 28, 28), "params"),
    ("resnet20", {}, (3, 32, 32), "params"),                 # option-A zero-padding shortcuts
    ("resnet18", {}, (3, 32, 32), "channels"),
    ("preact_resnet18", {}, (3, 32, 32), "channels"),
    ("resnext50_32x4d", {"cardinality": 4, "base_width": 4}, (3, 32, 32), "channels"),
    ("wrn16_8", {"depth": 10, "widen_factor": 1}, (3, 32, 32), "params"),
    ("se_resnet18", {}, (3, 32, 32), "channels"),            # squeeze-excite
    ("mobilenet_v1", {"alpha": 0.25}, (3, 32, 32), "params"),
    ("mobilenet_v2", {"width_mult": 0.25}, (3, 32, 32), "params"),
    ("xception", {"middle_blocks": 0}, (3, 71, 71), "channels"),
    ("efficientnet_b0", {"width_mult": 0.25, "depth_mult": 0.25}, (3, 32, 32), "params"),
    ("shufflenet_v1", {"width_mult": 0.5, "groups": 1}, (3, 32, 32), "params"),
    ("shufflenet_v2_x0_5", {}, (3, 32, 32), "params"),       # channel split + shuffle
    ("googlenet_tv", {}, (3, 31, 31), "channels"),
    ("densenet40_k12", {"depth": 10}, (3, 32, 32), "params"),
    ("squeezenet1_1", {}, (3, 25, 25), "params"),
    ("dpn68", {"depths": (1, 1, 1, 1)}, (3, 32, 32), "params"),
    ("fractalnet20", {"columns": 2, "blocks": 2}, (3, 32, 32), "params"),
]


def _build(name, opts, size, seed=0):
    torch.manual_seed(seed)
    return deeparch.create_model(name, num_classes=10, in_chans=size[0], **opts)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name,opts,size,by", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_prunes_and_runs(name, opts, size, by):
    model = _build(name, opts, size)
    before, n_before = _state(model), _count(model)
    x = torch.randn(2, *size)
    with torch.no_grad():
        y0 = model.eval()(x)
    ratio = 0.5 if by == "params" else 0.3
    r = prune(model, x[:1], ratio, by=by)
    with torch.no_grad():
        y = r.model.eval()(x)
    assert y.shape == y0.shape == (2, 10)
    assert torch.isfinite(y).all()
    # the original is untouched
    assert _count(model) == n_before
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # really smaller: counts from the inspector, equal to the tensors' sizes
    assert r.params_before == n_before
    assert r.params_after == _count(r.model) == deeparch.summary(r.model, size).total_params
    assert r.params_after < r.params_before and r.macs_after < r.macs_before
    if by == "params":
        assert abs(r.param_ratio - 0.5) <= P.PARAM_TOL + 1e-9
    else:
        assert r.channel_ratio == 0.3 and r.param_ratio > 0.2
    d = r.to_dict()
    json.dumps(d)
    assert d["params_after"] == r.params_after and d["by"] == by and "model" not in d


def test_shufflenet_v1_with_groups_is_refused_with_the_reason():
    model = _build("shufflenet_v1", {"width_mult": 0.25}, (3, 32, 32))
    with pytest.raises(EdgeError, match="shuffle.*grouped convolutions"):
        prune(model, torch.randn(1, 3, 32, 32), 0.5)


def test_special_families_say_what_they_kept():
    r = prune(_build("resnet20", {}, (3, 32, 32)), torch.randn(1, 3, 32, 32), 0.5)
    assert any("zero-padding" in n for n in r.notes)
    # the residual streams keep their width, the inner width is pruned
    convs = [m for m in r.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 16
    assert any(c.out_channels < c.in_channels for c in convs[1:])
    r = prune(_build("shufflenet_v2_x0_5", {}, (3, 32, 32)), torch.randn(1, 3, 32, 32), 0.3,
              by="channels")
    assert any("shuffle" in n for n in r.notes)
    assert type(r.model.features.stage2.unit1.shuffle).__name__ == "ChannelShuffle"


def test_classifier_and_ignored_layers_keep_their_outputs():
    model = _build("lenet5", {}, (1, 32, 32))
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    first = names[0]
    r = prune(model, torch.randn(1, 1, 32, 32), 0.4, by="channels", ignored=[first])
    mods = dict(r.model.named_modules())
    assert mods[first].out_channels == dict(model.named_modules())[first].out_channels
    assert mods[names[-1]].out_features == 10 and r.classifier == names[-1]
    # a module object works too
    r2 = prune(model, torch.randn(1, 1, 32, 32), 0.4, by="channels",
               ignored=dict(model.named_modules())[first])
    assert dict(r2.model.named_modules())[first].out_channels == mods[first].out_channels
    with pytest.raises(EdgeError, match="not a module"):
        prune(model, torch.randn(1, 1, 32, 32), 0.4, ignored=["nope"])
    with pytest.raises(EdgeError, match="not part of"):
        prune(model, torch.randn(1, 1, 32, 32), 0.4, ignored=[nn.Linear(2, 2)])


def test_square_classifier_conv_of_squeezenet_is_kept():
    r = prune(_build("squeezenet1_1", {}, (3, 25, 25)), torch.randn(1, 3, 25, 25), 0.3,
              by="channels")
    last = [m for m in r.model.modules() if isinstance(m, nn.Conv2d)][-1]
    assert last.out_channels == 10


def _toy():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        # channels 0-3: large BN gamma, tiny weights; 4-7: tiny gamma, large weights
        m[0].weight[:4] *= 0.01
        m[0].weight[4:] *= 100.0
        m[1].weight[:4] = 5.0
        m[1].weight[4:] = 0.01
    return m


def _kept(orig, pruned):
    """Which output channels of the first conv survived (matched by their weights)."""
    w0, w1 = orig[0].weight.detach(), pruned[0].weight.detach()
    return sorted(int(((w0 - w).flatten(1).abs().sum(1) == 0).nonzero()[0]) for w in w1)


def test_importances_choose_different_channels():
    m = _toy()
    x = torch.randn(1, 3, 8, 8)
    kept_bn = _kept(m, prune(m, x, 0.5, importance="bn", by="channels",
                             ignored=[m[3]]).model)
    kept_l1 = _kept(m, prune(m, x, 0.5, importance="l1", by="channels",
                             ignored=[m[3]]).model)
    kept_l2 = _kept(m, prune(m, x, 0.5, importance="l2", by="channels",
                             ignored=[m[3]]).model)
    assert kept_bn == [0, 1, 2, 3]            # Network Slimming keeps the large gammas
    assert kept_l1 == kept_l2 == [4, 5, 6, 7]  # magnitude keeps the large weights
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(2)]
    r = prune(m, x, 0.5, importance="taylor", by="channels", data=data, ignored=[m[3]])
    assert r.model[0].out_channels == 4 and r.importance == "taylor"
    assert all(p.grad is None for p in r.model.parameters())   # no stray gradients
    assert all(p.grad is None for p in m.parameters())


def test_taylor_and_bn_need_what_they_score_by():
    m = _toy()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(EdgeError, match="needs data"):
        prune(m, x, 0.5, importance="taylor")
    with pytest.raises(EdgeError, match="no batches"):
        prune(m, x, 0.5, importance="taylor", data=[])
    with pytest.raises(EdgeError, match=r"\(x, y\)"):
        prune(m, x, 0.5, importance="taylor", data=[1, 2])
    with pytest.raises(EdgeError, match="do not fit"):
        prune(m, x, 0.5, importance="taylor", data=[(torch.randn(2, 5, 8, 8),
                                                     torch.zeros(2, dtype=torch.long))])
    no_bn = _build("lenet5", {}, (1, 32, 32))
    with pytest.raises(EdgeError, match="no BatchNorm"):
        prune(no_bn, torch.randn(1, 1, 32, 32), 0.5, importance="bn")


def test_iterative_steps_reach_the_same_size():
    model = _build("resnet20", {}, (3, 32, 32))
    x = torch.randn(1, 3, 32, 32)
    one = prune(model, x, 0.4, by="channels")
    three = prune(model, x, 0.4, by="channels", iterative_steps=3)
    assert three.steps == 3 and one.steps == 1
    assert three.params_after == one.params_after
    data = [(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))]
    t = prune(model, x, 0.5, importance="taylor", iterative_steps=2, data=data)
    assert abs(t.param_ratio - 0.5) <= P.PARAM_TOL + 1e-9


def test_round_to_keeps_multiples():
    m = _build("vgg11_cifar", {"batch_norm": True, "hidden": 64}, (3, 32, 32))
    r = prune(m, torch.randn(1, 3, 32, 32), 0.3, by="channels", round_to=8)
    convs = [c for c in r.model.modules() if isinstance(c, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)


def test_macs_agree_with_torch_pruning_where_both_count():
    import torch_pruning as tp
    model = _build("resnet20", {}, (3, 32, 32))   # plain nn.Conv2d / nn.Linear layers
    x = torch.randn(1, 3, 32, 32)
    r = prune(model, x, 0.5)
    for net in (model, r.model):
        s = deeparch.summary(net, (3, 32, 32))
        ours = sum(layer.macs for layer in s.layers if layer.type in ("Conv2d", "Linear"))
        _, _, layer_macs, _ = tp.utils.count_ops_and_params(net.eval(), x, layer_wise=True)
        theirs = sum(v for k, v in layer_macs.items() if type(k) in (nn.Conv2d, nn.Linear))
        # torch-pruning also counts the classifier's bias additions (one per output)
        theirs -= sum(k.out_features for k in layer_macs if type(k) is nn.Linear
                      and k.bias is not None)
        assert ours == theirs
        assert s.total_params == _count(net)


@pytest.mark.parametrize("ratio", [0, 1, -0.1, 1.5, True, False, float("nan"), "0.5", None])
def test_bad_ratio(ratio):
    with pytest.raises(EdgeError, match="between 0 and 1"):
        prune(_toy(), torch.randn(1, 3, 8, 8), ratio)


def test_bad_arguments():
    m, x = _toy(), torch.randn(1, 3, 8, 8)
    with pytest.raises(EdgeError, match="l1, l2, taylor, bn"):
        prune(m, x, 0.5, importance="random")
    with pytest.raises(EdgeError, match="'params'"):
        prune(m, x, 0.5, by="flops")
    for steps in (0, -1, 1.5, True, 1000):
        with pytest.raises(EdgeError, match="iterative_steps"):
            prune(m, x, 0.5, iterative_steps=steps)
    with pytest.raises(EdgeError, match="round_to"):
        prune(m, x, 0.5, round_to=0)
    with pytest.raises(EdgeError, match="does not fit"):
        prune(m, torch.randn(1, 1, 8, 8), 0.5)              # wrong channels
    with pytest.raises(EdgeError, match="does not fit"):
        prune(m, torch.randn(3, 8, 8), 0.5)                 # no batch dimension
    with pytest.raises(EdgeError, match="floating-point"):
        prune(m, torch.ones(1, 3, 8, 8, dtype=torch.long), 0.5)
    with pytest.raises(EdgeError, match="tensor"):
        prune(m, "3,8,8", 0.5)
    with pytest.raises(EdgeError, match="nn.Module"):
        prune(lambda t: t, x, 0.5)
    r = prune(m, (3, 8, 8), 0.5, by="channels")             # an input size is fine
    assert r.input_size == (3, 8, 8)


class _TwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x), x


class _FixedView(nn.Module):
    """Reshapes with a channel count kept as a number, which pruning cannot see."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.reshape(y.shape[0], 8, -1).mean(2))


class _NoGrad(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.fc(torch.from_numpy(y.detach().numpy()))


def test_models_that_cannot_be_pruned_say_why():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(EdgeError, match="one output"):
        prune(_TwoOut(), x, 0.5)
    with pytest.raises(EdgeError, match="no Conv or Linear"):
        prune(nn.Sequential(nn.ReLU()), x, 0.5)
    with pytest.raises(EdgeError, match=r"no longer runs: fc \(Linear\) failed"):
        prune(_FixedView(), x, 0.5, by="channels")
    with pytest.raises(EdgeError, match="numpy") as err:     # the graph is cut by numpy
        prune(_NoGrad(), x, 0.5, by="channels")
    assert "\n" not in str(err.value)


def test_unreachable_parameter_target_is_an_error():
    # nearly all parameters sit in the classifier, which is never pruned
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 30 * 30, 1000))
    with pytest.raises(EdgeError, match="closest reachable"):
        prune(m, torch.randn(1, 1, 32, 32), 0.9)


def test_missing_torch_pruning_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)
    with pytest.raises(MissingDependencyError, match=r"deeparch\[edge\]"):
        prune(_toy(), torch.randn(1, 3, 8, 8), 0.5)


# ------------------------------------------------------------------ magnitude pruning
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_prune_is_exact_and_permanent(scope):
    model = _build("lenet5", {}, (1, 32, 32))
    before = _state(model)
    out = magnitude_prune(model, 0.6, scope=scope)
    s = sparsity(out)
    n = sum(m.weight.numel() for m in out.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert s["total"] == n and s["zeros"] >= round(0.6 * n)
    if scope == "layer":
        for name, frac in s["layers"].items():
            w = dict(out.named_modules())[name].weight
            assert frac == pytest.approx(round(0.6 * w.numel()) / w.numel(), abs=1e-12)
    else:
        assert s["zeros"] == round(0.6 * n)     # random weights: no exact zeros before
        # the smallest magnitudes anywhere went, the larger ones stayed
        kept = torch.cat([m.weight.flatten().abs() for m in out.modules()
                          if isinstance(m, (nn.Conv2d, nn.Linear))])
        orig = torch.cat([before[k].flatten().abs() for k in before if k.endswith("weight")
                          and before[k].dim() > 1])
        assert kept[kept > 0].min() >= orig.sort().values[round(0.6 * n) - 1]
    # no masks, no hooks, no weight_orig: the same parameters as before
    assert [k for k, _ in out.named_parameters()] == [k for k, _ in model.named_parameters()]
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in out.modules())
    assert all(not hasattr(m, "weight_mask") for m in out.modules())
    # biases untouched, the input model untouched
    for k, v in out.state_dict().items():
        if k.endswith("bias"):
            assert torch.equal(v, before[k])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert sparsity(model)["overall"] == 0.0
    with torch.no_grad():
        assert out(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_magnitude_prune_bad_inputs():
    m = _toy()
    for amount in (0, 1, 2, -0.5, True, float("nan")):
        with pytest.raises(EdgeError, match="between 0 and 1"):
            magnitude_prune(m, amount)
    with pytest.raises(EdgeError, match="scope"):
        magnitude_prune(m, 0.5, scope="net")
    with pytest.raises(EdgeError, match="no Conv or Linear"):
        magnitude_prune(nn.Sequential(nn.ReLU()), 0.5)
    masked = copy.deepcopy(m)
    torch.nn.utils.prune.l1_unstructured(masked[0], "weight", 0.5)
    with pytest.raises(EdgeError, match="masks"):
        magnitude_prune(masked, 0.5)


def test_sparsity_counts():
    m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[0].weight[0] = 0.0
        m[1].weight.zero_()
    s = sparsity(m)
    assert s["layers"] == {"0": 0.25, "1": 1.0}
    assert s["overall"] == pytest.approx(12 / 24) and s["zeros"] == 12 and s["total"] == 24


# ------------------------------------------------------------------- save and load
SAVED = [("resnet20", {}, (3, 32, 32)), ("mobilenet_v2", {"width_mult": 0.25}, (3, 32, 32)),
         ("shufflenet_v2_x0_5", {}, (3, 32, 32)), ("densenet40_k12", {"depth": 10}, (3, 32, 32)),
         ("dpn68", {"depths": (1, 1, 1, 1)}, (3, 32, 32)),
         ("efficientnet_b0", {"width_mult": 0.25, "depth_mult": 0.25}, (3, 32, 32))]


@pytest.mark.parametrize("name,opts,size", SAVED, ids=[s[0] for s in SAVED])
def test_save_load_round_trip(tmp_path, name, opts, size):
    r = prune(_build(name, opts, size), torch.randn(1, *size), 0.5)
    base = {"model": name, "options": opts, "num_classes": 10, "in_chans": size[0],
            "input_size": list(size)}
    path = save_pruned(r.model, tmp_path / "p.safetensors", base)
    model, got = load_pruned(path)
    assert json.loads(json.dumps(base)) == got
    x = torch.randn(2, *size)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), r.model.eval()(x))
    assert _count(model) == r.params_after
    # the file is plain safetensors: tensors and string metadata, no pickle
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "deeparch.pruned" and json.loads(meta["changes"])
    assert b"\x80\x04" not in path.read_bytes()[:64]


def test_save_load_a_pattern(tmp_path):
    spec = "INPUT(8x8x1) -> CONV3-16 -> BN -> RELU -> CONV3-32 -> BN -> RELU -> POOL2 -> FC-10"
    net = deeparch.from_pattern(spec)
    r = prune(net, torch.randn(1, 1, 8, 8), 0.5)
    for base in ({"pattern": spec, "input_size": [1, 8, 8]},
                 {"model": spec, "num_classes": 10, "input_size": [1, 8, 8], "run": "r"}):
        model, _ = load_pruned(save_pruned(r.model, tmp_path / "p.safetensors", base))
        x = torch.randn(3, 1, 8, 8)
        with torch.no_grad():
            assert torch.equal(model(x), r.model.eval()(x))


def test_save_is_deterministic(tmp_path):
    r = prune(_build("resnet20", {}, (3, 32, 32)), torch.randn(1, 3, 32, 32), 0.5)
    base = {"model": "resnet20", "num_classes": 10}
    a = save_pruned(r.model, tmp_path / "a.safetensors", base).read_bytes()
    b = save_pruned(r.model, tmp_path / "b.safetensors", base).read_bytes()
    assert a == b


def test_save_refuses_a_base_that_is_not_the_pruned_network(tmp_path):
    r = prune(_build("resnet20", {}, (3, 32, 32)), torch.randn(1, 3, 32, 32), 0.5)
    with pytest.raises(EdgeError, match="base"):
        save_pruned(r.model, tmp_path / "x.safetensors", {"model": "lenet5"})
    with pytest.raises(EdgeError, match="base must"):
        save_pruned(r.model, tmp_path / "x.safetensors", "resnet20")
    with pytest.raises(EdgeError, match="base must"):
        save_pruned(r.model, tmp_path / "x.safetensors", {"name": "resnet20"})
    with pytest.raises(deeparch.DeeparchError):
        save_pruned(r.model, tmp_path / "x.safetensors", {"model": "no_such_net"})
    assert not list(tmp_path.iterdir())       # nothing was written


def test_load_refuses_damaged_and_foreign_files(tmp_path):
    r = prune(_build("resnet20", {}, (3, 32, 32)), torch.randn(1, 3, 32, 32), 0.5)
    good = save_pruned(r.model, tmp_path / "p.safetensors", {"model": "resnet20",
                                                              "num_classes": 10})
    data = good.read_bytes()
    with pytest.raises(WeightsError, match="no pruned model"):
        load_pruned(tmp_path / "missing.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="damaged or truncated"):
        load_pruned(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable"):
        load_pruned(tmp_path / "junk.safetensors")
    from deeparch.train.checkpoint import save_weights, serialize
    save_weights(tmp_path / "plain.safetensors", _build("resnet20", {}, (3, 32, 32)))
    with pytest.raises(WeightsError, match="not a pruned deeparch model"):
        load_pruned(tmp_path / "plain.safetensors")
    from safetensors import safe_open
    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    def variant(name, meta2, tensors2):
        p = tmp_path / name
        p.write_bytes(serialize(tensors2, meta2))
        return p

    with pytest.raises(WeightsError, match="damaged"):
        load_pruned(variant("c.safetensors", {**meta, "changes": "{not json"}, tensors))
    with pytest.raises(WeightsError, match="version"):
        load_pruned(variant("v.safetensors", {**meta, "version": "99"}, tensors))
    changes = json.loads(meta["changes"])
    changes["no.such.module"] = {"out_channels": 3}
    with pytest.raises(WeightsError, match="does not have"):
        load_pruned(variant("m.safetensors", {**meta, "changes": json.dumps(changes)}, tensors))
    fewer = dict(tensors)
    fewer.pop(sorted(fewer)[0])
    with pytest.raises(WeightsError, match="do not fit"):
        load_pruned(variant("t.safetensors", meta, fewer))
    wrong = dict(tensors)
    k = next(k for k in sorted(wrong) if k.endswith("conv1.weight"))
    wrong[k] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(WeightsError, match="do not fit"):
        load_pruned(variant("w.safetensors", meta, wrong))
    shapes = json.loads(meta["shapes"])
    assert shapes and all(isinstance(v, list) for v in shapes.values())
    for bad in ({"nope.weight": [1]}, {next(iter(shapes)): "big"},
                {next(iter(shapes)): [2 ** 40]}):
        with pytest.raises(WeightsError, match="damaged|impossible"):
            load_pruned(variant("s.safetensors", {**meta, "shapes": json.dumps(bad)}, tensors))
    with pytest.raises(WeightsError, match="cannot be built"):
        load_pruned(variant("b.safetensors", {**meta, "base": json.dumps({"model": "nope"})},
                            tensors))


def test_prune_is_the_function_however_it_is_imported():
    # the module is deeparch.edge.pruning (imported above): the package's name stays the
    # function, never shadowed by a submodule of the same name
    from deeparch.edge import prune as from_package
    import deeparch.edge
    m = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(288, 2))
    for fn in (from_package, deeparch.edge.prune, prune):
        assert callable(fn) and not isinstance(fn, type(deeparch.edge))
        r = fn(m, torch.randn(1, 1, 8, 8), 0.5, by="channels")
        assert r.model[0].out_channels == 4
