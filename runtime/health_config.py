"""The thresholds of the numerical-health findings (``install(health=True, **these)``,
``amplint run --these``); float16's limits they refer to."""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["FP16_MAX", "FP16_MIN_NORMAL", "REBUILT_FROM", "HealthConfig", "config_fields"]

FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14
#: More scalers than this from one line are a scaler rebuilt in the loop (AMP010): the
#: summary counts them as one, and its text gives them one line, not a block each.
REBUILT_FROM = 3


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the numerical-health findings (``install(health=True, **these)``)."""

    #: steps between two hand-overs of the device statistics to the host
    every: int = 16
    #: AMP105: a float16 output at or above ``65504 * (1 - overflow_margin)``, or non-finite
    overflow_margin: float = 0.5
    #: AMP102: the loss scale fell below this ...
    min_scale: float = 1.0
    #: ... or backed off on this many consecutive steps
    max_backoffs: int = 12
    #: AMP103: at least this share of the last ``skip_window`` steps were skipped
    skip_rate: float = 0.25
    skip_window: int = 100
    #: AMP104: share of gradient values below float16's smallest normal at the current scale
    underflow_share: float = 0.1
    #: the gradient statistics of AMP104 (counts over every gradient value) are taken on
    #: one step in this many, starting with step 0
    underflow_every: int = 16
    #: AMP107 stays silent during the first steps, where backoffs are normal
    startup_steps: int = 100
    #: AMP107: the scheduler stepped after skipped optimizer steps on at least this share of
    #: the steps since ``startup_steps`` (counted over at least ``skip_window`` steps): the
    #: schedule ran that far ahead. A skip now and then (the scaler probing a larger scale
    #: every ``growth_interval`` steps) moves it by a negligible share.
    schedule_drift: float = 0.02
    #: forward hooks on every module for AMP105
    activations: bool = True
    #: AMP105 measures the float16 outputs of every iteration until this many ...
    activations_first: int = 100
    #: ... then of one iteration in this many, and of every iteration after a skipped step
    activations_every: int = 16

    def __post_init__(self) -> None:
        for name in (
            "every",
            "max_backoffs",
            "skip_window",
            "underflow_every",
            "activations_every",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("startup_steps", "activations_first"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("overflow_margin", "skip_rate", "underflow_share", "schedule_drift"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        if self.min_scale < 0:
            raise ValueError(f"min_scale must be >= 0, got {self.min_scale!r}")

    @property
    def activation_limit(self) -> float:
        return FP16_MAX * (1.0 - self.overflow_margin)


def config_fields() -> tuple[str, ...]:
    return tuple(field.name for field in fields(HealthConfig))
