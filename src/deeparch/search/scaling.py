"""Compound scaling (Tan & Le 2019, EfficientNet, eq. 3).

One coefficient ``phi`` scales a baseline network in all three dimensions at once::

    depth      d = alpha ** phi          (layers per stage)
    width      w = beta  ** phi          (channels per layer)
    resolution r = gamma ** phi          (input side, times the baseline's 224)
    subject to alpha * beta**2 * gamma**2 ~= 2,  alpha, beta, gamma >= 1

so that FLOPS, proportional to d * w**2 * r**2, grow by ``(alpha * beta**2 * gamma**2) ** phi``
~= ``2 ** phi``. The paper's grid search at phi = 1 found alpha = 1.2, beta = 1.1, gamma = 1.15
(1.2 * 1.1**2 * 1.15**2 = 1.92).

The multipliers then become integer networks by the rules of the reference implementation
(:func:`apply_scaling`): channels ``make_divisible(c * w, 8)`` (nearest multiple of 8, never
more than 10% below), repeats ``ceil(n * d)``.

Note that the published B1-B7 settings are *not* ``scale(n)``: their phi values are not given
in the paper and the settings are hand-rounded (B2 is close to phi = 1, B3 to phi = 2, B7's
depth 3.1 is well below 1.2**7 = 3.58). :func:`fit_phi` gives the phi whose FLOPS factor a
setting has; see tests/test_scaling.py for the deviations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ModelOptionError
from ..layers import make_divisible

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15      # the paper's grid-search result for EfficientNet-B0
BASE_RESOLUTION = 224


@dataclass(frozen=True)
class CompoundScaling:
    """The multipliers of one ``phi``: what :func:`scale` returns."""

    phi: float
    depth: float           # depth multiplier alpha ** phi
    width: float           # width multiplier beta ** phi
    resolution: int        # base_resolution * gamma ** phi, rounded to resolution_divisor
    flops: float           # FLOPS factor (alpha * beta**2 * gamma**2) ** phi

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.resolution, self.resolution)

    def model_kwargs(self) -> dict[str, float]:
        """The knobs of ``create_model('efficientnet_b0', ...)`` for this scaling."""
        return {"width_mult": self.width, "depth_mult": self.depth}


def _check_coefficients(alpha: float, beta: float, gamma: float) -> None:
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value >= 1.0:
            raise ModelOptionError(
                f"compound scaling needs {name} >= 1 (the paper's constraint), not {value}; "
                f"scale down with a negative phi instead.")


def flops_factor(depth: float, width: float, resolution: float) -> float:
    """How much FLOPS grow for depth, width and resolution multipliers: ``d * w**2 * r**2``."""
    return depth * width ** 2 * resolution ** 2


def scale(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA,
          base_resolution: int = BASE_RESOLUTION, resolution_divisor: int = 8) -> CompoundScaling:
    """Depth, width, resolution and FLOPS factor of compound coefficient ``phi``.

    The resolution is rounded to the nearest multiple of ``resolution_divisor`` (8 by
    default, as the MobileNet/EfficientNet input sizes are; 32 makes every one of
    EfficientNet's five stride-2 steps halve exactly; 1 only rounds to an integer).
    Negative ``phi`` scales down.
    """
    _check_coefficients(alpha, beta, gamma)
    if not (isinstance(resolution_divisor, int) and resolution_divisor >= 1):
        raise ModelOptionError(
            f"resolution_divisor must be a positive integer, not {resolution_divisor!r}.")
    if not base_resolution > 0:
        raise ModelOptionError(f"base_resolution must be positive, not {base_resolution}.")
    side = base_resolution * gamma ** phi
    resolution = max(resolution_divisor,
                     math.floor(side / resolution_divisor + 0.5) * resolution_divisor)
    return CompoundScaling(phi=phi, depth=alpha ** phi, width=beta ** phi,
                           resolution=resolution,
                           flops=flops_factor(alpha, beta, gamma) ** phi)


def fit_phi(depth: float, width: float, resolution: float, alpha: float = ALPHA,
            beta: float = BETA, gamma: float = GAMMA,
            base_resolution: int = BASE_RESOLUTION) -> float:
    """The phi whose FLOPS factor equals that of a (depth, width, resolution) setting.

    ``fit_phi(3.1, 2.0, 600)`` (EfficientNet-B7's setting) is about 6.88.
    """
    _check_coefficients(alpha, beta, gamma)
    base = math.log(flops_factor(alpha, beta, gamma))
    if base <= 0:
        raise ModelOptionError("alpha * beta**2 * gamma**2 must exceed 1 to fit a phi.")
    return math.log(flops_factor(depth, width, resolution / base_resolution)) / base


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Channels of a layer under width multiplier ``width`` (the reference's rule)."""
    return make_divisible(channels * width, divisor)


def round_repeats(repeats: int, depth: float) -> int:
    """Blocks of a stage under depth multiplier ``depth``: rounded up."""
    return int(math.ceil(repeats * depth))


def apply_scaling(channels: Sequence[int], repeats: Sequence[int], width: float,
                  depth: float, divisor: int = 8) -> tuple[list[int], list[int]]:
    """Scale a baseline's per-stage output channels and repeats by width and depth multipliers."""
    if not (width > 0 and depth > 0):
        raise ModelOptionError(
            f"width and depth multipliers must be positive, not {width} and {depth}.")
    return ([round_filters(c, width, divisor) for c in channels],
            [round_repeats(n, depth) for n in repeats])
