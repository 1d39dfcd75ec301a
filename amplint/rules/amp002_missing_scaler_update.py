"""AMP002 missing-scaler-update."""

from __future__ import annotations

from collections.abc import Collection

import libcst as cst

from amplint.analysis.lifecycle import scaler_constructions
from amplint.analysis.model import (
    ModuleModel,
    calls_in,
    method_name,
    receiver,
    receiver_key,
)
from amplint.analysis.scalers import updated_somewhere
from amplint.analysis.scopes import names_read
from amplint.analysis.steps import Kind, iterations
from amplint.engine.contract import FixPlan, Invalid, Replacement, Rule, RuleContext


class MissingScalerUpdate(Rule):
    code = "AMP002"
    tokens = (("GradScaler", "ShardedGradScaler"), ("step",))

    valid = (
        """
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Gradient accumulation: step and update under the same condition.
        """
import torch
scaler = torch.amp.GradScaler()
for i, (x, y) in enumerate(loader):
    scaler.scale(loss / accum).backward()
    if (i + 1) % accum == 0:
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
""",
        # A scaler passed as a parameter: the caller owns update().
        """
def train_step(model, optimizer, scaler, batch):
    loss = model(batch)
    scaler.scale(loss).backward()
    scaler.step(optimizer)

def main(scaler):
    for batch in loader:
        train_step(model, optimizer, scaler, batch)
        scaler.update()
""",
        # Attribute scaler, update in another method called by a driver.
        """
import torch
class Trainer:
    def __init__(self):
        self.scaler = torch.amp.GradScaler(enabled=use_amp)

    def optimizer_step(self):
        self.scaler.step(self.optimizer)

    def after_step(self):
        self.scaler.update()
""",
        # Several optimizers stepped in a loop, one update.
        """
from torch.amp import GradScaler
scaler = GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()
""",
        # A global scaler stepped in one function and updated in another.
        """
import torch
scaler = torch.amp.GradScaler()

def optimizer_step():
    scaler.step(optimizer)

def end_of_iteration():
    scaler.update()
""",
        # Not a GradScaler.
        """
import torch
scaler = MyScaler()
for batch in loader:
    scaler.step(optimizer)
""",
        # A helper of the same module updates.
        """
import torch
scaler = torch.amp.GradScaler()

def finish(s):
    s.update()

for batch in loader:
    scaler.step(optimizer)
    finish(scaler)
""",
        # The scaler kept on the trainer is updated through a getter.
        """
import torch
class Trainer:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    def get_scaler(self):
        return self._scaler

    def train_step(self, loss):
        self._scaler.scale(loss).backward()
        self._scaler.step(self.optimizer)

    def on_step_end(self):
        self.get_scaler().update()
""",
        # The step goes through a local the getter filled; the update through the getter.
        """
import torch
class Trainer:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    def get_scaler(self):
        return self._scaler

    def train_step(self, loss):
        scaler = self.get_scaler()
        scaler.scale(loss).backward()
        scaler.step(self.optimizer)
        self.get_scaler().update()
""",
        # A property over the private attribute: stepped through one, updated through the
        # other (the same scaler).
        """
import torch
class Trainer:
    def __init__(self):
        self._scaler = torch.amp.GradScaler("cuda")

    @property
    def scaler(self):
        return self._scaler

    def train_step(self, x):
        self.scaler.scale(self.model(x).mean()).backward()
        self.scaler.step(self.optimizer)
        self._scaler.update()
""",
        # One backward and step per optimizer in a loop over them, one update() per
        # iteration after it (PyTorch's several-optimizers recipe, a GAN's G then D).
        """
import torch
def train(model, loader, optimizers, loss_fn):
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        for index, optimizer in enumerate(optimizers):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x, index), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
        scaler.update()
""",
    )
    invalid = (
        # A warm-up loop forgets the update a second loop on the same scaler has: the fix
        # adds one to the warm-up loop and leaves the second loop's where it is.
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler("cuda")
for x in warmup_batches:
    scaler.scale(model(x).sum()).backward()
    scaler.step(optimizer)
    optimizer.zero_grad()
for x in batches:
    scaler.scale(model(x).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
""",
            line=6,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x in warmup_batches:
    scaler.scale(model(x).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
for x in batches:
    scaler.scale(model(x).sum()).backward()
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
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # step
    optimizer.zero_grad()
""",
            line=6,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # step
    scaler.update()
    optimizer.zero_grad()
""",
        ),
        Invalid(
            """
import torch
class Trainer:
    def __init__(self, use_amp):
        self.scaler = torch.cuda.amp.GradScaler(enabled=use_amp)

    def train_step(self, batch):
        loss = self.model(batch)
        self.scaler.scale(loss).backward()
        if self.should_step():
            self.scaler.step(self.optimizer)
            self.optimizer.zero_grad()
""",
            line=11,
            fixed="""
import torch
class Trainer:
    def __init__(self, use_amp):
        self.scaler = torch.cuda.amp.GradScaler(enabled=use_amp)

    def train_step(self, batch):
        loss = self.model(batch)
        self.scaler.scale(loss).backward()
        if self.should_step():
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad()
""",
        ),
        Invalid(
            """
from torch.amp import GradScaler as GS
scaler = GS() if use_fp16 else None
for batch in loader:
    scaler.scale(loss).backward()
    for opt in (opt_g, opt_d):
        scaler.step(opt)
scaler.update()
""",
            line=7,
            fixed="""
from torch.amp import GradScaler as GS
scaler = GS() if use_fp16 else None
for batch in loader:
    scaler.scale(loss).backward()
    for opt in (opt_g, opt_d):
        scaler.step(opt)
    scaler.update()
""",
        ),
        # A GAN: the discriminator's scaler, reached through a getter, is updated; the
        # generator's is not.
        Invalid(
            """
import torch
class GAN:
    def __init__(self):
        self.scaler_g = torch.amp.GradScaler("cuda")
        self._scaler_d = torch.amp.GradScaler("cuda")

    def disc_scaler(self):
        return self._scaler_d

    def train_step(self, loss_d, loss_g):
        self.disc_scaler().scale(loss_d).backward()
        self.disc_scaler().step(self.opt_d)
        self.disc_scaler().update()
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
""",
            line=16,
            fixed="""
import torch
class GAN:
    def __init__(self):
        self.scaler_g = torch.amp.GradScaler("cuda")
        self._scaler_d = torch.amp.GradScaler("cuda")

    def disc_scaler(self):
        return self._scaler_d

    def train_step(self, loss_d, loss_g):
        self.disc_scaler().scale(loss_d).backward()
        self.disc_scaler().step(self.opt_d)
        self.disc_scaler().update()
        self.scaler_g.scale(loss_g).backward()
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        by_iteration: dict[tuple[cst.CSTNode, str], list[cst.Call]] = {}
        for call in model.index.calls:
            target = receiver(call)
            key = receiver_key(call)
            if method_name(call) != "step" or target is None or key is None:
                continue
            if not model.is_scaler(target) or model.is_dead(call):
                continue
            instances = model.scaler_instances(target)
            if all(s.enabled is False for s in instances):
                continue
            if any(s.origin is not None and s.origin.shared for s in instances):
                continue  # a module-level scaler of another module: its functions may update it
            iteration = model.training_iteration(call)
            by_iteration.setdefault((iteration, key), []).append(call)
        for (iteration, key), steps in by_iteration.items():
            stepped = model.scaler_instances(receiver(steps[0]))  # type: ignore[arg-type]
            if _updated(model, iteration, key, stepped) or _updated_after_optimizers(
                model, iteration, key, steps
            ):
                continue
            if _shared(model, steps[0], key) and updated_somewhere(model, key, stepped):
                continue
            if stepped and updated_somewhere(model, key, stepped, by_name=False):
                continue  # `gs = self.grad_scaler(); ...; self.grad_scaler().update()`
            last = steps[-1]
            context.report(
                last,
                f"`{key}.step(...)` is not followed by `{key}.update()` in the training "
                "iteration; the loss scale never adapts",
                _insert_update(model, last, iteration, key),
            )


def _updated(
    model: ModuleModel, iteration: cst.CSTNode, key: str, stepped: Collection[object] = ()
) -> bool:
    """Whether the iteration updates this scaler, itself or through the helpers it hands
    it to (the iteration's events, helpers followed), or hands it to code this module does
    not show, which may update it. An update written another way counts when it reaches a
    scaler of ``stepped`` (the stepped one's instances): ``self.scaler`` a property over
    ``self._scaler``, stepped through one and updated through the other."""
    for candidate in iterations(model):
        if candidate.root is iteration:
            return key in candidate.escaped or any(
                event.scaler == key or _reaches(model, event.call, stepped)
                for event in candidate.of(Kind.UPDATE)
            )
    return True  # not an iteration the analysis walked: assume the best


def _reaches(model: ModuleModel, update: cst.Call, stepped: Collection[object]) -> bool:
    """Whether ``update`` is called on the very name a stepped scaler was built into (not
    merely on another scaler from the same factory: a GAN's two)."""
    target, key = receiver(update), receiver_key(update)
    if not stepped or target is None or key is None:
        return False
    built_into = {c.call: c.target for c in scaler_constructions(model)}
    return any(
        instance in stepped and built_into.get(instance.call) == key
        for instance in model.scaler_instances(target)
    )


def _updated_after_optimizers(
    model: ModuleModel, iteration: cst.CSTNode, key: str, steps: list[cst.Call]
) -> bool:
    """A loop over the optimizers (``for opt in optimizers:`` ... ``scaler.step(opt)``, a
    backward per model) inside the training loop, whose pass updates the scaler once after
    it: PyTorch's several-optimizers recipe, each optimizer stepped once before update()."""
    if not isinstance(iteration, cst.For):
        return False
    targets = set(names_read(iteration.target))
    for step in steps:
        argument = step.args[0].value if step.args else None
        if not isinstance(argument, cst.Name) or argument.value not in targets:
            return False
    outer = model.enclosing_loops(iteration)
    if not outer:
        return False
    inside = set(map(id, calls_in(iteration)))
    return any(
        method_name(call) == "update" and receiver_key(call) == key and id(call) not in inside
        for call in calls_in(outer[0].body)
    )


def _shared(model: ModuleModel, step: cst.Call, key: str) -> bool:
    """Whether the scaler outlives the function that steps it (an attribute, a global):
    then any function of the module may be the one that updates it."""
    if "." in key:
        return True
    function = model.index.enclosing_function(step)
    if function is None:
        return False
    return key not in model.index.functions[function].bindings


def _insert_update(
    model: ModuleModel, step: cst.Call, iteration: cst.CSTNode, key: str
) -> FixPlan | None:
    anchor = model.update_anchor(step, iteration)
    if anchor is None:
        return None
    update = cst.parse_statement(f"{key}.update()\n")

    def insert(updated: cst.CSTNode) -> cst.FlattenSentinel:
        return cst.FlattenSentinel([updated, update])  # type: ignore[list-item]

    replacements: dict[cst.CSTNode, Replacement] = {anchor: insert}
    # An update() placed after the training loop would now run with no step since the last
    # update (torch asserts "No inf checks were recorded"): the fix moves it instead.
    for misplaced in _updates_outside(model, iteration, step, key):
        replacements[misplaced] = cst.RemovalSentinel.REMOVE
    verb = "Move" if len(replacements) > 1 else "Insert"
    return FixPlan(f"{verb} `{key}.update()` after `{key}.step(...)`", replacements)


def _updates_outside(
    model: ModuleModel, iteration: cst.CSTNode, step: cst.Call, key: str
) -> list[cst.BaseStatement]:
    """``key.update()`` statements of the step's function that lie after the iteration,
    outside any other loop that steps through ``key`` (a second training loop's own update
    stays where it is: it follows that loop's step)."""
    function = model.index.enclosing_function(step)
    body = function.body if function is not None else model.module
    inside = set(calls_in(iteration))
    found = []
    after = False
    for call in calls_in(body):
        if call in inside:
            after = True
            continue
        if not after or method_name(call) != "update" or receiver_key(call) != key:
            continue
        if _in_a_stepping_loop(model, call, iteration, key, function or model.module):
            continue
        statement = model.statement_in_block(call)
        if (
            isinstance(statement, cst.SimpleStatementLine)
            and len(statement.body) == 1
            and isinstance(statement.body[0], cst.Expr)
            and statement.body[0].value is call
        ):
            found.append(statement)
    return found


def _in_a_stepping_loop(
    model: ModuleModel, call: cst.Call, iteration: cst.CSTNode, key: str, top: cst.CSTNode
) -> bool:
    """Whether a loop around ``call`` that is not around ``iteration`` steps through ``key``."""
    around_iteration = {iteration, *model.index.ancestors(iteration)}
    for ancestor in model.index.ancestors(call):
        if ancestor is top:
            return False
        if (
            isinstance(ancestor, (cst.For, cst.While))
            and ancestor not in around_iteration
            and any(method_name(c) == "step" and receiver_key(c) == key for c in calls_in(ancestor))
        ):
            return True
    return False
