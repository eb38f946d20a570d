"""The complexity chart of the seeds: mult-adds against parameters, one labelled point per net."""
from __future__ import annotations

from pathlib import Path

from ..io import atomic_path


def plot_complexity(rows, path: str | Path, title: str = "Mult-adds against parameters") -> Path:
    """Write a PNG with one labelled point per :class:`~deeparch.inspect.compare.Comparison`.

    Axes are logarithmic (the zoo spans three orders of magnitude); the marker area grows
    with the forward activation memory, as in the seeds' "comparing complexity" figure.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    mem = [max(r.activation_bytes, 1) for r in rows]
    biggest = max(mem)
    for r, m in zip(rows, mem):
        ax.scatter(r.params / 1e6, r.macs / 1e9, s=30 + 400 * m / biggest, alpha=0.6)
        ax.annotate(r.name, (r.params / 1e6, r.macs / 1e9), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("mult-adds (billions)")
    ax.set_title(title + " (marker area: activation memory)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
