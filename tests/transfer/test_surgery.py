"""deeparch.transfer.surgery: cut, freeze (frozen batch norm stays frozen), new heads and
optimizer groups. Small models only: resnet18 / resnet20 / mobilenet_v2 at 32x32 and
patterns with batch norm."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deeparch
from deeparch.data import ArrayDataset
from deeparch.errors import DeeparchError, ModelOptionError, TrainingError, UnknownLayerError
from deeparch.transfer.surgery import (Cut, cut, cut_points, freeze, frozen_report, new_head,
                                       param_groups, unfreeze)

BN_PATTERN = ("INPUT(16x16x1) -> CONV3-16 -> RELU -> POOL2 -> CONV3-16 -> BN -> RELU -> POOL2 "
              "-> FC-4")
BN_KINDS = (nn.BatchNorm1d, nn.BatchNorm2d)


def _model(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    if name == "pattern":
        m = deeparch.from_pattern(BN_PATTERN)
    else:
        m = deeparch.create_model(name, **kw)
    _randomise_norms(m, seed + 1)
    return m


def _randomise_norms(model: nn.Module, seed: int) -> None:
    """Batch-norm statistics and affine values far from their defaults, so that eval mode,
    train mode and a moved statistic all show in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BN_KINDS):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _input(shape, seed: int = 3) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _hooked(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The output of ``model``'s module ``name`` while the whole model runs (cloned: an
    in-place ReLU after it would change it)."""
    box = {}
    h = model.get_submodule(name).register_forward_hook(
        lambda m, i, o: box.__setitem__("out", o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return box["out"]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _under(keys, prefixes) -> list[str]:
    return [k for k in keys if any(k.startswith(p) for p in prefixes)]


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, shape, classes: int,
                 steps: int = 3, seed: int = 5) -> None:
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        x = torch.randn(shape, generator=g)
        y = torch.randint(0, classes, (shape[0],), generator=g)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=False)     # stale gradients stay tensors: the worst case
        loss.backward()
        opt.step()


def _optimizer(kind: str, params) -> torch.optim.Optimizer:
    params = list(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)


def _assert_frozen(before, after, keys) -> None:
    assert keys
    moved = [k for k in keys if not torch.equal(before[k], after[k])]
    assert not moved, f"frozen tensors moved: {moved[:5]}"


def _assert_trained(before, after, model, keys) -> None:
    params = dict(model.named_parameters())
    trained = [k for k in keys if k in params]
    assert trained
    still = [k for k in trained if torch.equal(before[k], after[k])]
    assert not still, f"trainable parameters did not change: {still[:5]}"


# =========================================================================== cut
RESNET18_POINTS = ["stem", "layer1", "layer2", "layer3", "layer4", "features.layer3.0",
                   "features.stem.bn1", "features.stem", "features", "head.pool",
                   "head.flatten", "head"]


@pytest.fixture(scope="module")
def resnet18():
    return _model("resnet18", num_classes=10).eval()


@pytest.mark.parametrize("after", RESNET18_POINTS)
def test_cut_equals_the_hooked_output_resnet18(resnet18, after):
    x = _input((2, 3, 32, 32))
    front = cut(resnet18, after)
    assert isinstance(front, Cut) and isinstance(front, nn.Sequential)
    with torch.no_grad():
        got = front(x)
    assert torch.equal(got, _hooked(resnet18, front.after, x))


def test_cut_equals_hooked_output_other_families():
    x = _input((2, 3, 32, 32))
    for name, points in [("resnet20", ["stage2", "features.stage3.1"]),
                         ("mobilenet_v2", ["stage3", "features.stage4.block2",
                                           "features.stem.bn", "conv_last"])]:
        m = _model(name, num_classes=10).eval()
        for after in points:
            front = cut(m, after)
            with torch.no_grad():
                assert torch.equal(front(x), _hooked(m, front.after, x)), (name, after)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_cut_every_point_of_a_pattern(mode):
    m = _model("pattern")
    m.train(mode == "train")
    x = _input((4, 1, 16, 16))
    rows = [r.name for r in deeparch.summary(m, input_size=(1, 16, 16)).layers]
    assert cut_points(m) == rows               # a pattern's summary rows are its cut points
    for after in rows:
        front = cut(m, after)
        with torch.no_grad():
            got = front(x)
        assert torch.equal(got, _hooked(m, after, x)), after


def test_every_summary_row_is_a_cut_point_or_inside_a_block(resnet18):
    x = _input((1, 3, 32, 32))
    accepted = refused = 0
    for row in (r.name for r in deeparch.summary(resnet18, input_size=(3, 32, 32)).layers):
        try:
            front = cut(resnet18, row)
        except UnknownLayerError as exc:
            assert "cannot be cut" in str(exc) and "inside features." in str(exc), row
            refused += 1
            continue
        accepted += 1
        with torch.no_grad():
            assert torch.equal(front(x), _hooked(resnet18, row, x)), row
    assert accepted == 7 and refused == 62     # stem (4 rows) and head (3); the blocks' insides


def test_cut_shares_modules_and_state_dict_keys(resnet18):
    front = cut(resnet18, "features.layer2.0")
    assert front.features.stem.conv1.weight is resnet18.features.stem.conv1.weight
    keys = set(front.state_dict())
    assert keys and keys < set(resnet18.state_dict())
    assert not any(k.startswith(("features.layer2.1.", "features.layer3", "head")) for k in keys)
    assert cut(resnet18, 2).after == cut(resnet18, "layer1").after == "features.layer1"
    assert resnet18.features.layer2[1] is not None and len(resnet18.features.layer2) == 2


def test_cut_refuses_the_inside_of_a_residual_block(resnet18):
    with pytest.raises(UnknownLayerError) as err:
        cut(resnet18, "features.layer3.1.conv2")
    msg = str(err.value)
    assert "features.layer3.1 (BasicBlock)" in msg
    assert "features.layer3.0, features.layer3.1;" in msg and "layer4" in msg
    with pytest.raises(UnknownLayerError, match="inside features.layer1.0"):
        cut(resnet18, "features.layer1.0.add")          # a functional row of the summary
    with pytest.raises(UnknownLayerError, match="single layer"):
        cut(resnet18, "head.fc.weight")


def test_unknown_names_list_the_valid_ones(resnet18):
    with pytest.raises(UnknownLayerError) as err:
        cut(resnet18, "layr3")
    msg = str(err.value)
    assert isinstance(err.value, DeeparchError) and isinstance(err.value, KeyError)
    assert "\n" not in msg and msg.replace("...", "").count(". ") == 0 and msg.endswith(".")
    assert "did you mean 'layer3'?" in msg
    assert "the stages stem, layer1, layer2, layer3, layer4" in msg
    listed = msg.split("cut points ", 1)[1].split(", ...", 1)[0].split(", ")
    assert len(listed) == 20 and listed[0] == "features.stem.conv1"
    with pytest.raises(UnknownLayerError, match="features.layer3 holds features.layer3.0, "
                                                "features.layer3.1;"):
        cut(resnet18, "features.layer3.9")
    with pytest.raises(UnknownLayerError, match="stages 1 to 5"):
        cut(resnet18, 6)
    with pytest.raises(UnknownLayerError):
        cut(resnet18, None)
    pattern = _model("pattern")
    with pytest.raises(UnknownLayerError) as err:
        cut(pattern, "conv9")
    assert "conv1, relu1, pool1, conv2, bn1, relu2, pool2, flatten1, fc1 " in str(err.value)
    assert "..." not in str(err.value)


def test_cut_needs_a_sequence():
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.a(x)

    with pytest.raises(ModelOptionError, match="nn.Sequential"):
        cut(Mine(), "a")


# =========================================================================== freeze
CASES = {
    # name: (builder kw, upto, input shape, classes, frozen state_dict prefixes)
    "resnet20": (dict(num_classes=10), "stage2", (8, 3, 32, 32), 10,
                 ["features.stem.", "features.stage1.", "features.stage2."]),
    "mobilenet_v2": (dict(num_classes=10), "stage4", (8, 3, 32, 32), 10,
                     ["features.stem.", "features.stage1.", "features.stage2.",
                      "features.stage3.", "features.stage4."]),
    "pattern": ({}, "relu2", (8, 1, 16, 16), 4, ["conv1.", "conv2.", "bn1."]),
}


@pytest.mark.parametrize("opt_kind", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_freeze_keeps_every_frozen_tensor_bit_identical(case, opt_kind):
    kw, upto, shape, classes, prefixes = CASES[case]
    m = _model(case, **kw)
    opt = _optimizer(opt_kind, m.parameters())        # every parameter, frozen ones too
    _train_steps(m, opt, shape, classes, steps=1, seed=1)   # momentum, Adam state, gradients
    report = freeze(m, upto)
    before = _snapshot(m)
    frozen = _under(before, prefixes)
    assert any(k.endswith("running_mean") for k in frozen)
    assert any(k.endswith("num_batches_tracked") for k in frozen)
    m.eval()
    m.train()                                          # the pitfall: train mode after freezing
    _train_steps(m, opt, shape, classes)
    after = _snapshot(m)
    _assert_frozen(before, after, frozen)
    _assert_trained(before, after, m, [k for k in before if k not in frozen])
    moving = [k for k in before if k not in frozen and k.endswith("running_mean")]
    if moving:                                         # batch norms after the cut do train
        assert all(not torch.equal(before[k], after[k]) for k in moving)
    assert report.frozen_params == sum(before[k].numel() for k in frozen
                                       if k in dict(m.named_parameters()))


def test_requires_grad_alone_lets_batch_norm_statistics_move():
    """The control: what freeze prevents really happens without it (so the test above can
    fail)."""
    m = _model("resnet20", num_classes=10)
    for p in m.features.stem.parameters():
        p.requires_grad_(False)
    before = _snapshot(m)
    _train_steps(m, _optimizer("sgd", m.parameters()), (8, 3, 32, 32), 10)
    after = _snapshot(m)
    assert torch.equal(before["features.stem.conv1.weight"], after["features.stem.conv1.weight"])
    assert not torch.equal(before["features.stem.bn1.running_mean"],
                           after["features.stem.bn1.running_mean"])


def test_linear_regime_trains_only_the_new_head():
    m = _model("resnet20", num_classes=10)
    freeze(m)
    head = new_head(m, 5)
    assert head is m.get_classifier() and head.out_features == 5 and m.num_classes == 5
    before = _snapshot(m)
    _train_steps(m, _optimizer("sgd", m.parameters()), (8, 3, 32, 32), 5)
    after = _snapshot(m)
    head_keys = ["head.fc.weight", "head.fc.bias"]
    _assert_frozen(before, after, [k for k in before if k not in head_keys])
    _assert_trained(before, after, m, head_keys)
    report = frozen_report(m)
    assert report.trainable_params == 64 * 5 + 5 and report.trainable_tensors == 2
    n_bn = sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert len(report.held_norms) == n_bn == 19
    assert report.total_params == sum(p.numel() for p in m.parameters())


def test_frozen_batch_norm_survives_deepcopy_and_pickle():
    m = _model("resnet20", num_classes=10)
    freeze(m, "stage1")
    original = _snapshot(m)
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert frozen_report(clone).held_norms == frozen_report(m).held_norms
        before = _snapshot(clone)
        _train_steps(clone, _optimizer("sgd", clone.parameters()), (8, 3, 32, 32), 10)
        after = _snapshot(clone)
        frozen = _under(before, ["features.stem.", "features.stage1."])
        _assert_frozen(before, after, frozen)
        _assert_trained(before, after, clone, [k for k in before if k not in frozen])
    _assert_frozen(original, _snapshot(m), list(original))   # the copies shared nothing


def test_frozen_batch_norm_survives_the_state_dict_round_trip(tmp_path):
    from deeparch.train.checkpoint import load_checkpoint, save_checkpoint

    m = _model("resnet20", num_classes=10)
    plain_keys = list(m.state_dict())
    freeze(m, "stage2")
    assert list(m.state_dict()) == plain_keys          # no extra keys: loads anywhere
    donor = _model("resnet20", seed=7, num_classes=10)
    m.load_state_dict(donor.state_dict())
    save_checkpoint(tmp_path / "c.safetensors", m)
    m.load_state_dict(_model("resnet20", seed=9, num_classes=10).state_dict())
    load_checkpoint(tmp_path / "c.safetensors", m)
    before = _snapshot(m)
    assert torch.equal(before["features.stem.bn1.running_var"],
                       donor.state_dict()["features.stem.bn1.running_var"])
    assert not m.features.stem.conv1.weight.requires_grad
    _train_steps(m, _optimizer("adam", m.parameters()), (8, 3, 32, 32), 10)
    frozen = _under(before, ["features.stem.", "features.stage1.", "features.stage2."])
    _assert_frozen(before, _snapshot(m), frozen)


def test_unfreeze_restores_training():
    m = _model("resnet20", num_classes=10)
    m.head.fc.bias.requires_grad_(False)               # frozen by the user, not by freeze
    freeze(m, "stage1")
    bn = m.features.stem.bn1
    m.train()
    with torch.no_grad():
        m(_input((2, 3, 32, 32)))
    assert m.training and not bn.training              # held in eval while frozen
    report = unfreeze(m)
    assert report.held_norms == [] and bn.training
    assert all(p.requires_grad for n, p in m.named_parameters() if n != "head.fc.bias")
    assert not m.head.fc.bias.requires_grad
    m.eval()
    assert not bn.training
    before = _snapshot(m)
    _train_steps(m, _optimizer("sgd", m.parameters()), (8, 3, 32, 32), 10)
    after = _snapshot(m)
    assert bn.training
    for k in ("features.stem.conv1.weight", "features.stem.bn1.weight",
              "features.stem.bn1.running_mean", "features.stage1.0.bn2.running_var"):
        assert not torch.equal(before[k], after[k]), k


def test_freeze_with_a_bad_name_changes_nothing():
    m = _model("resnet20", num_classes=10)
    with pytest.raises(UnknownLayerError, match="stage1, stage2, stage3"):
        freeze(m, "stage9")
    assert all(p.requires_grad for p in m.parameters())
    assert frozen_report(m).held_norms == []


def test_freeze_is_additive_and_reports_per_stage():
    m = _model("resnet20", num_classes=10)
    freeze(m, "stem")
    report = freeze(m, "features.stage2.0")
    parts = {n: (f, t) for n, f, t in report.parts}
    assert parts["features.stem"][1] == 0 and parts["features.stage1"][1] == 0
    assert parts["features.stage2"][0] > 0 and parts["features.stage2"][1] > 0
    assert parts["features.stage3"][0] == 0 and parts["head"][0] == 0
    assert report.frozen_params + report.trainable_params == sum(
        p.numel() for p in m.parameters())
    assert "frozen" in str(report) and report.to_dict()["parts"][0]["name"] == "features.stem"


# =========================================================================== the trainer
def _images(n: int, shape, classes: int, seed: int) -> ArrayDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.int64).to(torch.uint8)
    y = torch.arange(n) % classes
    return ArrayDataset(x, y, [f"c{i}" for i in range(classes)], "random")


FIT_CASES = {
    # name: (model, upto (None: linear regime with a new head), image shape, classes,
    #        frozen prefixes, fit options)
    "resnet20_top": ("resnet20", "stage2", (3, 32, 32), 10,
                     ["features.stem.", "features.stage1.", "features.stage2."],
                     dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)),
    "resnet20_linear": ("resnet20", None, (3, 32, 32), 4, ["features."],
                        dict(optimizer="adamw", lr=1e-2, weight_decay=0.1)),
    "pattern_fused": ("pattern", "relu2", (1, 16, 16), 4, ["conv1.", "conv2.", "bn1."],
                      dict(optimizer="adam", lr=1e-2, weight_decay=1e-2)),
}


@pytest.mark.parametrize("case", sorted(FIT_CASES))
def test_frozen_tensors_stay_bit_identical_through_fit(case):
    name, upto, shape, classes, prefixes, opts = FIT_CASES[case]
    m = _model(name, **({} if name == "pattern" else dict(num_classes=10)))
    if upto is None:
        new_head(m, classes)
    freeze(m, upto)
    before = _snapshot(m)
    frozen = _under(before, prefixes)
    train_ds = _images(64, shape, classes, seed=1)
    val_ds = _images(32, shape, classes, seed=2)
    deeparch.fit(m, train_ds, val_ds, epochs=1, batch_size=16, device="cpu", log=None,
                 progress=False, restore_best=False, **opts)
    after = _snapshot(m)
    _assert_frozen(before, after, frozen)
    _assert_trained(before, after, m, [k for k in before if k not in frozen])
    moving = [k for k in before if k not in frozen and k.endswith("running_mean")]
    assert all(not torch.equal(before[k], after[k]) for k in moving)
    if name == "pattern":
        from deeparch.train.speed import _FastSequential, unprepare
        # prepare_for_training fused the frozen conv1 -> relu1 -> pool1 block: the
        # fused kernel ran on frozen weights and the hooked batch norm stayed out of it
        assert isinstance(m.__dict__.get("forward"), _FastSequential)
        assert 0 in m.forward.runs
        unprepare(m)


# =========================================================================== head, groups
def test_new_head_on_a_pattern_and_a_conv_classifier():
    m = _model("pattern")
    freeze(m)
    conv1 = m.conv1
    head = new_head(m, 3)
    assert m.fc1 is head and isinstance(head, nn.Linear) and head.out_features == 3
    assert m.conv1 is conv1 and head.weight.requires_grad
    assert m(_input((2, 1, 16, 16))).shape == (2, 3)
    seq = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 10, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten())
    new = new_head(seq, 4)
    assert seq[2] is new and new.kernel_size == (1, 1)
    assert seq(_input((2, 3, 12, 12))).shape == (2, 4)
    with pytest.raises(ModelOptionError, match="not a Linear or 1x1"):
        new_head(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), 4)
    with pytest.raises(ModelOptionError, match="cut network"):
        new_head(cut(_model("resnet20", num_classes=10), "stage2"), 4)
    with pytest.raises(ModelOptionError, match="num_classes"):
        new_head(m, 0)


def test_param_groups_hold_every_trainable_parameter_once():
    m = _model("resnet20", num_classes=10)
    freeze(m, "stage1")
    groups = param_groups(m, 0.1, 0.01)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert {id(p) for p in groups[1]["params"]} == {id(m.head.fc.weight), id(m.head.fc.bias)}
    assert groups[0]["lr"] == 0.01 and groups[1]["lr"] == 0.1
    assert groups[0]["lr_scale"] == pytest.approx(0.1) and groups[1]["lr_scale"] == 1.0
    opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    before = _snapshot(m)
    _train_steps(m, opt, (8, 3, 32, 32), 10, steps=1)
    _assert_frozen(before, _snapshot(m), _under(before, ["features.stem.", "features.stage1."]))
    freeze(m)
    assert [g["name"] for g in param_groups(m, 0.1, 0.01)] == ["head"]
    freeze(m, "head")
    with pytest.raises(TrainingError, match="no trainable parameters"):
        param_groups(m, 0.1, 0.01)
    with pytest.raises(ModelOptionError, match="lr_backbone"):
        param_groups(_model("resnet20", num_classes=10), 0.1, -1)
    with pytest.raises(ModelOptionError, match="lr must"):
        param_groups(_model("resnet20", num_classes=10), float("nan"), 0.1)


def test_new_head_of_googlenet_counts_its_auxiliary_classifiers_as_head():
    m = _model("googlenet", num_classes=10, aux_logits=True)
    new_head(m, 3)
    aux_fcs = [h.fc for h in m.aux.values()]
    assert len(aux_fcs) == 2 and all(fc.out_features == 3 for fc in aux_fcs)
    freeze(m)                                           # after new_head: the heads stay trainable
    head_ids = {id(p) for mod in [m.get_classifier(), *aux_fcs] for p in mod.parameters()}
    assert {id(p) for p in m.parameters() if p.requires_grad} == head_ids
    groups = param_groups(m, 0.1, 0.01)
    assert [g["name"] for g in groups] == ["head"]
    assert {id(p) for p in groups[0]["params"]} == head_ids


def test_summary_agrees_with_the_frozen_report():
    m = _model("resnet20", num_classes=10)
    report = freeze(m, "stage2")
    s = deeparch.summary(m, input_size=(3, 32, 32))
    assert s.trainable_params == report.trainable_params
    assert s.total_params == report.total_params
    assert frozen_report(m).held_norms == report.held_norms     # the trace changed nothing
