"""The numerical-health summary as text (``amplint run`` prints it at exit).

Every line says what was measured and, where nothing was, why: a reader must never have
to guess what "n/a" or "none" stands for.
"""

from __future__ import annotations

from typing import Any

from .health_config import FP16_MAX, REBUILT_FROM, HealthConfig

__all__ = ["format_health_summary"]


def _share(value: float | None, config: dict[str, Any], first: int = 0) -> str:
    if value is None:
        every = config.get("underflow_every", HealthConfig.underflow_every)
        steps = f"{first}, {first + every}, {first + 2 * every}"
        return (
            f"not measured (the gradients are counted on steps {steps}, ... "
            "when they are finite; none of those steps ran, or each was skipped for inf/NaN "
            "gradients)"
        )
    return f"{value:.2%}"


def _scaler_lines(
    entry: dict[str, Any], config: dict[str, Any], indent: str, bfloat16_only: bool
) -> list[str]:
    lines = []
    scale = entry.get("scale")
    if scale:
        lines.append(
            f"{indent}loss scale: min {scale['min']:g}, max {scale['max']:g}, "
            f"final {scale['final']:g}"
        )
    if bfloat16_only:
        # Underflow below float16's smallest normal is float16's problem (see AMP014).
        lines.append(f"{indent}gradient underflow share: not applicable (only bfloat16 autocast)")
    else:
        lines.append(f"{indent}gradient underflow share: {_underflow(entry, config)}")
    if entry.get("nonfinite_loss_steps"):
        lines.append(f"{indent}non-finite loss on {entry['nonfinite_loss_steps']} step(s)")
    return lines


def _underflow(entry: dict[str, Any], config: dict[str, Any]) -> str:
    share = entry.get("grad_underflow_share")
    text = _share(share, config, entry.get("first_step") or 0)
    if share is not None:
        zeros = entry.get("grad_zero_share")
        text += (
            f" below float16's smallest normal at the scale used (zeros: {_share(zeros, config)})"
        )
    return text


def _overflow_line(summary: dict[str, Any], config: dict[str, Any]) -> str:
    return _first_overflow(summary, config) + _sampling(summary, config)


def _first_overflow(summary: dict[str, Any], config: dict[str, Any]) -> str:
    margin = float(config.get("overflow_margin", HealthConfig.overflow_margin))
    limit = FP16_MAX * (1.0 - margin)
    overflow = summary.get("first_overflow")
    if overflow:
        value = overflow["value"]
        where = f"{overflow['module']} ({overflow['kind']}) at step {overflow['step']}"
        scaled = overflow.get("after_scaled_step")
        if scaled is not None:
            return (
                f"  first float16 output over the limit: {where}, |output| {value}, after "
                f"optimizer.step() applied gradients still multiplied by the loss scale at "
                f"step {scaled} (AMP004)"
            )
        if isinstance(value, str):  # "inf" or "nan": a real overflow
            after = overflow.get("after_nonfinite_step")
            if after is not None:
                return (
                    f"  first non-finite float16 output: {where}, |output| {value}, after the "
                    f"optimizer applied non-finite gradients at step {after} "
                    f"({overflow.get('after_nonfinite_code', 'AMP106')})"
                )
            return f"  first float16 overflow: {where}, |output| {value}"
        return (
            f"  first float16 output near overflow: {where}, |output| {value:g} "
            f"(>= {limit:g}, within {margin:.0%} of 65504)"
        )
    if config.get("activations") is False:
        return "  float16 module outputs: not measured (activations=False: AMP105 is off)"
    if not summary.get("activations_measured", True):
        dtypes = summary.get("autocast_dtypes", ["float16"])
        if not dtypes:
            return "  float16 module outputs of training steps: none seen (no autocast region ran)"
        if "float16" not in dtypes:
            return (
                "  float16 module outputs of training steps: not applicable (autocast ran in "
                f"{', '.join(dtypes)} only)"
            )
        if summary.get("compiled"):
            return (
                "  float16 module outputs of training steps: none seen (float16 ran only "
                "inside compiled code, where outputs are not measured)"
            )
        return "  float16 module outputs of training steps: none seen"
    # Of training steps: an evaluation (no grad, no training forward in its autocast
    # region) is not measured, and may overflow where training does not.
    return (
        f"  float16 module outputs of training steps: none reached {limit:g}, the AMP105 "
        f"threshold (overflow_margin {margin:.0%} below float16's largest value, 65504; "
        "evaluation forwards are not measured)"
    )


def _sampling(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """Which iterations AMP105 measured, where it skipped some (see activations.py)."""
    measured = summary.get("activation_iterations_measured")
    seen = summary.get("activation_iterations")
    if measured is None or seen is None or measured >= seen:
        return ""
    first = config.get("activations_first", HealthConfig.activations_first)
    every = config.get("activations_every", HealthConfig.activations_every)
    start = f"every one of the first {first}, then " if first else ""
    return (
        f"; measured on {measured} of {seen} iterations: {start}one in {every} and every one "
        "after a skipped step"
    )


def _rebuilt_per_site(
    scalers: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The scalers shown one by one, and those of each line that built many, grouped."""
    by_site: dict[str, list[dict[str, Any]]] = {}
    for entry in scalers:
        if entry.get("rebuilt_every_step"):
            by_site.setdefault(entry["site"], []).append(entry)
    rebuilt = {site: group for site, group in by_site.items() if len(group) > REBUILT_FROM}
    grouped = {id(entry) for group in rebuilt.values() for entry in group}
    return [entry for entry in scalers if id(entry) not in grouped], rebuilt


def format_health_summary(summary: dict[str, Any]) -> str:
    config = summary.get("config") or {}
    steps = summary.get("steps", 0)
    if not steps:
        optimizer_steps = summary.get("optimizer_steps") or 0
        if optimizer_steps and summary.get("gradscalers_built") == 0:
            return (
                f"amplint: numerical health: {optimizer_steps} training step(s) ran and no "
                "GradScaler was built: no loss-scale statistics (only float16 autocast needs one)"
            )
        if optimizer_steps:
            return (
                f"amplint: numerical health: {optimizer_steps} training step(s) ran, none "
                "followed by update() of an enabled GradScaler: no loss-scale statistics"
            )
        return "amplint: numerical health: no optimizer step ran, nothing measured"
    scalers = [entry for entry in summary.get("scalers") or [] if entry.get("steps")]
    bfloat16_only = summary.get("autocast_dtypes") == ["bfloat16"]
    if len(scalers) <= 1:
        skipped = summary.get("skipped_steps", 0)
        lines = [
            f"amplint: numerical health over {steps} step(s): {skipped} skipped "
            f"({skipped / steps:.1%})"
        ]
        lines.extend(_scaler_lines(summary, config, "  ", bfloat16_only))
    else:
        lines = [f"amplint: numerical health of {len(scalers)} GradScalers:"]
        scalers, rebuilt = _rebuilt_per_site(scalers)
        for site, group in rebuilt.items():
            count = sum(entry["steps"] for entry in group)
            skipped = sum(entry.get("skipped_steps", 0) for entry in group)
            lines.append(
                f"  {len(group)} GradScalers constructed one after another at {site} (AMP010): "
                f"{count} step(s) in all, {skipped} skipped ({skipped / count:.1%})"
            )
        for entry in scalers:
            count, skipped = entry["steps"], entry.get("skipped_steps", 0)
            lines.append(
                f"  GradScaler constructed at {entry.get('label') or entry['site']}: "
                f"{count} step(s), "
                f"{skipped} skipped ({skipped / count:.1%})"
            )
            lines.extend(_scaler_lines(entry, config, "    ", bfloat16_only))
    lines.append(_overflow_line(summary, config))
    return "\n".join(lines)
