"""Scaling and search: width/resolution multipliers, compound scaling, architecture search."""
from .scaling import (ALPHA, BASE_RESOLUTION, BETA, GAMMA, CompoundScaling, apply_scaling,
                      fit_phi, flops_factor, round_filters, round_repeats, scale)

__all__ = ["ALPHA", "BASE_RESOLUTION", "BETA", "GAMMA", "CompoundScaling", "apply_scaling",
           "fit_phi", "flops_factor", "round_filters", "round_repeats", "scale"]
