"""Patching torch (and names user modules imported from it) in place, and undoing it.

Every patch is recorded as ``(owner, name, previous value)`` and ``uninstall()`` puts the
previous values back in reverse order, so torch ends exactly as it started. The state
is one object (``session.py``): ``uninstall()`` takes out what was put in and forgets all
but what was found (readable, and added to, until ``reset()``); ``reset()`` forgets what
was found and seen.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch
import torch.cpu.amp
import torch.cuda.amp
import torch.nn.utils.clip_grad
from torch.optim.optimizer import register_optimizer_step_pre_hook

from . import compiled, distributed, frameworks, hooks, reporting
from . import health as _health
from .autocast import autocast, cpu_autocast, cuda_autocast
from .findings import Finding
from .reporting import get_ignored, get_mode, report, set_ignored, set_mode
from .scaler import CpuGradScaler, CudaGradScaler, GradScaler
from .session import SESSION

__all__ = ["Checking", "checking", "install", "installed", "reset", "uninstall"]

# Modules whose globals are torch's own business (or ours): their references to the
# originals are implementation, not user code, and must keep pointing at torch.
_PRIVATE_PREFIXES = ("torch", "functorch", "amplint", "_pytest", "pytest", "typing")


@dataclass
class _Installation:
    # (owner, name, value before, our replacement)
    patches: list[tuple[Any, str, Any, Any]] = field(default_factory=list)
    hook: Any = None
    # Dynamo's table of context managers it traces natively, and what we added to it.
    dynamo_table: dict[Any, Any] | None = None
    dynamo_added: list[Any] = field(default_factory=list)
    # Our stand-ins that Dynamo judges as torch's functions: id(ours) -> (ours, torch's).
    judged_as: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    # Dynamo's set of logging functions it calls after the graph, and what we added to it.
    reorderable: set[Any] | None = None
    reordered: list[Any] = field(default_factory=list)


# Guards SESSION.live.installation (the current _Installation, None when not installed).
_lock = threading.RLock()


def _current() -> _Installation | None:
    return SESSION.live.installation


def _targets() -> list[tuple[Any, str, Any]]:
    """``(owner, attribute, replacement)`` for everything install() patches on torch."""
    amp = torch.amp
    return [
        (torch, "autocast", autocast),
        (amp, "autocast", autocast),
        # Dynamo recognises autocast by this name (see _teach_dynamo): traced as torch's.
        (amp.autocast_mode, "autocast", autocast),
        (torch, "GradScaler", GradScaler),
        (amp, "GradScaler", GradScaler),
        (torch.cuda.amp, "autocast", cuda_autocast),
        (torch.cuda.amp, "GradScaler", CudaGradScaler),
        (torch.cpu.amp, "autocast", cpu_autocast),
        (torch.cpu.amp, "GradScaler", CpuGradScaler),
        (torch.autograd, "backward", hooks.wrap_backward(torch.autograd.backward)),
        (torch.autograd, "grad", hooks.wrap_grad(torch.autograd.grad)),
        # clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
        (
            torch.nn.utils,
            "clip_grad_norm_",
            hooks.wrap_clip(torch.nn.utils.clip_grad_norm_, error_if_nonfinite_at=2),
        ),
        (torch.nn.utils, "clip_grad_value_", hooks.wrap_clip(torch.nn.utils.clip_grad_value_)),
        *_split_clip_targets(),
        (
            torch.optim.Optimizer,
            "zero_grad",
            hooks.wrap_optimizer_zero_grad(torch.optim.Optimizer.zero_grad),
        ),
        (torch.nn.Module, "zero_grad", hooks.wrap_module_zero_grad(torch.nn.Module.zero_grad)),
        (torch, "compile", _wrap_compile(torch.compile)),
        # FSDP's ShardedGradScaler, if imported (later imports: watch_imports)
        *distributed.scaler_targets(),
    ]


def _split_clip_targets() -> list[tuple[Any, str, Any]]:
    """torch 2.6's split clip, where this torch has it. Only the public names: torch's own
    ``clip_grad_norm_`` calls ``clip_grad._get_total_norm`` and ``_clip_grads_with_norm_``,
    which stay torch's (one clip, checked once)."""
    utils = torch.nn.utils
    found = []
    total_norm = utils.__dict__.get("get_total_norm")
    if total_norm is not None:
        found.append((utils, "get_total_norm", hooks.wrap_total_norm(total_norm)))
    clip = utils.__dict__.get("clip_grads_with_norm_")
    if clip is not None:
        # clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
        found.append((utils, "clip_grads_with_norm_", hooks.wrap_clip(clip, total_norm_at=1)))
    return found


def _wrap_compile(original: Any) -> Any:
    """``torch.compile``: torch's, and the first compiled module makes amplint's global
    forward hook step aside while compiled modules run (see ``compiled.py``)."""

    @functools.wraps(original)
    def compile(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        reporting.run_check("the torch.compile() patch", _compile_called)
        return result

    return compile


def _compile_called() -> None:
    # Dynamo guards on the global hook table: from now on the hook stays in it.
    SESSION.live.compile_called = True
    _health.keep_hook_in()
    _after_compile()


def _after_compile() -> None:
    """Once torch._dynamo is loaded: trace amplint's autocast classes as torch's own, and
    let compiled modules run without amplint's global forward hook."""
    with _lock:
        installation = _current()
        if installation is None:
            return
        _teach_dynamo(installation)
        reporting.run_check("the torch.compile() patch", _watch_traced_autocast, installation)
        reporting.run_check("the torch.compile() patch", _skip_like_torch, installation)
        eval_frame = sys.modules.get("torch._dynamo.eval_frame")
        owner = getattr(eval_frame, "OptimizedModule", None)
        if owner is None or any(patch[0] is owner for patch in installation.patches):
            return
        previous = owner.__dict__["__call__"]
        ours = compiled.call_without_global_hook(previous, _health.hook_id)
        installation.patches.append((owner, "__call__", previous, ours))
        owner.__call__ = ours


def _teach_dynamo(installation: _Installation) -> None:
    # Dynamo traces torch's autocast classes natively (no graph break, no extra graph);
    # a subclass it does not know would be inlined as user code. Ours behave as torch's
    # inside a graph, where amplint has nothing to check.
    module = sys.modules.get("torch._dynamo.variables.torch")
    table = getattr(module, "supported_ctx_manager_classes", None)
    if not isinstance(table, dict) or installation.dynamo_table is not None:
        return
    installation.dynamo_table = table
    for cls in (autocast, cpu_autocast, cuda_autocast):
        if cls not in table:
            table[cls] = None
            installation.dynamo_added.append(cls)


def _watch_traced_autocast(installation: _Installation) -> None:
    """An autocast region inside compiled code never enters amplint's class: Dynamo builds
    its own variable for it, once, while tracing. That is where its dtype is learnt (a
    float16 region in a compiled forward makes a GradScaler right, not AMP014)."""
    module = sys.modules.get("torch._dynamo.variables.ctx_manager")
    owner = getattr(module, "AutocastModeVariable", None)
    previous = owner.__dict__.get("create") if owner is not None else None
    if not isinstance(previous, staticmethod) or any(
        patch[0] is owner for patch in installation.patches
    ):
        return
    create = previous.__func__

    @functools.wraps(create)
    def traced(*args: Any, **kwargs: Any) -> Any:
        variable = create(*args, **kwargs)
        values = getattr(variable, "target_values", None)
        reporting.run_check("the compiled autocast region check", compiled.note_traced, values)
        return variable

    installation.patches.append((owner, "create", previous, staticmethod(traced)))
    owner.create = staticmethod(traced)


def _skip_like_torch(installation: _Installation) -> None:
    """torch's GradScaler, ``Optimizer.zero_grad`` and ``autograd.backward``/``grad`` are
    never traced: Dynamo breaks the graph at the call and runs it eagerly, compiling the
    frames it calls (the user's ``optimizer.step``). Our stand-ins get the same treatment,
    for torch's reasons (:func:`_judge_like_torch`), and amplint's bookkeeping (everything
    under ``run_check``) runs eagerly and whole: traced, it made more graphs and breaks than
    plain torch (12 graphs for 3 in a compiled training step) and Dynamo warnings about
    ``sys._getframe``. The optimizer hook runs after the graph (:func:`_replay_step_hook`).
    Dynamo's counters (graphs, frames, breaks and their reasons) are then plain torch's."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    dynamo_types = sys.modules.get("torch._dynamo.types")
    set_strategy = getattr(eval_frame, "set_code_exec_strategy", None)
    strategy = getattr(dynamo_types, "FrameExecStrategy", None)
    action = getattr(dynamo_types, "FrameAction", None)
    if set_strategy is None or strategy is None or action is None:
        return
    stand_ins = _stand_ins(installation)
    judged = _judge_like_torch(installation, stand_ins)
    replayed = _replay_step_hook(installation)
    done: set[types.CodeType] = set()
    for ours, torchs in stand_ins:
        done.add(ours.__code__)
        if not judged or torchs is None:
            # Never inlined: the graph breaks at the call, for a reason of its own where this
            # Dynamo cannot judge it as torch's (our GradScaler's helpers have no torch twin).
            ours._torchdynamo_disable = True
        set_strategy(ours.__code__, strategy(action.SKIP, action.DEFAULT))
    # Bookkeeping: neither its frame nor any frame it calls is compiled. The optimizer hook
    # is replayed after the graph when this Dynamo can (see _replay_step_hook); else it is
    # never inlined, and the graph breaks in torch's optimizer wrapper, which then runs
    # eagerly: the hook still runs, but the counts of frames and breaks are not torch's.
    bookkeeping: list[Any] = [reporting.run_check, hooks.optimizer_step_pre_hook]
    for function in bookkeeping:
        done.add(function.__code__)
        if not (replayed and function is hooks.optimizer_step_pre_hook):
            function._torchdynamo_disable = True
        set_strategy(function.__code__, strategy(action.SKIP, action.SKIP))
    # Every other frame of amplint's that runs eagerly while a compiled function runs (the
    # helpers the stand-ins call, outside `run_check`) is skipped as torch's own files are:
    # plain torch has no such frames for Dynamo to look at. The frames they call (the
    # user's `optimizer.step`) are compiled as they are without amplint. Inlining, where
    # Dynamo traces a call of amplint's (the clip wrapper), is not affected.
    for code in compiled.own_code_objects():
        if code not in done:
            set_strategy(code, strategy(action.SKIP, action.DEFAULT))


def _stand_ins(installation: _Installation) -> list[tuple[types.FunctionType, Any]]:
    """Our functions that take the place of torch's never-traced ones, each with torch's
    function it calls in the end (None for our GradScaler's own helpers)."""
    never_traced = {
        (torch.autograd, "backward"),
        (torch.autograd, "grad"),
        (torch.optim.Optimizer, "zero_grad"),
    }
    found: dict[int, tuple[types.FunctionType, Any]] = {}
    for owner, name, previous, ours in installation.patches:
        if isinstance(ours, type) and issubclass(ours, torch.amp.GradScaler):
            torchs_class = getattr(ours, "_stands_in_for", torch.amp.grad_scaler.GradScaler)
            for attribute, function in vars(ours).items():
                if isinstance(function, types.FunctionType):
                    torchs = inspect.getattr_static(torchs_class, attribute, None)
                    if not isinstance(torchs, types.FunctionType):
                        torchs = None
                    found[id(function)] = (function, torchs)
        elif (owner, name) in never_traced and isinstance(ours, types.FunctionType):
            found[id(ours)] = (ours, previous if isinstance(previous, types.FunctionType) else None)
    scheduler = SESSION.live.scheduler_patch  # torch's LR schedulers are skipped files
    if scheduler is not None:
        found[id(scheduler[2])] = (scheduler[2], scheduler[1])
    return list(found.values())


def _judge_like_torch(
    installation: _Installation, stand_ins: list[tuple[types.FunctionType, Any]]
) -> bool:
    """Dynamo decides by the function it finds (its file, its name) whether to inline a
    call, and says why not. Asked about one of our stand-ins, it is asked about torch's
    function instead: it breaks the graph where plain torch does, for torch's reason word
    for word (``counters["graph_break"]`` is keyed by it), and the call that then runs
    eagerly is ours. False where this Dynamo has no such decision to patch."""
    convert = sys.modules.get("torch._dynamo.symbolic_convert")
    owner = getattr(convert, "InliningInstructionTranslator", None)
    previous = owner.__dict__.get("check_inlineable") if owner is not None else None
    variables = sys.modules.get("torch._dynamo.variables")
    function_variable = getattr(variables, "UserFunctionVariable", None)
    if not isinstance(previous, staticmethod) or function_variable is None:
        return False
    judged = installation.judged_as
    # Updated in place, never emptied: Dynamo may be compiling in another thread. The
    # LR-scheduler patch comes and goes with the health checks.
    wanted = {id(ours): (ours, torchs) for ours, torchs in stand_ins if torchs is not None}
    judged.update(wanted)
    for key in [key for key in judged if key not in wanted]:
        judged.pop(key, None)
    if any(patch[0] is owner for patch in installation.patches):
        return True

    def torchs_function(function: object) -> Any:
        # By id: Dynamo hands over any callable, hashable or not.
        entry = judged.get(id(function))
        return entry[1] if entry is not None and entry[0] is function else None

    check = previous.__func__

    @functools.wraps(check)
    def check_inlineable(func: Any) -> Any:
        original = torchs_function(getattr(func, "fn", None))
        return check(func if original is None else function_variable(original))

    _patch(installation, owner, "check_inlineable", staticmethod(check_inlineable))
    # A stand-in Dynamo knows by its name (``torch.autograd.backward``, copied from torch's
    # by functools.wraps) is not inlined but called as a skipped function, whose reason and
    # explanation come from the function's file.
    skipped = getattr(variables, "SkipFunctionVariable", None)
    call = skipped.__dict__.get("call_function") if skipped is not None else None
    if isinstance(call, types.FunctionType):

        @functools.wraps(call)
        def call_function(self: Any, tx: Any, args: Any, kwargs: Any) -> Any:
            original = torchs_function(getattr(self, "value", None))
            if original is not None:
                self = skipped(original, source=self.source)
            return call(self, tx, args, kwargs)

        _patch(installation, skipped, "call_function", call_function)
    return True


def _patch(installation: _Installation, owner: Any, name: str, ours: Any) -> None:
    installation.patches.append((owner, name, owner.__dict__[name], ours))
    setattr(owner, name, ours)


def _replay_step_hook(installation: _Installation) -> bool:
    """amplint's global ``optimizer.step()`` pre-hook, met by Dynamo in torch's optimizer
    wrapper, is called eagerly right after the graph, as Dynamo calls the logging functions
    it may reorder (``torch._dynamo.config.reorderable_logging_functions``). No graph break:
    the wrapper compiles into the frames and breaks plain torch gives it, and the checks
    still see every step. False where this Dynamo cannot."""
    config = sys.modules.get("torch._dynamo.config")
    table = getattr(config, "reorderable_logging_functions", None)
    misc = sys.modules.get("torch._dynamo.variables.misc")
    owner = getattr(misc, "DebuggingVariable", None)
    can_reorder = owner.__dict__.get("can_reorder_logs") if owner is not None else None
    call = owner.__dict__.get("call_function") if owner is not None else None
    if (
        not isinstance(table, set)
        or not isinstance(can_reorder, staticmethod)
        or not isinstance(call, types.FunctionType)
    ):
        return False
    hook = hooks.optimizer_step_pre_hook
    if installation.reorderable is None:
        installation.reorderable = table
        if hook not in table:
            table.add(hook)
            installation.reordered.append(hook)
    if any(patch[0] is owner for patch in installation.patches):
        return True
    check = can_reorder.__func__

    @functools.wraps(check)
    def can_reorder_logs(fn: Any, args: Any, kwargs: Any) -> bool:
        # torch's logging functions take tensors and constants; the hook is given the
        # optimizer alone (see call_function), which Dynamo loads back from where it read it.
        return (fn is hook and len(args) == 1 and not kwargs) or bool(check(fn, args, kwargs))

    @functools.wraps(call)
    def call_function(self: Any, tx: Any, args: Any, kwargs: Any) -> Any:
        if getattr(self, "value", None) is hook and args:
            # The hook reads the optimizer only: the step's own arguments (a closure, a
            # tensor) need not be loaded back after the graph, or become its outputs.
            args, kwargs = list(args)[:1], {}
            # Dynamo calls what the frame it compiles recorded, and forgets what an inlined
            # call recorded: the optimizer wrapper inlined into the user's compiled step (an
            # optimizer of the user's with no graph break) would never call the hook.
            root = getattr(getattr(tx, "output", None), "root_tx", None)
            if isinstance(getattr(root, "debug_locals", None), list):
                tx = root
        return call(self, tx, args, kwargs)

    _patch(installation, owner, "can_reorder_logs", staticmethod(can_reorder_logs))
    _patch(installation, owner, "call_function", call_function)
    return True


def _extra_clip_targets(replacements: dict[int, tuple[Any, Any]]) -> list[tuple[Any, str, Any]]:
    # torch.nn.utils.clip_grad holds the same functions under the same names.
    module = torch.nn.utils.clip_grad
    found = []
    for name in ("clip_grad_norm_", "clip_grad_value_"):
        value = module.__dict__.get(name)
        entry = replacements.get(id(value))
        if entry is not None and entry[0] is value:
            found.append((module, name, entry[1]))
    return found


def _user_modules() -> Iterator[ModuleType]:
    for name, module in list(sys.modules.items()):
        if module is None or name.startswith(_PRIVATE_PREFIXES):
            continue
        if isinstance(module, ModuleType):
            yield module


def _module_targets(replacements: dict[int, tuple[Any, Any]]) -> list[tuple[Any, str, Any]]:
    """Names in user modules bound to torch's originals, e.g. an earlier
    ``from torch.amp import GradScaler`` in ``__main__``."""
    found = []
    for module in _user_modules():
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for name, value in items:
            entry = replacements.get(id(value))
            if entry is not None and entry[0] is value:
                found.append((module, name, entry[1]))
    return found


def install(
    mode: str = "warn",
    *,
    ignore: Iterable[str] = (),
    health: bool | None = None,
    **thresholds: Any,
) -> None:
    """Patch torch so that unmodified training code is checked.

    ``mode`` is ``"warn"``, ``"raise"`` or ``"log"``; ``ignore`` lists codes not to
    report. ``health=True`` also turns on the numerical-health checks (AMP101-AMP107,
    see ``health.py``); keyword ``thresholds`` are the fields of
    :class:`~amplint.runtime.health.HealthConfig` (``every``, ``overflow_margin``,
    ``min_scale``, ``max_backoffs``, ``skip_rate``, ``skip_window``, ``underflow_share``,
    ``startup_steps``, ``activations``) and imply ``health=True`` unless it is ``False``.
    Calling it again only changes the mode, the ignored codes and the health settings.
    """
    config = _health.HealthConfig(**thresholds)  # TypeError/ValueError before patching
    reporting.check_mode(mode)  # ValueError before anything changes
    if health is None:
        health = bool(thresholds)
    with _lock:
        if _current() is not None:
            set_mode(mode)
            set_ignored(ignore)
            if health:
                _health.enable(config)
            return
        set_mode(mode)
        set_ignored(ignore)
        installation = _Installation()
        targets = _targets()
        replacements = {
            id(owner.__dict__[name]): (owner.__dict__[name], new) for owner, name, new in targets
        }
        targets += _extra_clip_targets(replacements)
        targets += _module_targets(replacements)
        try:
            for owner, name, new in targets:
                installation.patches.append((owner, name, owner.__dict__[name], new))
                setattr(owner, name, new)
            installation.hook = register_optimizer_step_pre_hook(hooks.optimizer_step_pre_hook)
            distributed.watch_imports()  # FSDP's scaler, when imported later
            frameworks.install()  # HF Trainer / Accelerate / Lightning frames are machinery
        except BaseException:
            _undo(installation)
            raise
        SESSION.live.installation = installation
        _after_compile()  # torch._dynamo loaded, or modules compiled, before install()
        if health:
            _health.enable(config)


def _undo(installation: _Installation) -> None:
    distributed.unwatch_imports()
    if installation.dynamo_table is not None:
        for cls in installation.dynamo_added:
            installation.dynamo_table.pop(cls, None)
        installation.dynamo_added.clear()
    if installation.reorderable is not None:
        for function in installation.reordered:
            installation.reorderable.discard(function)
        installation.reordered.clear()
    if installation.hook is not None:
        installation.hook.remove()
    for owner, name, previous, ours in reversed(installation.patches):
        # A name rebound since install() (by the user, or by another tool patching after
        # us) is theirs now: leave it.
        if owner.__dict__.get(name) is ours:
            setattr(owner, name, previous)
    installation.patches.clear()


def uninstall() -> None:
    """Undo :func:`install` exactly and forget what the checks remembered, but not what they
    found: ``report()``, ``summary()`` and the internal errors stay readable (and later
    installations add to them) until :func:`reset`. A no-op when not installed."""
    with _lock:
        installation = _current()
        if installation is None:
            return
        try:
            _health.disable()
        except Exception as error:  # amplint's bug: torch is put back all the same
            reporting.internal_error("turning the numerical-health checks off", error)
        finally:
            try:
                _undo(installation)
            finally:
                SESSION.end()


def installed() -> bool:
    return _current() is not None


def reset() -> None:
    """Forget findings, the step count, the autocast regions and scaler sites seen: a clean
    slate between experiments (or tests) in one process. An installation and its health
    checks stay on."""
    SESSION.reset()
    _health.restart()


class Checking:
    """What :func:`checking` yields: the findings recorded while the block ran."""

    def __init__(self) -> None:
        self._before = {(f.code, f.filename, f.line): f.count for f in report()}
        # The first occurrence of each finding in the block: one made at a line that had
        # one before the block (the same training helper run twice) has its own step.
        # Filled while checking() holds the block open (see open() and close()).
        self._first: dict[tuple[str, str, int], tuple[int, str]] = {}

    def open(self) -> None:
        SESSION.results.watchers.append(self._first)

    def close(self) -> None:
        watchers = SESSION.results.watchers
        if any(watcher is self._first for watcher in watchers):
            watchers[:] = [watcher for watcher in watchers if watcher is not self._first]

    @property
    def findings(self) -> list[Finding]:
        new = []
        for finding in report():
            key = (finding.code, finding.filename, finding.line)
            seen = self._before.get(key, 0)
            if finding.count > seen:
                finding.count -= seen
                if seen and key in self._first:
                    finding.first_step, finding.message = self._first[key]
                new.append(finding)
        return new

    @property
    def codes(self) -> list[str]:
        return [finding.code for finding in self.findings]


@contextmanager
def checking(
    mode: str = "warn",
    *,
    ignore: Iterable[str] = (),
    health: bool | None = None,
    **thresholds: Any,
) -> Iterator[Checking]:
    """``install()`` for the duration of a block; mode, ignored codes, health checks and
    installation are put back as they were afterwards."""
    was_installed = installed()
    was_health = _health.active() is not None
    previous_mode, previous_ignored = get_mode(), get_ignored()
    install(mode, ignore=ignore, health=health, **thresholds)
    block = Checking()
    block.open()
    try:
        yield block
    finally:
        try:
            # The health statistics still unread are the block's: read them while it is
            # open (uninstall() and disable() do; health left on by an outer install()
            # would report them later, outside the block).
            if not was_installed:
                uninstall()
            elif not was_health:
                _health.disable()
            else:
                _health.flush()
        finally:
            block.close()
            set_mode(previous_mode)
            set_ignored(previous_ignored)
