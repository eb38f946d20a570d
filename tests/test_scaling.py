"""Compound scaling: the arithmetic, and how the published EfficientNet B1-B7 settings relate to it."""
import math

import pytest
import torch

import deeparch
from deeparch.errors import DeeparchError
from deeparch.models.efficientnet import B0_STAGES, SETTINGS
from deeparch.search import (apply_scaling, fit_phi, flops_factor, round_filters,
                             round_repeats, scale)


def test_scale_arithmetic():
    s0 = scale(0)
    assert (s0.depth, s0.width, s0.resolution, s0.flops) == (1.0, 1.0, 224, 1.0)
    s1 = scale(1)
    assert math.isclose(s1.depth, 1.2) and math.isclose(s1.width, 1.1)
    assert s1.resolution == 256                       # 224 * 1.15 = 257.6 -> multiple of 8
    assert scale(1, resolution_divisor=1).resolution == 258
    assert scale(1, resolution_divisor=32).resolution == 256
    assert math.isclose(s1.flops, 1.2 * 1.1 ** 2 * 1.15 ** 2)
    assert abs(s1.flops - 2.0) < 0.08                 # alpha * beta^2 * gamma^2 = 1.92 ~ 2
    s3 = scale(3, base_resolution=224)
    assert math.isclose(s3.flops, 1.92027 ** 3, rel_tol=1e-5)
    assert s3.resolution % 8 == 0 and abs(s3.resolution - 224 * 1.15 ** 3) <= 4
    assert s3.input_size == (3, s3.resolution, s3.resolution)
    down = scale(-1)
    assert down.depth < 1 and down.width < 1 and down.resolution == 192


def test_rounding_rules():
    assert round_filters(32, 1.1) == 32 and round_filters(320, 1.1) == 352
    assert round_filters(40, 1.4) == 56 and round_filters(1280, 2.0) == 2560
    assert round_filters(16, 0.5) == 8                    # never below one divisor
    assert round_repeats(3, 1.1) == 4 and round_repeats(1, 3.1) == 4 and round_repeats(2, 1.0) == 2


# The paper does not give the phi of B1-B7 and their settings are hand-rounded, so
# scale(phi) cannot reproduce them exactly. With phi fitted to each setting's FLOPS
# factor (fit_phi), the deviations of scale(phi) from the published setting are:
#
#   variant  phi    depth a^phi / ref   width b^phi / ref   resolution 224 g^phi / ref
#   B1       0.36   1.067 / 1.1 (-3.0%) 1.035 / 1.0 (+3.5%) 235.5 / 240 (-1.9%)
#   B2       1.03   1.206 / 1.2 (+0.5%) 1.103 / 1.1 (+0.3%) 258.6 / 260 (-0.5%)
#   B3       1.97   1.432 / 1.4 (+2.3%) 1.207 / 1.2 (+0.5%) 295.0 / 300 (-1.7%)
#   B4       3.55   1.911 / 1.8 (+6.2%) 1.403 / 1.4 (+0.2%) 368.0 / 380 (-3.2%)
#   B5       4.83   2.412 / 2.2 (+9.6%) 1.584 / 1.6 (-1.0%) 439.8 / 456 (-3.5%)
#   B6       5.90   2.929 / 2.6 (+12.7%) 1.754 / 1.8 (-2.6%) 510.5 / 528 (-3.3%)
#   B7       6.88   3.505 / 3.1 (+13.1%) 1.926 / 2.0 (-3.7%) 585.8 / 600 (-2.4%)
#
# Width and resolution follow the formula within 4%; depth within 3% up to B3, but the
# published B4-B7 are up to 13% shallower than alpha^phi (and wider / larger instead).
FITTED_PHI = {"b1": 0.358, "b2": 1.028, "b3": 1.970, "b4": 3.552, "b5": 4.828, "b6": 5.895,
              "b7": 6.879}
# phi values suggested in tensorflow/tpu#390 by fitting by eye: B1 0.5, B2 1, B3 2, B4 3.5 ...
INDICATIVE_PHI = {"b1": 0.5, "b2": 1, "b3": 2, "b4": 3.5, "b5": 5, "b6": 6, "b7": 7}
WIDTH_TOL, RESOLUTION_TOL = 0.04, 0.04
DEPTH_TOL = {"b1": 0.03, "b2": 0.03, "b3": 0.03, "b4": 0.07, "b5": 0.10, "b6": 0.14,
             "b7": 0.14}


@pytest.mark.parametrize("variant", sorted(FITTED_PHI))
def test_scale_reproduces_published_settings(variant):
    width, depth, res, _ = SETTINGS[variant]
    phi = fit_phi(depth, width, res, 1.2, 1.1, 1.15)
    assert math.isclose(phi, FITTED_PHI[variant], abs_tol=5e-4)
    assert abs(phi - INDICATIVE_PHI[variant]) <= 0.2
    s = scale(phi, 1.2, 1.1, 1.15, base_resolution=224, resolution_divisor=1)
    assert math.isclose(s.flops, flops_factor(depth, width, res / 224))
    assert abs(s.width / width - 1) <= WIDTH_TOL
    assert abs(s.resolution / res - 1) <= RESOLUTION_TOL
    assert abs(s.depth / depth - 1) <= DEPTH_TOL[variant]


def test_phi_one_is_b2():
    """scale(1) gives B2's width and depth exactly (and 256 against its 260 input)."""
    s = scale(1)
    with torch.device("meta"):
        model = deeparch.create_model("efficientnet_b0", **s.model_kwargs())
    assert deeparch.summary(model, s.input_size).total_params == 9_109_994
    assert abs(s.resolution - SETTINGS["b2"][2]) <= 4


@pytest.mark.parametrize("variant", sorted(SETTINGS))
def test_apply_scaling_matches_the_built_stages(variant):
    width, depth, _, _ = SETTINGS[variant]
    channels, repeats = apply_scaling([c for *_, c, _ in B0_STAGES],
                                      [n for *_, n in B0_STAGES], width, depth)
    with torch.device("meta"):
        model = deeparch.create_model(f"efficientnet_{variant}")
    stages = [getattr(model.features, f"stage{i}") for i in range(1, 8)]
    assert repeats == [len(st) for st in stages]
    assert channels == [st[-1].project.conv.out_channels for st in stages]
    assert model.features.head_conv.conv.out_channels == round_filters(1280, width)


def test_scaled_mult_adds_follow_the_flops_factor():
    """Integer rounding (ceil of repeats, channels to multiples of 8) makes the real networks
    a little heavier than d * w^2 * r^2 says: B0 -> scale(phi) costs 1.0x to 1.45x the factor."""
    b0 = deeparch.summary("efficientnet_b0").macs
    for phi in (-1, 1, 2):
        s = scale(phi)
        with torch.device("meta"):
            model = deeparch.create_model("efficientnet_b0", **s.model_kwargs())
        ratio = deeparch.summary(model, s.input_size).macs / b0
        nominal = flops_factor(s.depth, s.width, s.resolution / 224)
        assert 1.0 <= ratio / nominal <= 1.45


@pytest.mark.parametrize("call", [lambda: scale(1, alpha=0.9), lambda: scale(1, gamma=0),
                                  lambda: scale(1, resolution_divisor=0),
                                  lambda: scale(1, base_resolution=-224),
                                  lambda: apply_scaling([32], [1], 0.0, 1.0),
                                  lambda: fit_phi(1.2, 1.1, 260, alpha=1, beta=1, gamma=1)])
def test_bad_values(call):
    with pytest.raises(DeeparchError):
        call()
