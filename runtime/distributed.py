"""``torch.distributed``: the instrumented ``ShardedGradScaler``.

The usage checks need nothing distributed: each rank is a process with its own state
machine and findings. What this module adds:

* ``ShardedGradScaler``: FSDP's scaler with the same checks as our ``GradScaler``, built
  (on first use, see :func:`sharded_grad_scaler`) by putting our ``GradScaler`` in front
  of torch's ``ShardedGradScaler`` in the method resolution order. Every method of ours
  calls ``super()``, which then reaches torch's sharded implementation (and its
  ``all_reduce`` of ``found_inf``): one set of checks, no copy, numerics and collectives
  exactly torch's. ``install()`` patches it in (see :func:`scaler_targets`).
* Numerical health needs no collective of its own: the skipped-step flags it records are
  the ``found_inf`` tensors that ``ShardedGradScaler`` already all-reduces (with DDP the
  gradients themselves are all-reduced, so every rank sees the same overflow); the rest
  (losses, activations) is per rank and is combined when the reports are merged
  (``rank_reports.py``; which rank this is: ``ranks.py``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import inspect
import sys
import threading
import types
from typing import Any

import torch

from .scaler import GradScaler
from .session import SESSION

__all__ = [
    "scaler_targets",
    "sharded_grad_scaler",
    "unwatch_imports",
    "watch_imports",
]


# ShardedGradScaler -----------------------------------------------------------------------

_sharded_class: type[GradScaler] | None = None
_sharded_lock = threading.Lock()
_torch_class: Any = None


def _torch_sharded() -> Any:
    """torch's ``ShardedGradScaler`` (importing FSDP), or None where torch has none."""
    global _torch_class
    if _torch_class is None and torch.distributed.is_available():
        try:
            from torch.distributed.fsdp import sharded_grad_scaler
        except ImportError:  # pragma: no cover - a torch built without FSDP
            return None
        found = sharded_grad_scaler.ShardedGradScaler
        # Asked first while our class is patched in: torch's is the one it derives from.
        _torch_class = found.__mro__[2] if found is _sharded_class else found
    return _torch_class


def sharded_grad_scaler() -> type[GradScaler] | None:
    """Our ``ShardedGradScaler`` class (built on first use: importing FSDP takes seconds,
    which a process that never shards should not pay), or None without FSDP."""
    global _sharded_class
    with _sharded_lock:
        if _sharded_class is not None:
            return _sharded_class
        torch_class = _torch_sharded()
        if torch_class is None:
            return None
        # torch's default process group: dist.group.WORLD as it was when FSDP was imported
        default_group = inspect.signature(torch_class.__init__).parameters["process_group"]

        class ShardedGradScaler(GradScaler, torch_class):  # type: ignore[misc,valid-type]
            """Drop-in for ``torch.distributed.fsdp.sharded_grad_scaler.ShardedGradScaler``
            that reports AMP misuse while training (the checks of :class:`GradScaler`)."""

            _stands_in_for = torch_class

            def __init__(
                self,
                device: str = "cuda",
                init_scale: float = 2.0**16,
                backoff_factor: float = 0.5,
                growth_factor: float = 2.0,
                growth_interval: int = 2000,
                enabled: bool = True,
                process_group: Any = default_group.default,
            ) -> None:
                # Our GradScaler.__init__ passes keywords on to the next class in the MRO:
                # torch's ShardedGradScaler.__init__ (its default group, replaced below).
                GradScaler.__init__(
                    self,
                    device,
                    init_scale=init_scale,
                    growth_factor=growth_factor,
                    backoff_factor=backoff_factor,
                    growth_interval=growth_interval,
                    enabled=enabled,
                )
                if self._enabled:
                    self.process_group = process_group

        ShardedGradScaler.__module__ = __name__
        ShardedGradScaler.__qualname__ = "ShardedGradScaler"
        _sharded_class = ShardedGradScaler
        return _sharded_class


def __getattr__(name: str) -> Any:
    # ``from amplint.runtime.distributed import ShardedGradScaler``; also what pickle uses.
    if name == "ShardedGradScaler":
        cls = sharded_grad_scaler()
        if cls is not None:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MODULE = "torch.distributed.fsdp.sharded_grad_scaler"
_PACKAGE = "torch.distributed.fsdp"


def scaler_targets() -> list[tuple[Any, str, Any]]:
    """``(owner, name, replacement)`` for ``install()``: FSDP's scaler, where the user's
    code imported it already. An import after ``install()`` is patched by
    :func:`watch_imports` (FSDP is never imported just for us: it takes seconds)."""
    if _MODULE not in sys.modules:
        return []
    ours = sharded_grad_scaler()
    torch_class = _torch_sharded()
    if ours is None or torch_class is None:
        return []
    targets: list[tuple[Any, str, Any]] = []
    for name in (_MODULE, _PACKAGE):
        owner = sys.modules.get(name)
        if owner is not None and owner.__dict__.get("ShardedGradScaler") is torch_class:
            targets.append((owner, "ShardedGradScaler", ours))
    return targets


class _PatchingLoader(importlib.abc.Loader):
    """torch's loader of the sharded-scaler module, with our class patched in afterwards."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.inner.create_module(spec)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        # The module keeps no trace of us: torch's loader is its loader.
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        self.inner.exec_module(module)
        _patch_late(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: torch's
        return getattr(self.inner, name)


class _ImportWatcher(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                return spec  # type: ignore[no-any-return]
        return None


def _patch_late(module: types.ModuleType) -> None:
    live = SESSION.live
    if live.import_watcher is None:
        return
    torch_class = module.__dict__.get("ShardedGradScaler")
    ours = sharded_grad_scaler()
    if ours is None or torch_class is None:
        return
    for owner in (module, sys.modules.get(_PACKAGE)):
        if owner is not None and owner.__dict__.get("ShardedGradScaler") is torch_class:
            live.late_patches.append((owner, "ShardedGradScaler", torch_class, ours))
            owner.ShardedGradScaler = ours


def watch_imports() -> None:
    """While installed: patch FSDP's scaler when the user's code first imports it."""
    live = SESSION.live
    if live.import_watcher is not None or _MODULE in sys.modules:
        return
    if not torch.distributed.is_available():
        return
    live.import_watcher = _ImportWatcher()
    sys.meta_path.insert(0, live.import_watcher)


def unwatch_imports() -> None:
    """Undo :func:`watch_imports` and what it patched (a name rebound since is left)."""
    live = SESSION.live
    if live.import_watcher is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(live.import_watcher)
        live.import_watcher = None
    while live.late_patches:
        owner, name, previous, ours = live.late_patches.pop()
        if owner.__dict__.get(name) is ours:
            setattr(owner, name, previous)
