"""The float16 outputs of every module, seen by one global forward hook (AMP105).

On CUDA they are held between two ``scale()`` calls and reduced there to their largest
magnitudes with one fused multi-tensor kernel (``reductions.max_abs``); the references are
then dropped. On the CPU, where there is no kernel launch to save, each output is reduced
in the hook, while it is still in the cache: measured in a training step, the same
``aminmax`` passes cost 230 µs per step at ``scale()`` time and about half in the hook
(a 2-layer transformer, seven outputs), and no output is kept alive longer than torch
keeps it. Each module gets a slot, named lazily by its qualified name in the outermost
module seen.

Not every iteration is measured: every one of the first ``activations_first``, then one in
``activations_every`` and every one that follows a skipped step (an overflow in the forward
makes the step's gradients non-finite, and the scaler skips it; measured again, the
overflow is found where it recurs). On the iterations not measured the hook is out of
torch's table, and module calls take torch's fast path: measured in a training step, the
hook and its reductions cost 2-4% of a small model's CPU step, more than every other check
together.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch

from .frames import Site, forward_site, user_frame
from .reductions import max_abs, max_abs_of_pairs
from .reporting import internal_error, steps
from .state import uses_scalers

__all__ = ["ACT_CAP", "INPUT_SLOT", "Activations"]

#: The slot of what the step's first float16-producing module was given: where that is
#: already non-finite (NaN in the data), no float16 module overflowed, and AMP105 would
#: blame the first module for its input.
INPUT_SLOT = -1

ACT_CAP = 4096  # float16 outputs held between scale() calls before they are reduced early


# Modules that pass values through (scaled by at most 1/(1-p)), and elementwise
# activations whose output is never larger in magnitude than their float16 input: an
# overflow is never theirs to fix (it was measured where their input was produced), and
# measuring them would add a full pass over each of their outputs to every step.
_PASS_THROUGH = (
    torch.nn.Identity,
    torch.nn.modules.dropout._DropoutNd,
    torch.nn.ReLU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Tanh,
    torch.nn.Sigmoid,
    torch.nn.Softmax,
)


# Looked up once: the hook below runs on every module call.
_Tensor = torch.Tensor
_FLOAT16 = torch.float16
_aminmax = torch.aminmax
_grad_enabled = torch.is_grad_enabled
_any_autocast = torch._C._is_any_autocast_enabled
_inference_mode = torch.is_inference_mode_enabled
_set_grad_enabled = torch._C._set_grad_enabled
_is_compiling = torch.compiler.is_compiling
_thread_id = threading.get_ident


class Activations:
    """Float16 outputs of every module, reduced to their largest magnitudes: on the CPU in
    the hook, on CUDA per ``scale()`` with one multi-tensor op."""

    def __init__(self, first: int, every: int) -> None:
        self.modules: list[weakref.ref[torch.nn.Module]] = []
        self.kinds: list[str] = []
        # id(module) -> (slot, weak reference): a plain dict is several times faster than a
        # WeakKeyDictionary in a hook that runs on every module call; the reference tells a
        # reused id from the module it belonged to.
        self.slot_of: dict[int, tuple[int, weakref.ref[torch.nn.Module]]] = {}
        self.pending: list[torch.Tensor] = []
        self.pending_slots: list[int] = []
        # CPU outputs, reduced in the hook: (min, max) of each, and its slot.
        self.cpu_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.cpu_slots: list[int] = []
        self.partials: list[torch.Tensor] = []  # reduced maxima, float16, this step
        self.slots: list[int] = []  # slot of each reduced maximum, in forward order
        # (index in slots, iteration) where each reduce() began: a run that never calls
        # update() hands its steps over only at report time, all together.
        self.marks: list[tuple[int, int]] = []
        self.last: torch.Tensor | None = None
        self.first_site: Site | None = None  # the user's line of the first output measured
        # The user's line that ran the forward of this step (reset by take()): a finding of
        # the step points at a line that ran in it, not at another branch's.
        self.step_site: Site | None = None
        # Outputs measured without grad in the current outermost autocast region, held
        # until it ends: kept if the region also ran a forward with grad (a distillation
        # teacher in the student's step), dropped if not (an evaluation between steps).
        # Reduced at once on every device (holding the outputs themselves would keep an
        # evaluation's activations alive), and only the region's own thread's: a data
        # loading thread's forward is not the step's.
        self.held_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.held_slots: list[int] = []
        self.grad_in_region = False
        self.region_thread: int | None = None
        self.last_version = 0
        self.names: dict[int, str] = {}  # slot -> qualified name, refreshed as slots appear
        self.named = 0
        # Which iterations are measured (see the module's docstring), decided when the
        # iteration before ended, or else when its first outermost autocast region begins.
        # ``switch`` puts the hook in or out of torch's table; None: it stays in, and
        # returns at once when not measuring.
        self.first = first
        self.every = every
        self.measuring = True
        self.decided_for: int | None = None
        self.ended_for: int | None = None
        self.measure_until = -1  # measured up to this iteration after skipped steps
        self.iterations_measured = 0  # of the iterations that ended (every scaler stepped)
        self.iterations_seen = 0
        self.switch: Callable[[bool], None] | None = None
        # Two threads training at once (each its own model and scaler) share this object:
        # their outputs and slots are appended and taken under one lock, so that a step's
        # maxima and their slots stay paired.
        self.lock = threading.RLock()

    def refresh_names(self) -> None:
        """Name every slot while its model is alive (findings are read later, lazily).

        Runs when modules were seen for the first time: in the first step, and after that
        only when a module joins (e.g. one used for the first time). A name is relative to
        the outermost module seen that holds it; where two such roots give the same name (a
        student and its deep-copied teacher or EMA), the root's name in the user's code
        comes first (``teacher.0``).
        """
        if self.named == len(self.modules):
            return
        self.named = len(self.modules)
        best: dict[int, tuple[str, int]] = {}  # id(module) -> (name, id(root))
        roots: dict[int, torch.nn.Module] = {}
        for ref in self.modules:
            root = ref()
            if root is None:
                continue
            for name, sub in root.named_modules(remove_duplicate=False):
                if len(name) >= len(best.get(id(sub), ("", 0))[0]):
                    best[id(sub)] = (name, id(root))
                    roots[id(root)] = root
        owners: dict[str, set[int]] = {}
        for name, root_id in best.values():
            owners.setdefault(name, set()).add(root_id)
        labels: dict[int, str] | None = None
        for slot, ref in enumerate(self.modules):
            module = ref()
            if module is None:
                continue
            name, root_id = best.get(id(module), ("", id(module)))
            # The root's name in the user's code goes first where the qualified name alone
            # says little: the same in two roots, a position in a Sequential (`1`), or the
            # root itself, called directly.
            if not name or name[0].isdigit() or len(owners[name]) > 1:
                if labels is None:
                    labels = _root_labels({**roots, id(module): module} if not name else roots)
                label = labels.get(root_id)
                if label is not None:
                    name = f"{label}.{name}" if name else label
            self.names[slot] = name or f"<root {self.kinds[slot]}>"

    def hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        """The global forward hook: runs after every module's forward, in the user's step.

        The body is one ``try`` rather than a call through ``run_check``: this runs on every
        module call, and a ``try`` costs nothing until it catches. Each lookup counts here:
        between two module calls torch's kernels have evicted the interpreter's data from
        the CPU caches. Measured in a GPT's training step, the work around the reduction of
        a float16 output took about 37 µs with ``torch.<name>`` lookups and ``detach()``,
        about 20 µs with the names bound once and grad mode switched off instead.
        """
        try:
            # Inside a graph torch is tracing, outputs are symbolic: nothing to measure,
            # and nothing may be added to the graph (tested first: a read of `measuring`
            # while tracing would become a guard, and each change of it a recompile).
            if _is_compiling() or not self.measuring or not uses_scalers():
                return
            # Forwards without grad count inside autocast, where a distillation teacher runs
            # in the student's step (DeiT); outside it they are evaluation, not training.
            grad = _grad_enabled()
            if not grad and (not _any_autocast() or _inference_mode()):
                return  # evaluation (inference mode's tensors have no version to compare)
            # Every module seen gets a slot, also those not measured: the outermost ones are
            # the roots that give the others their qualified names.
            entry = self.slot_of.get(id(module))
            slot = (
                entry[0] if entry is not None and entry[1]() is module else self._new_slot(module)
            )
            if isinstance(output, _Tensor):
                tensor = output
            elif isinstance(output, (tuple, list)) and output and isinstance(output[0], _Tensor):
                tensor = output[0]
            else:
                return
            # A parent returning its last child's output (Sequential, a block ending in a norm)
            # is the same tensor, or a view of it (ViT's patch embedding flattens its conv's
            # output): measured once, attributed to the child, which ran first. (Only a view
            # of the measured tensor itself: two views of another tensor hold different parts.)
            # Changed in place since (ResNet's `out += identity`), it is measured again.
            if tensor.dtype is not _FLOAT16:
                return
            base = tensor._base
            last = self.last
            if (
                (tensor is last or (base is not None and base is last))
                and last is not None
                and last._version == self.last_version
            ):
                return
            if tensor.is_sparse or isinstance(module, _PASS_THROUGH) or tensor.numel() == 0:
                return
            self.last = tensor
            self.last_version = tensor._version
            first_of_step = self.step_site is None
            if first_of_step:  # once a step: where AMP105 points for this step
                self.step_site = forward_site()
                if self.first_site is None:
                    self.first_site = self.step_site
            if not grad:
                self._hold(tensor, slot)
                return
            self.grad_in_region = True
            if first_of_step:
                self._note_input(args)
            if tensor.is_cpu:
                # aminmax is differentiable: grad mode off for the reduction, so that no
                # graph node holds the output; cheaper than detach().
                _set_grad_enabled(False)
                try:
                    pair = _aminmax(tensor)
                finally:
                    _set_grad_enabled(True)
                with self.lock:
                    self.cpu_pairs.append(pair)
                    self.cpu_slots.append(slot)
                    if len(self.cpu_pairs) >= ACT_CAP:
                        self.reduce()
                return
            with self.lock:
                self.pending.append(tensor)
                self.pending_slots.append(slot)
                if len(self.pending) >= ACT_CAP:
                    self.reduce()
        except Exception as error:  # amplint's bug: the forward's output stays torch's
            internal_error("the activation check (forward hook)", error)

    def _note_input(self, args: Any) -> None:
        """Whether the step's first float16-producing module was given finite values: a
        0-d float16 value, 0 if so, NaN if not (measured with the outputs, read with them)."""
        data = args[0] if isinstance(args, tuple) and args else None
        if not isinstance(data, _Tensor) or not data.is_floating_point():
            return
        if data.is_sparse or data.numel() == 0:
            return
        _set_grad_enabled(False)
        try:
            # A sum keeps NaN and inf; times zero, a finite sum (however large) is 0.
            flag = (data.sum(dtype=torch.float32) * 0).to(_FLOAT16)
        finally:
            _set_grad_enabled(True)
        with self.lock:
            if flag.is_cpu:
                self.cpu_pairs.append((flag, flag))
                self.cpu_slots.append(INPUT_SLOT)
            else:
                self.pending.append(flag)
                self.pending_slots.append(INPUT_SLOT)

    def _new_slot(self, module: torch.nn.Module) -> int:
        with self.lock:
            entry = self.slot_of.get(id(module))
            if entry is not None and entry[1]() is module:
                return entry[0]  # another thread gave it one meanwhile
            slot = len(self.modules)
            ref = weakref.ref(module)
            self.slot_of[id(module)] = (slot, ref)
            self.modules.append(ref)
            self.kinds.append(type(module).__name__)
            return slot

    def _hold(self, tensor: torch.Tensor, slot: int) -> None:
        """A float16 output measured without grad, inside autocast: held for the region."""
        if _thread_id() != self.region_thread or len(self.held_slots) >= ACT_CAP:
            return  # another thread's, or a long evaluation no training step holds
        pair = _aminmax(tensor)
        with self.lock:
            self.held_pairs.append(pair)
            self.held_slots.append(slot)

    def region_started(self) -> None:
        """The outermost autocast region of a thread began: it owns the held outputs,
        unless another thread's region is running (a prefetching thread's)."""
        # Whichever thread's region comes first: the decision is the iteration's.
        self._decide(steps().current)
        thread = _thread_id()
        if self.region_thread is not None and self.region_thread != thread:
            return
        self.region_thread = thread
        self._settle(keep=False)

    def step_skipped(self, iterations: int = 1) -> None:
        """A scaler skipped a step: the next ``iterations`` iterations are measured (also the
        one already decided, if its forward has not begun: a skip seen at ``update()``)."""
        upcoming = steps().latest  # the iteration after the skipped step
        self.measure_until = max(self.measure_until, upcoming + iterations - 1)
        decided = self.decided_for
        if decided is not None and upcoming <= decided <= self.measure_until and not self.measuring:
            self.measuring = True
            if self.switch is not None:
                self.switch(True)

    def iteration_ended(self, upcoming: int) -> None:
        """Every scaler of an iteration stepped: count it, and decide for ``upcoming``
        now, before its forward begins (a model that enters autocast inside its own forward
        is called before its region starts, and torch looks at the hooks at the call; a
        loop that runs many iterations in one region starts none)."""
        if upcoming == self.ended_for:
            return  # a second optimizer stepped by the same scaler in this iteration
        self.ended_for = upcoming
        self.iterations_seen += 1
        self.iterations_measured += self.measuring
        self._decide(upcoming)

    def _decide(self, iteration: int) -> None:
        """Whether ``iteration`` is measured; once per iteration, at the end of the one
        before it, or else at its first region."""
        if iteration == self.decided_for:
            return
        self.decided_for = iteration
        measure = (
            iteration < self.first or not iteration % self.every or iteration <= self.measure_until
        )
        self.measuring = measure
        if self.switch is not None:
            self.switch(measure)  # at every decision: it also notes what Dynamo compiled

    def region_ended(self) -> None:
        """The outermost autocast region ended: its outputs without grad count if it also
        ran a forward with grad, in this step."""
        if _thread_id() != self.region_thread:
            return
        self._settle(keep=self.grad_in_region)
        self.region_thread = None

    def _settle(self, keep: bool) -> None:
        with self.lock:
            self._settle_held(keep)

    def _settle_held(self, keep: bool) -> None:
        pairs, slots = self.held_pairs, self.held_slots
        self.held_pairs, self.held_slots = [], []
        self.grad_in_region = False
        if not keep or not pairs:
            return
        # Ahead of the region's outputs with grad: a frozen backbone run without grad
        # feeds the trainable head, and an overflow there is the backbone's.
        by_device: dict[torch.device, list[int]] = {}
        for index, pair in enumerate(pairs):
            by_device.setdefault(pair[0].device, []).append(index)
        for device, indices in by_device.items():
            if device.type == "cpu":
                self.cpu_pairs[0:0] = [pairs[i] for i in indices]
                self.cpu_slots[0:0] = [slots[i] for i in indices]
                continue
            with torch.no_grad():
                self.partials.insert(0, max_abs_of_pairs([pairs[i] for i in indices]))
            self.slots[0:0] = [slots[i] for i in indices]

    def reduce(self) -> None:
        """Reduce the held outputs to their maxima (one multi-tensor op per device) and let
        the outputs go."""
        with self.lock:
            self._reduce()

    def _reduce(self) -> None:
        if self.grad_in_region and self.held_slots:
            # scale() inside the region that ran the student: its teacher's outputs count.
            self._settle(keep=True)
            self.grad_in_region = True
        pending, self.pending = self.pending, []
        self.last = None
        if self.cpu_pairs or pending:
            self.marks.append((len(self.slots), steps().current))
        if self.cpu_pairs:
            pairs, self.cpu_pairs = self.cpu_pairs, []
            with torch.no_grad():
                self.partials.append(max_abs_of_pairs(pairs))
            self.slots.extend(self.cpu_slots)
            self.cpu_slots = []
        if not pending:
            return
        with torch.no_grad():
            by_device: dict[torch.device, list[int]] = {}
            for index, tensor in enumerate(pending):
                by_device.setdefault(tensor.device, []).append(index)
            if len(by_device) == 1:
                self.partials.append(max_abs(pending))
                self.slots.extend(self.pending_slots)
            else:  # model parallel: one reduction per device, kept per device
                for indices in by_device.values():
                    group = [pending[i] for i in indices]
                    self.partials.append(max_abs(group))
                    self.slots.extend(self.pending_slots[i] for i in indices)
        self.pending_slots = []

    def take(self) -> tuple[list[torch.Tensor], list[int], Site | None]:
        """The step's reduced maxima, their slots, and the line that ran its forward."""
        with self.lock:
            self._reduce()
            partials, slots, site = self.partials, self.slots, self.step_site
            self.partials, self.slots, self.step_site, self.marks = [], [], None, []
        return partials, slots, site

    def name(self, slot: int) -> str:
        """The module's qualified name in the outermost module seen that contains it."""
        self.refresh_names()
        if slot in self.names:
            return self.names[slot]
        module = self.modules[slot]()
        if module is None:
            return f"<freed {self.kinds[slot]}>"
        best: str | None = None
        for ref in self.modules:
            root = ref()
            if root is None:
                continue
            for name, sub in root.named_modules(remove_duplicate=False):
                if sub is module and (best is None or len(name) > len(best)):
                    best = name
                    break
        return best or f"<root {self.kinds[slot]}>"


def _root_labels(roots: dict[int, torch.nn.Module]) -> dict[int, str]:
    """id(root module) -> the name the user's code holds it by (``teacher``,
    ``self.model_ema``), from the user's frames on the stack; roots not found have none."""
    labels: dict[int, str] = {}
    frame = user_frame(2)
    for _ in range(8):
        if frame is None or len(labels) == len(roots):
            break
        scopes: list[tuple[str, dict[str, Any]]] = [("", frame.f_locals)]
        owner = frame.f_locals.get("self")
        if owner is not None and isinstance(getattr(owner, "__dict__", None), dict):
            scopes.append(("self.", vars(owner)))
        scopes.append(("", frame.f_globals))
        for prefix, scope in scopes:
            for key, value in list(scope.items()):
                if prefix and isinstance(value, dict) and key == "_modules":
                    for sub_key, sub in value.items():  # an nn.Module owner's submodules
                        if isinstance(sub, torch.nn.Module) and id(sub) in roots:
                            labels.setdefault(id(sub), prefix + sub_key)
                if not isinstance(value, torch.nn.Module):
                    continue
                # The roots are what ran; the user may hold the model that holds them
                # (`model.body`, `model.head` called by a loop, not `model` itself).
                for name, sub in value.named_modules():
                    if id(sub) in roots:
                        labels.setdefault(
                            id(sub), f"{prefix}{key}.{name}" if name else prefix + key
                        )
        frame = frame.f_back
    return labels
