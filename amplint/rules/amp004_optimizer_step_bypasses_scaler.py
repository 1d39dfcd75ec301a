"""AMP004 optimizer-step-bypasses-scaler."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.model import ModuleModel
from amplint.analysis.scalers import updated_somewhere
from amplint.analysis.steps import (
    Event,
    Iteration,
    Kind,
    exclusive,
    iterations,
    usable_at,
)
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext


class OptimizerStepBypassesScaler(Rule):
    code = "AMP004"
    tokens = (("~scaler",), ("scale",), ("backward",), ("step",))

    valid = (
        # The plain step sits in the `else` of `fp16 and amp == "torch"`, the scaled
        # backward under `fp16` and `amp == "torch"`: never in the same pass (NVIDIA's
        # Transformer-XL). Likewise for `or`.
        """
import torch
def train(model, optimizer, extra_optimizer, scaler, loader, args):
    for x, y in loader:
        with torch.autocast("cuda", enabled=args.fp16):
            loss = model(x, y)
        if args.fp16:
            if args.amp == "torch":
                scaler.scale(loss).backward()
        else:
            loss.backward()
        if args.fp16 and args.amp == "torch":
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
            extra_optimizer.step()
""",
        """
import torch
def train(model, optimizer, extra_optimizer, scaler, loader, args):
    for x, y in loader:
        with torch.autocast("cuda", enabled=args.fp16):
            loss = model(x, y)
        if args.fp16:
            if args.amp == "torch":
                scaler.scale(loss).backward()
        else:
            loss.backward()
        if not args.fp16 or not args.amp == "torch":
            optimizer.step()
            extra_optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
""",
        # A training function with its own loop and scaler, then another whose framework
        # backward scales for itself: the second's step applies its own gradients.
        """
import torch
def baseline(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for batch in loader:
        loss = scaler.scale(model(batch))
        loss.backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

def integration(model, optimizer, loader, accelerator):
    for batch in loader:
        accelerator.backward(model(batch))
        optimizer.step()
        optimizer.zero_grad()

baseline(*make())
integration(*make())
""",
        # Two helpers called one after the other: a scaled loop with its own scaler.step,
        # then plain float32 training (accelerate's benchmarks): its step is its own.
        """
import torch
def run_amp(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()

def run_plain(model, optimizer, loader):
    for x, y in loader:
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

for trial in range(2):
    run_amp(*make())
    run_plain(*make())
""",
        # torchvision reference: plain step only where there is no scaler.
        """
import torch
def train_one_epoch(model, optimizer, loader, scaler=None):
    for x, y in loader:
        with torch.autocast("cuda", enabled=scaler is not None):
            loss = model(x, y)
        optimizer.zero_grad()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
""",
        # The two sides chosen by the same flag, in two separate ifs.
        """
import torch
scaler = torch.amp.GradScaler(enabled=use_amp)
for batch in loader:
    if use_amp:
        scaler.scale(loss).backward()
    else:
        loss.backward()
    if not use_amp:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
""",
        # A disabled-by-flag scaler: scale() is a no-op when the plain step runs.
        """
import torch
scaler = torch.amp.GradScaler(enabled=use_amp)
for batch in loader:
    scaler.scale(loss).backward()
    if use_amp:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
""",
        # A GAN whose generator trains unscaled after its gradients were reset.
        """
import torch
scaler_d = torch.amp.GradScaler()
for real in loader:
    opt_d.zero_grad()
    scaler_d.scale(d_loss).backward()
    scaler_d.step(opt_d)
    scaler_d.update()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
""",
        # Several optimizers through the scaler.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
""",
        # A literally disabled scaler.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
for batch in loader:
    scaler.scale(loss).backward()
    optimizer.step()
""",
        # An EMA/teacher optimizer that no scaled backward reached.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    swa_optimizer.step()
""",
    )
    invalid = (
        # The scaler steps the optimizer when AMP is on, then the optimizer steps again on
        # every path: a double step, not scaled gradients (no fix: which one to keep is
        # the author's choice).
        Invalid(
            """
import torch
def train_one_epoch(model, optimizer, loader, use_amp, scaler=None):
    for x in loader:
        optimizer.zero_grad()
        if use_amp:
            with torch.autocast("cuda"):
                loss = model(x).sum()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            model(x).sum().backward()
        optimizer.step()
""",
            line=14,
        ),
        # The step in the `else:` of a try whose handler zeroes the gradients: it runs only
        # when the scaled backward succeeded.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for x in loader:
    try:
        scaler.scale(model(x)).backward()
    except RuntimeError:
        optimizer.zero_grad()
        continue
    else:
        optimizer.step()
        scaler.update()
    optimizer.zero_grad()
""",
            line=11,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
for x in loader:
    try:
        scaler.scale(model(x)).backward()
    except RuntimeError:
        optimizer.zero_grad()
        continue
    else:
        scaler.step(optimizer)
        scaler.update()
    optimizer.zero_grad()
""",
        ),
        # A helper that accumulates over micro-batches in a loop of its own: the caller's
        # direct step applies what it accumulated.
        Invalid(
            """
import torch
def accumulate(scaler, model, batches):
    for batch in batches:
        scaler.scale(model(batch)).backward()

def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for batches in loader:
        accumulate(scaler, model, batches)
        optimizer.step()
        optimizer.zero_grad()
""",
            line=11,
            fixed="""
import torch
def accumulate(scaler, model, batches):
    for batch in batches:
        scaler.scale(model(batch)).backward()

def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for batches in loader:
        accumulate(scaler, model, batches)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        ),
        # The scaled loss rebound to its own name right before the backward (accelerate's
        # fp8 benchmarks).
        Invalid(
            """
import torch
def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = torch.nn.functional.mse_loss(model(x), y)
        loss = scaler.scale(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""",
            line=10,
            fixed="""
import torch
def train(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = torch.nn.functional.mse_loss(model(x), y)
        loss = scaler.scale(loss)
        loss.backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        ),
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    optimizer.step()
""",
            line=9,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    optimizer.zero_grad()
    with torch.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Attributes; update already there; under the accumulation boundary.
        Invalid(
            """
import torch
class Trainer:
    def __init__(self, model, optimizer):
        self.scaler = torch.amp.GradScaler("cuda")
        self.optimizer = optimizer

    def train_step(self, i, loss):
        self.scaler.scale(loss / self.accum).backward()
        if (i + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scaler.update()
            self.optimizer.zero_grad()
""",
            line=13,
            fixed="""
import torch
class Trainer:
    def __init__(self, model, optimizer):
        self.scaler = torch.amp.GradScaler("cuda")
        self.optimizer = optimizer

    def train_step(self, i, loss):
        self.scaler.scale(loss / self.accum).backward()
        if (i + 1) % self.accum == 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
        ),
        # Backward scaled when a scaler exists, but the step always plain.
        Invalid(
            """
def train(model, loader, optimizer, scaler=None):
    for x, y in loader:
        loss = model(x, y)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
""",
            line=9,
        ),
        # One shared scaler, two optimizers: the generator's step bypasses it.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for real in loader:
    opt_d.zero_grad()
    opt_g.zero_grad()
    scaler.scale(err_d + err_g).backward()
    scaler.step(opt_d)
    opt_g.step()
    scaler.update()
""",
            line=9,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
for real in loader:
    opt_d.zero_grad()
    opt_g.zero_grad()
    scaler.scale(err_d + err_g).backward()
    scaler.step(opt_d)
    scaler.step(opt_g)
    scaler.update()
""",
        ),
        # The scaled backward in a helper of the module; the scaler a parameter.
        Invalid(
            """
def backward(scaler, loss):
    scaler.scale(loss).backward()

def train(model, loader, optimizer, scaler):
    for batch in loader:
        backward(scaler, model(batch))
        optimizer.step()
        scaler.update()
""",
            line=8,
            fixed="""
def backward(scaler, loss):
    scaler.scale(loss).backward()

def train(model, loader, optimizer, scaler):
    for batch in loader:
        backward(scaler, model(batch))
        scaler.step(optimizer)
        scaler.update()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for iteration in iterations(model):
            for step in iteration.of(Kind.OPTIMIZER_STEP):
                backward = _scaled_gradients(model, iteration, step)
                if backward is None:
                    continue
                scaler = backward.scaler_local or "scaler"
                if _stepped_by_scaler_before(iteration, step, backward):
                    # torchvision's old references: `scaler.step(opt)` under `if amp:`, then
                    # `opt.step()` for every path. The gradients are unscaled by then; the
                    # mistake is the second step, which `scaler.step` would only repeat.
                    context.report(
                        step.call,
                        f"`{step.optimizer_local}.step()` runs after "
                        f"`{scaler}.step({step.optimizer_local})` in the same iteration: the "
                        "optimizer steps twice on the same gradients, and also after the steps "
                        "the scaler skipped for inf/NaN; step once, through the scaler",
                    )
                    continue
                context.report(
                    step.call,
                    f"`{step.optimizer_local}.step()` applies gradients that "
                    f"`{scaler}.scale(...).backward()` multiplied by the loss scale, and does "
                    f"not skip inf/NaN steps; use `{scaler}.step({step.optimizer_local})`",
                    _through_scaler(model, iteration, step, backward),
                )


def _scaled_gradients(model: ModuleModel, iteration: Iteration, step: Event) -> Event | None:
    """The scaled backward whose gradients ``step`` applies, if it surely is one."""
    optimizer = step.optimizer
    if any(
        e.kind is Kind.SCALER_STEP and e.optimizer == optimizer and exclusive(e, step)
        for e in iteration.events
    ):
        return None  # `if amp: scaler.step(opt) else: opt.step()`: a deliberate choice
    reset = None
    for event in iteration.events[: step.order]:
        if (
            event.kind is Kind.ZERO_GRAD
            and event.optimizer == optimizer
            and not exclusive(event, step)
        ):
            reset = event
    window = [e for e in iteration.between(reset, step) if not exclusive(e, step)]
    scaled = [
        e
        for e in window
        if e.kind is Kind.SCALED_BACKWARD
        and not _stepped_in_its_own_loop(model, iteration, e, step)
    ]
    if not scaled or any(e.kind is Kind.MAYBE_SCALED_BACKWARD for e in window):
        return None
    # An unscaled backward that runs together with a scaled one mixes magnitudes: in doubt.
    plain = any(
        e.kind is Kind.BACKWARD and any(not exclusive(e, s) for s in scaled) for e in window
    )
    if plain:
        # Mixed scaled and unscaled gradients, or (helpers called one after the other) a
        # scaled loop done with its own optimizer before a plain one: in doubt.
        return None
    scalers = {e.scaler for e in scaled}
    if _stepped_through_scaler_anywhere(model, step):
        return scaled[-1]
    stepped_here = any(
        e.kind is Kind.SCALER_STEP and e.scaler in scalers and not exclusive(e, step)
        for e in iteration.events
    )
    if not stepped_here or reset is not None:
        return scaled[-1]
    return None


def _stepped_by_scaler_before(iteration: Iteration, step: Event, backward: Event) -> bool:
    """Whether a ``scaler.step`` of the same optimizer runs after the scaled backward and
    before ``step``, on the same path."""
    return any(
        e.kind is Kind.SCALER_STEP
        and e.optimizer == step.optimizer
        and backward.order < e.order < step.order
        and not exclusive(e, step)
        for e in iteration.events
    )


def _stepped_in_its_own_loop(
    model: ModuleModel, iteration: Iteration, backward: Event, step: Event
) -> bool:
    """A backward of another function's call (a helper that runs a whole training loop of
    its own) whose gradients a step in that loop applies: not the gradients ``step``, in
    another call, applies (two training functions called one after the other)."""
    if backward.frame.via == step.frame.via:
        return False
    shared = set(model.enclosing_loops(step.call))
    own = [loop for loop in model.enclosing_loops(backward.call) if loop not in shared]
    if not own:
        return False
    return any(
        e.kind in (Kind.OPTIMIZER_STEP, Kind.SCALER_STEP)
        and e.order > backward.order
        and e is not step
        and set(own) & set(model.enclosing_loops(e.call))
        for e in iteration.events
    )


def _stepped_through_scaler_anywhere(model: ModuleModel, step: Event) -> bool:
    for iteration in iterations(model):
        for event in iteration.of(Kind.SCALER_STEP):
            if event.optimizer_local is not None and (
                event.optimizer_local == step.optimizer_local or event.optimizer == step.optimizer
            ):
                return True
    return False


def _through_scaler(
    model: ModuleModel, iteration: Iteration, step: Event, backward: Event
) -> FixPlan | None:
    window_scalers = {
        e.scaler for e in iteration.between(None, step) if e.kind is Kind.SCALED_BACKWARD
    }
    if len(window_scalers) != 1 or step.frame.via or backward.scaler_local is None:
        return None
    key = backward.scaler
    if any(
        e.kind is Kind.SCALER_STEP
        and e.scaler == key
        and e.optimizer == step.optimizer
        and not exclusive(e, step)
        for e in iteration.events
    ):
        return None  # already stepped through the scaler: rewriting would step twice
    scaler = usable_at(model, backward, "scaler", step)
    target = step.call.func.value if isinstance(step.call.func, cst.Attribute) else None
    if scaler is None or target is None:
        return None
    replacements: dict[cst.CSTNode, Replacement] = {
        step.call: lambda updated: cst.Call(
            func=cst.parse_expression(f"{scaler}.step"), args=[cst.Arg(target)]
        )
    }
    updates = [e for e in iteration.of(Kind.UPDATE) if e.scaler == key]
    if any(e.order < step.order for e in updates):
        return None
    if not updates:
        if updated_somewhere(model, scaler) or _is_parameter(model, step.call, scaler):
            return None
        anchor = model.update_anchor(step.call, iteration.root)
        if anchor is None:
            return None
        update = cst.parse_statement(f"{scaler}.update()\n")
        replacements[anchor] = lambda updated: cst.FlattenSentinel([updated, update])
    return FixPlan(f"Step through `{scaler}.step(...)`", replacements)


def _is_parameter(model: ModuleModel, call: cst.Call, scaler: str) -> bool:
    function = model.index.enclosing_function(call)
    if function is None:
        return False
    head = scaler.split(".")[0]
    return any(p.name.value == head for p in function.params.params) or (
        any(p.name.value == head for p in function.params.kwonly_params)
    )
