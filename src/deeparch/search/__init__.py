"""Scaling and search: width/resolution multipliers, compound scaling, and architecture
search (spaces, strategies, objectives, the search loop, the NAS-Bench-201 table).

The search names are imported on first use, so ``import deeparch.search`` stays light."""
from .._lazy import lazy_exports

from .scaling import (ALPHA, BASE_RESOLUTION, BETA, GAMMA, CompoundScaling, apply_scaling,
                      fit_phi, flops_factor, round_filters, round_repeats, scale)

# public name -> the submodule that defines it. No submodule shares a public function's
# name (importing ``search.x`` would set the package's ``x`` to the module).
_LAZY = {
    "space": ".spaces", "SPACES": ".spaces", "Space": ".spaces", "find_space": ".spaces",
    "load_table": ".table", "Table": ".table",
    "make_strategy": ".strategies", "STRATEGIES": ".strategies",
    "ScalingSpace": ".strategies",
    "make_objective": ".objectives", "OBJECTIVES": ".objectives",
    "ZERO_COST": ".zero_cost",
    "run": ".loop", "search": ".loop", "SearchResult": ".loop",
}

__all__ = ["ALPHA", "BASE_RESOLUTION", "BETA", "GAMMA", "CompoundScaling", "apply_scaling",
           "fit_phi", "flops_factor", "round_filters", "round_repeats", "scale", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
