import math

import pytest

from deeparch.errors import DataError, TrainingError
from deeparch.train.config import RECIPES, TrainConfig, make_config
from deeparch.train.schedules import LRSchedule


def test_defaults_round_trip():
    c = TrainConfig()
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert c.seed == 13 and c.val_split == 0.2


@pytest.mark.parametrize("field,value", [
    ("epochs", 0), ("epochs", 1.5), ("batch_size", -1), ("optimizer", "rmsprop"),
    ("lr", 0.0), ("lr", float("nan")), ("momentum", 1.0), ("schedule", "poly"),
    ("gamma", 1.0), ("label_smoothing", 1.0), ("early_stopping", -1), ("grad_clip", -1.0),
    ("precision", "fp8"), ("warmup_epochs", 20), ("plateau_patience", 0),
])
def test_bad_values_are_training_errors(field, value):
    with pytest.raises(TrainingError) as e:
        TrainConfig(**{field: value})
    assert field in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field,value", [("val_split", 1.0), ("val_split", -0.1), ("subset", 1)])
def test_bad_data_values_are_data_errors(field, value):
    with pytest.raises(DataError):
        TrainConfig(**{field: value})


def test_nesterov_needs_sgd_momentum():
    with pytest.raises(TrainingError, match="nesterov"):
        TrainConfig(optimizer="adam", nesterov=True)
    assert TrainConfig(optimizer="SGD", nesterov=True).optimizer == "sgd"


def test_unknown_option_and_recipes():
    with pytest.raises(TrainingError, match="unknown training option 'lrate'"):
        make_config(lrate=0.1)
    c = TrainConfig.recipe("fashion_keras")
    assert (c.optimizer, c.batch_size, c.epochs, c.val_split, c.seed) == ("adam", 256, 10, 0.2, 13)
    r = TrainConfig.recipe("resnet", epochs=3)
    assert r.optimizer == "sgd" and r.momentum == 0.9 and r.schedule == "plateau" and r.epochs == 3
    assert set(RECIPES) >= {"fashion_keras", "alexnet", "resnet"}


def lrs(**kw):
    c = TrainConfig(**kw)
    return LRSchedule(c, steps_per_epoch=10)


def test_step_schedule():
    s = lrs(lr=1.0, schedule="step", step_size=2, gamma=0.1, epochs=6)
    assert [s.lr_at(e * 10) for e in range(6)] == pytest.approx([1, 1, .1, .1, .01, .01])


def test_cosine_with_warmup():
    s = lrs(lr=1.0, schedule="cosine", epochs=5, warmup_epochs=1)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(30) == pytest.approx(0.5)
    assert s.lr_at(49) < 0.01


def test_onecycle_rises_then_falls():
    s = lrs(lr=1.0, schedule="onecycle", epochs=10)
    values = [s.lr_at(i) for i in range(100)]
    peak = max(range(100), key=values.__getitem__)
    assert values[0] == pytest.approx(1 / 25)
    assert 25 <= peak <= 35 and values[peak] == pytest.approx(1.0, rel=1e-3)
    assert values[-1] < 1e-3


def test_plateau_divides_by_ten_and_round_trips():
    s = lrs(lr=1.0, schedule="plateau", plateau_patience=2, epochs=10)
    assert not s.epoch_end(0.5)
    assert not s.epoch_end(0.4)          # 1 bad epoch
    assert s.epoch_end(0.5)              # 2 bad epochs: decay
    assert s.lr_at(0) == pytest.approx(0.1)
    t = lrs(lr=1.0, schedule="plateau", plateau_patience=2, epochs=10)
    t.load_state_dict(s.state_dict())
    assert t.lr_at(123) == s.lr_at(123)
    assert not math.isnan(t.lr_at(0))
