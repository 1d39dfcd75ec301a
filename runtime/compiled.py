"""torch.compile: what compilation does is torch's business, not the user's.

Two things amplint must not disturb or misread:

* While a graph is being traced (Dynamo, then AOTAutograd tracing the backward of a
  compiled forward, cold cache), torch runs backward passes and autocast regions on fake
  tensors. They are not the user's calls: :func:`tracing` tells the checks to stay quiet.
* The numerical-health forward hook is a *global* module hook. torch warns about global
  hooks when a ``torch.compile(module)`` is called, and Dynamo traces ``__call__`` with the
  hook instead of ``forward``, which adds a graph. While an ``OptimizedModule`` runs, the
  hook is taken out of torch's table (:func:`call_without_global_hook`): inside compiled
  code it could not see the float16 outputs anyway.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from .session import SESSION
from .state import autocast_active, note_autocast_seen

__all__ = [
    "call_without_global_hook",
    "hook_may_step_aside",
    "note_backward_traced",
    "note_traced",
    "own_code_objects",
    "replace_hook",
    "set_hook_present",
    "tracing",
]


def _tracing_context() -> Any:
    guards = sys.modules.get("torch._guards")
    if guards is None:
        return None
    return guards.TracingContext.try_get()


def _fake(tensor: Any) -> bool:
    fake = sys.modules.get("torch._subclasses.fake_tensor")
    return fake is not None and isinstance(tensor, torch.Tensor) and fake.is_fake(tensor)


def tracing(roots: tuple[Any, ...] = ()) -> bool:
    """Whether this call comes from torch tracing a graph rather than from the user.

    Cheap on the eager path: until torch._dynamo was imported, nothing is compiled.
    """
    if "torch._dynamo" not in sys.modules:
        return False
    if torch.compiler.is_compiling() or _tracing_context() is not None:
        return True
    return any(_fake(root) for root in roots)


# A compiled region's backward traced under the caller's autocast -----------------------


def note_backward_traced(autocast_on: bool) -> None:
    """AOTAutograd traced a compiled region's backward while autocast was on around it.

    With ``torch._functorch.config.backward_pass_autocast == "same_as_forward"`` (torch's
    default in some releases, PyTorch issue #153044) that backward runs under autocast,
    which eager mode never does: the gradients can differ from eager's. Said once, on
    stderr (a note about torch's setting, not a finding about the user's code).
    """
    history = SESSION.history
    if history.backward_note_said or not autocast_on:
        return
    config = sys.modules.get("torch._functorch.config")
    setting = getattr(config, "backward_pass_autocast", None)
    if setting != "same_as_forward":
        return
    history.backward_note_said = True
    print(
        "amplint: note: torch compiled the backward of a region called inside autocast, under "
        "that autocast (torch._functorch.config.backward_pass_autocast = 'same_as_forward'); "
        "eager mode runs a backward called outside autocast without it, so gradients can "
        "differ. Set "
        "torch._functorch.config.backward_pass_autocast = 'off' to match eager "
        "(PyTorch issue #153044).",
        file=sys.stderr,
    )


# The global forward hook taken out while compiled modules run ---------------------------

# Guards SESSION.live.suspended_hooks: hook id -> (depth, hook)
_lock = threading.Lock()


def note_traced(values: object) -> None:
    """A region Dynamo traced, ``(device_type, dtype, enabled, cache_enabled)``: its device
    and dtype join those the run has seen (not the iteration's own state: the region runs
    in every call of the compiled code, traced once)."""
    if not isinstance(values, (list, tuple)) or len(values) < 3:
        return
    device, dtype, enabled = values[0], values[1], values[2]
    if enabled is False or not isinstance(device, str):
        return
    if dtype is None:
        dtype = torch.get_autocast_dtype(device)
    if isinstance(dtype, torch.dtype):
        note_autocast_seen(device, dtype)
        if dtype is torch.float16 and torch.is_grad_enabled():
            SESSION.history.compiled_float16 = True


def _take_out(hook_id: int) -> None:
    table = torch.nn.modules.module._global_forward_hooks
    with _lock:
        suspended = SESSION.live.suspended_hooks
        entry = suspended.get(hook_id)
        if entry is not None:
            suspended[hook_id] = (entry[0] + 1, entry[1])
            return
        hook = table.pop(hook_id, None)
        if hook is not None:
            suspended[hook_id] = (1, hook)


def _put_back(hook_id: int, still_wanted: bool) -> None:
    table = torch.nn.modules.module._global_forward_hooks
    with _lock:
        suspended = SESSION.live.suspended_hooks
        entry = suspended.get(hook_id)
        if entry is None:
            return
        depth, hook = entry
        if depth > 1:
            suspended[hook_id] = (depth - 1, hook)
            return
        del suspended[hook_id]
        # Health checks turned off meanwhile (the handle was removed while out): stay out.
        if still_wanted:
            _reinsert(table, hook_id, hook)


def _reinsert(table: Any, hook_id: int, hook: Callable[..., Any]) -> None:
    """The hook back where it was: ahead of the hooks registered after it (ids grow), which
    may replace the outputs it measures."""
    table[hook_id] = hook
    for later in [key for key in table if key > hook_id]:
        table.move_to_end(later)


def hook_may_step_aside() -> bool:
    """Whether amplint's global hook may leave torch's table between iterations (AMP105's
    sampling): not once anything was compiled or ``torch.compile`` called, since Dynamo
    guards on the table, and a hook that comes and goes would recompile graphs that call
    modules. Then it stays in, and returns at once on iterations not measured."""
    live = SESSION.live
    if live.compile_called:
        return False
    if _dynamo_compiled():
        live.compile_called = True  # for good
        return False
    return True


def _dynamo_compiled() -> bool:
    """Whether Dynamo compiled (or looked at) any frame in this process: its frame ids
    (reset only by ``torch._dynamo.reset()``, which drops the compiled graphs too), or else
    its counters (code that counts graphs may clear them after a warm-up). A frame Dynamo
    looked at and left, or ``torch.export``, counts as well: the hook then only stays in."""
    convert_frame = sys.modules.get("torch._dynamo.convert_frame")
    if getattr(convert_frame, "FRAME_COUNTER", 0):
        return True
    utils = sys.modules.get("torch._dynamo.utils")
    counters = getattr(utils, "counters", None)
    return counters is not None and bool(counters["frames"]["total"])


def set_hook_present(hook_id: int, hook: Callable[..., Any], present: bool) -> None:
    """Put amplint's global hook in torch's table or take it out; while a compiled module
    runs (the hook is suspended), leave it to :func:`call_without_global_hook`."""
    table = torch.nn.modules.module._global_forward_hooks
    with _lock:
        if hook_id in SESSION.live.suspended_hooks:
            return
        if not present:
            table.pop(hook_id, None)
        elif hook_id not in table:
            _reinsert(table, hook_id, hook)


def replace_hook(hook_id: int, hook: Callable[..., Any]) -> None:
    """Put ``hook`` where amplint's hook ``hook_id`` is: in torch's table, or held out by a
    compiled module that runs (then it goes back in when that module returns)."""
    table = torch.nn.modules.module._global_forward_hooks
    with _lock:
        suspended = SESSION.live.suspended_hooks
        if hook_id in suspended:
            suspended[hook_id] = (suspended[hook_id][0], hook)
        elif hook_id in table:
            table[hook_id] = hook


def call_without_global_hook(
    original: Callable[..., Any], hook_id: Callable[[], int | None]
) -> Callable[..., Any]:
    """``OptimizedModule.__call__`` that runs with amplint's global hook (``hook_id()``, None
    when there is none) out of torch's table; everything else is torch's."""

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (
            not SESSION.history.backward_note_said
            and torch.is_grad_enabled()
            and _backend_name(self) not in _NO_COMPILED_BACKWARD
        ):
            # Said when the compiled region is called inside autocast, not only when its
            # backward is traced: with a warm compile cache nothing is traced, and the
            # cached backward runs under the forward's autocast all the same.
            note_backward_traced(autocast_active())
        key = hook_id()
        if key is None:
            return original(self, *args, **kwargs)
        _take_out(key)
        try:
            return original(self, *args, **kwargs)
        finally:
            _put_back(key, hook_id() == key)

    return __call__


#: Backends that run the captured graph as it is, with no AOTAutograd: no backward of
#: theirs is compiled, under autocast or not.
_NO_COMPILED_BACKWARD = frozenset({"eager", "eager_noexcept"})


def _backend_name(optimized: Any) -> str | None:
    """The name of the backend an OptimizedModule was compiled with (``torch.compile(m,
    backend="eager")``), when torch's objects say it; None otherwise."""
    try:
        convert = optimized.dynamo_ctx.callback._torchdynamo_orig_backend
        backend = getattr(convert, "_torchdynamo_orig_backend", convert)
    except AttributeError:
        return None
    name = getattr(backend, "compiler_name", None) or getattr(backend, "__name__", None)
    return name if isinstance(name, str) else None


# amplint's own code, for Dynamo's frame skipping --------------------------------------------


def own_code_objects() -> Iterator[types.CodeType]:
    """The code of every function of amplint's runtime package: module functions, class
    members (methods, static and class methods, properties) and what they define inside
    (closures, lambdas, comprehensions)."""
    package = __name__.rpartition(".")[0]
    # Only code compiled from these files: a decorated function of ours can be the
    # decorator's (contextlib's `helper`, Enum's `__new__` in an Enum's namespace), shared by
    # every user of the decorator, whose frames Dynamo must go on seeing as without amplint.
    directory = os.path.dirname(os.path.abspath(__file__)) + os.sep
    stack: list[types.CodeType] = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == name:
                members = [
                    getattr(member, attribute, None)
                    for member in vars(value).values()
                    for attribute in ("__func__", "fget", "fset", "fdel")
                ]
                members += list(vars(value).values())
                stack += [code for member in members for code in _codes(member)]
            elif isinstance(value, types.FunctionType) and value.__module__ == name:
                stack += _codes(value)
    seen: set[types.CodeType] = set()
    while stack:
        code = stack.pop()
        if code in seen:
            continue
        seen.add(code)
        if not os.path.abspath(code.co_filename).startswith(directory):
            continue
        yield code
        stack += [const for const in code.co_consts if isinstance(const, types.CodeType)]


def _codes(function: object) -> list[types.CodeType]:
    """The code of a function and of the functions it wraps (``__wrapped__``: the generator
    function behind a ``@contextmanager``)."""
    found = []
    while isinstance(function, types.FunctionType) and len(found) < 8:
        found.append(function.__code__)
        function = function.__dict__.get("__wrapped__")
    return found
