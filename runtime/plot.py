"""``amplint run --plot PATH``: the loss scale and the skipped steps over steps, as a PNG.

matplotlib is optional (``pip install 'amplint[plot]'``); without it a one-line message
says so and nothing is written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_plot"]


def write_plot(path: str, history: dict[str, list[Any]]) -> str | None:
    """Write the PNG; return a message for the user when it could not be written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "amplint: --plot needs matplotlib: pip install 'amplint[plot]'"
    steps, scales, skipped = history["step"], history["scale"], history["skipped"]
    if not steps:
        return "amplint: --plot: no GradScaler step was seen, nothing to plot"
    figure, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(8, 5), gridspec_kw={"height_ratios": [3, 1]}
    )
    top.step(steps, scales, where="post", color="tab:blue")
    top.set_yscale("log", base=2)
    top.set_ylabel("loss scale")
    top.set_title("amplint: loss scale and skipped steps")
    marks = [step for step, was in zip(steps, skipped, strict=True) if was]
    bottom.vlines(marks, 0, 1, color="tab:red", linewidth=1)
    bottom.set_ylim(0, 1)
    bottom.set_yticks([])
    bottom.set_ylabel(f"skipped\n({len(marks)})")
    bottom.set_xlabel("step")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        return f"amplint: --plot: cannot write {path}: {error}"
    finally:
        plt.close(figure)
    return None
