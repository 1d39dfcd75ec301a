"""Instrumented ``autocast`` and ``GradScaler`` that check AMP usage at run time.

    from amplint.runtime import autocast, GradScaler   # drop-in for torch.amp's
    import amplint.runtime as ar
    ar.install(mode="warn")     # or "raise" / "log": patch torch so unmodified code is checked
    ar.report()                 # the findings so far

Where things live: ``scaler.py`` and ``autocast.py`` are the drop-in classes and
``hooks.py`` the wrappers on torch's backward, optimizer steps, clipping and zero_grad: they
only report events to ``usage.py``, the state machine that decides every usage finding
(``state.py`` holds the facts it consults). ``findings.py`` has the messages (names from
``amplint.catalog``), ``reporting.py`` how findings are shown, ``frames.py`` how the user's
line is found, ``install.py`` the patching, ``compiled.py`` what torch.compile needs,
``runner.py`` the ``amplint run`` entry point. ``session.py`` holds the runtime's state in
one object (what an installation put in place, what was found, what the checks remember),
so that ``uninstall()`` and ``reset()`` each bring it back in one call. Numerical health
(AMP101-AMP107, ``install(health=True)``): ``health.py`` (per-scaler device statistics and
the monitor), ``activations.py`` (the float16 forward hook), ``gradstats.py`` (gradient
reductions in bounded memory), ``health_findings.py`` (the host's reading of the statistics),
``summary_text.py`` and ``plot.py`` their summary. ``distributed.py``: FSDP's
``ShardedGradScaler``; ``ranks.py`` which rank this is; ``rank_reports.py`` the per-rank
reports merged by rank 0 under ``torchrun``. ``frameworks.py``: what Lightning, Accelerate and
the HF Trainer do around the user's code. ``notebook.py``: the IPython extension
(``%load_ext amplint.runtime``, the ``%amplint`` magic).

The drop-in classes check on their own (step/unscale_/update order, half parameters,
re-created scalers, bfloat16 with a scaler); checks that watch backward passes, direct
``optimizer.step()`` calls, clipping and ``zero_grad`` need ``install()`` or ``checking()``.
"""

from . import health
from .autocast import autocast, cpu_autocast, cuda_autocast
from .findings import AmpUsageError, AmpWarning, Finding
from .health import HealthConfig
from .install import Checking, checking, install, installed, reset, uninstall
from .notebook import load_ipython_extension, unload_ipython_extension
from .reporting import report
from .scaler import CpuGradScaler, CudaGradScaler, GradScaler

summary = health.summary  # the numerical-health summary (None when health checks never ran)


def __getattr__(name: str) -> object:
    # ShardedGradScaler is built on first use: importing FSDP takes seconds.
    if name == "ShardedGradScaler":
        from . import distributed

        return distributed.ShardedGradScaler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AmpUsageError",
    "AmpWarning",
    "Checking",
    "CpuGradScaler",
    "CudaGradScaler",
    "Finding",
    "GradScaler",
    "HealthConfig",
    "autocast",
    "checking",
    "cpu_autocast",
    "cuda_autocast",
    "install",
    "installed",
    "load_ipython_extension",
    "report",
    "reset",
    "summary",
    "uninstall",
    "unload_ipython_extension",
]
