"""``amplint run --plot PATH``: the loss scale and the skipped steps over steps, as a PNG,
one line per GradScaler (labelled by where it was constructed).

matplotlib is optional (``pip install 'amplint[plot]'``): ``amplint run`` checks for it
before the script starts (:func:`missing_matplotlib`).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

__all__ = ["missing_matplotlib", "write_plot"]

NEEDS_MATPLOTLIB = "amplint: --plot needs matplotlib: pip install 'amplint[plot]'"


def missing_matplotlib() -> str | None:
    """The one-line message when matplotlib cannot be imported, else None."""
    if importlib.util.find_spec("matplotlib") is None:
        return NEEDS_MATPLOTLIB
    return None


def write_plot(path: str, histories: list[dict[str, Any]]) -> str:
    """Write the PNG; return the line to show the user (where it went, or why not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return NEEDS_MATPLOTLIB
    series = [entry for entry in histories if entry["step"]]
    if not series:
        return "amplint: --plot: no GradScaler step was seen, nothing to plot"
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 5), gridspec_kw={"height_ratios": [3, 1]}
    )
    total_skipped = 0
    for row, entry in enumerate(series):
        label = f"GradScaler at {entry.get('label') or entry['site']}"
        line = top.step(entry["step"], entry["scale"], where="post", label=label)[0]
        marks = [s for s, was in zip(entry["step"], entry["skipped"], strict=True) if was]
        total_skipped += len(marks)
        # One band per scaler, in its line's colour.
        bottom.vlines(marks, row, row + 1, color=line.get_color(), linewidth=1)
    top.set_yscale("log", base=2)
    top.set_ylabel("loss scale")
    top.set_title("amplint: loss scale and skipped steps")
    top.legend(loc="best", fontsize="small")
    bottom.set_ylim(0, len(series))
    bottom.set_yticks([])
    bottom.set_ylabel(f"skipped\n({total_skipped})")
    bottom.set_xlabel("step")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        return f"amplint: --plot: cannot write {path}: {error}"
    finally:
        plt.close(figure)
    return f"amplint: plot of the loss scale written to {os.path.abspath(path)}"
