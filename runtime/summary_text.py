"""The numerical-health summary as text (``amplint run`` prints it at exit)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_health_summary"]


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"


def format_health_summary(summary: dict[str, Any]) -> str:
    steps = summary.get("steps", 0)
    if not steps:
        return "amplint: numerical health: no GradScaler step seen"
    skipped = summary.get("skipped_steps", 0)
    lines = [
        f"amplint: numerical health over {steps} step(s): {skipped} skipped ({skipped / steps:.1%})"
    ]
    scale = summary.get("scale")
    if scale:
        lines.append(
            f"  loss scale: min {scale['min']:g}, max {scale['max']:g}, final {scale['final']:g}"
        )
    overflow = summary.get("first_overflow")
    if overflow:
        lines.append(
            f"  first float16 overflow: {overflow['module']} ({overflow['kind']}) "
            f"at step {overflow['step']}, |output| {overflow['value']}"
        )
    else:
        lines.append("  first float16 overflow: none")
    lines.append(
        f"  gradient underflow share: {_share(summary.get('grad_underflow_share'))} "
        f"(zeros: {_share(summary.get('grad_zero_share'))})"
    )
    if summary.get("nonfinite_loss_steps"):
        lines.append(f"  non-finite loss on {summary['nonfinite_loss_steps']} step(s)")
    return "\n".join(lines)
