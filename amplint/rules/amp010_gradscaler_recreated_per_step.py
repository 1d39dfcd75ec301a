"""AMP010 gradscaler-recreated-per-step."""

from __future__ import annotations

import re

import libcst as cst

from amplint.analysis.lifecycle import (
    ScalerConstruction,
    bound_in,
    guarded_by,
    loop_runs_training_directly,
    may_be_enabled,
    references_in,
    runs_training,
    scaler_constructions,
)
from amplint.analysis.model import ModuleModel, walk_body
from amplint.analysis.scalers import named_like_scaler
from amplint.analysis.scopes import dotted_name
from amplint.analysis.steps import normalise
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

#: Names whose rebinding in an outer loop means each iteration is a training run of its own.
_RUN_STATE = re.compile(r"optim|(^|_)opt(s|\d*)($|_)|model|net|scaler", re.IGNORECASE)
#: Methods a training framework calls once per iteration.
_PER_STEP_METHODS = ("train_step", "training_step")


class GradScalerRecreatedPerStep(Rule):
    code = "AMP010"
    tokens = (("GradScaler", "ShardedGradScaler"),)

    valid = (
        # Built on first use, written as a conditional expression (both ways round).
        """
import torch
scaler = None
disc_scaler = None
for x in loader:
    scaler = scaler if scaler is not None else torch.amp.GradScaler("cuda")
    disc_scaler = torch.amp.GradScaler("cuda") if disc_scaler is None else disc_scaler
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # The recipe: created once, before the loop.
        """
import torch
scaler = torch.amp.GradScaler("cuda")
for epoch in range(epochs):
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # Created in __init__, used in train_step.
        """
import torch
class Trainer:
    def __init__(self, model, optimizer):
        self.scaler = torch.amp.GradScaler(enabled=True)

    def train_step(self, batch):
        with torch.autocast("cuda"):
            loss = self.model(batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
        # Lazy creation on the first step.
        """
import torch
class Module:
    def training_step(self, batch):
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler()
        loss = self.model(batch)
        self.scaler.scale(loss).backward()
""",
        """
import torch
from torch.amp import GradScaler
class Module:
    def training_step(self, batch):
        if not hasattr(self, "grad_scaler"):
            self.grad_scaler = GradScaler()
        loss = self.model(batch)
        self.grad_scaler.scale(loss).backward()
""",
        # One scaler per network, built in a setup loop that trains nothing.
        """
from torch.amp import GradScaler
scalers = {}
for name in ("generator", "discriminator"):
    scalers[name] = GradScaler("cuda")
for batch in loader:
    for name, opt in optimizers.items():
        scalers[name].scale(losses[name]).backward()
        scalers[name].step(opt)
        scalers[name].update()
""",
        # A scaler per training run (a fresh model each run), created outside the batch loop.
        """
import torch
for run in range(num_runs):
    model, optimizer = build(run)
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        # train_one_epoch builds its scaler once per epoch, outside its batch loop.
        """
import torch
def train_one_epoch(model, optimizer, loader):
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        with torch.autocast("cuda"):
            loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

for epoch in range(10):
    train_one_epoch(model, optimizer, loader)
""",
        # A loop that trains nothing (evaluation) creating scalers is none of our business.
        """
import torch
for checkpoint in checkpoints:
    scaler = torch.amp.GradScaler()
    scaler.load_state_dict(torch.load(checkpoint)["scaler"])
    print(scaler.get_scale())
""",
        # Built on the first iteration only.
        """
import torch
for i, (x, y) in enumerate(loader):
    if i == 0:
        scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        # Rebuilt after a failure, in an except handler.
        """
import torch
scaler = torch.amp.GradScaler()
for x in loader:
    try:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
    except RuntimeError:
        scaler = torch.amp.GradScaler(init_scale=1024.0)
""",
        # Not torch's GradScaler.
        """
from sklearn.preprocessing import StandardScaler
for x, y in loader:
    scaler = StandardScaler()
    loss = model(scaler.fit_transform(x))
    loss.backward()
    optimizer.step()
""",
        # Recreated but disabled literally: it holds no state.
        """
import torch
for x, y in loader:
    scaler = torch.amp.GradScaler(enabled=False)
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
    )
    invalid = (
        Invalid(
            """
import torch
for x, y in loader:
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=4,
            fixed="""
import torch
scaler = torch.amp.GradScaler("cuda")
for x, y in loader:
    with torch.autocast("cuda"):
        loss = model(x)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Nested in an epoch loop, aliased import, enabled from the arguments: hoisted above
        # both loops.
        Invalid(
            """
from torch.cuda.amp import GradScaler as GS, autocast

def train(model, optimizer, loader, args):
    model.train()
    for epoch in range(args.epochs):
        for step, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            # one scaler per step
            scaler = GS(enabled=args.amp)
            with autocast(enabled=args.amp):
                loss = model(x, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
""",
            line=10,
            fixed="""
from torch.cuda.amp import GradScaler as GS, autocast

def train(model, optimizer, loader, args):
    model.train()
    # one scaler per step
    scaler = GS(enabled=args.amp)
    for epoch in range(args.epochs):
        for step, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            with autocast(enabled=args.amp):
                loss = model(x, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
""",
        ),
        # One run per outer iteration (a fresh optimizer): hoisted out of the batch loop
        # only, so each run keeps a scaler of its own.
        Invalid(
            """
import torch
for run in range(3):
    model, optimizer = build(run)
    for x, y in loader:
        scaler = torch.amp.GradScaler("cuda")
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=6,
            fixed="""
import torch
for run in range(3):
    model, optimizer = build(run)
    scaler = torch.amp.GradScaler("cuda")
    for x, y in loader:
        scaler.scale(model(x)).backward()
        scaler.step(optimizer)
        scaler.update()
""",
        ),
        # The constructor reads a loop variable: reported, no fix.
        Invalid(
            """
import torch
for step, (x, y) in enumerate(loader):
    scaler = torch.amp.GradScaler(init_scale=2.0 ** min(step, 16))
    scaler.scale(model(x)).backward()
    scaler.step(optimizer)
    scaler.update()
""",
            line=4,
        ),
        # An attribute rebuilt in train_step.
        Invalid(
            """
import torch
class Trainer:
    def train_step(self, batch):
        self.scaler = torch.amp.GradScaler("cuda")
        with torch.autocast("cuda"):
            loss = self.model(batch)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=5,
        ),
        # A helper of the module called from the training loop.
        Invalid(
            """
from torch.amp import GradScaler

def step(model, optimizer, batch):
    scaler = GradScaler("cuda")
    loss = model(batch)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()

for batch in loader:
    step(model, optimizer, batch)
""",
            line=5,
        ),
        # Under the accumulation boundary: reported, but moving it out of the `if` is left
        # to the user.
        Invalid(
            """
import torch
for i, (x, y) in enumerate(loader):
    loss = model(x) / accum
    if (i + 1) % accum == 0:
        scaler = torch.amp.GradScaler()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
""",
            line=6,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for construction in scaler_constructions(model):
            call = construction.call
            if not may_be_enabled(construction) or model.is_dead(call) or _lazy(model, call):
                continue
            loops = model.enclosing_loops(call)
            training = [loop for loop in loops if loop_runs_training_directly(model, loop)]
            guard_words = {"scaler"}
            if construction.target:
                guard_words.add(construction.target.rsplit(".", 1)[-1])
            if training:
                if _lazy_in_loop(model, call, training[-1], construction.target):
                    continue
                context.report(
                    call,
                    "GradScaler is created anew in every training iteration: its loss scale "
                    "restarts at 65536 each step, so overflowing steps are skipped again and "
                    "again; create it once, before the loop",
                    _hoist(model, construction, _hoist_target(model, loops, training[-1])),
                )
                continue
            if loops:
                continue
            function = model.index.enclosing_function(call)
            if function is None or guarded_by(model, call, function, guard_words):
                continue
            where = _per_iteration(model, function)
            if where is None:
                continue
            context.report(
                call,
                f"GradScaler is created in `{function.name.value}`, which runs once per "
                f"{where}: its loss scale restarts at 65536 every step, so overflowing steps "
                "are skipped again and again; create it once at setup and reuse it",
            )


def _lazy_in_loop(
    model: ModuleModel, call: cst.Call, loop: cst.For | cst.While, target: str | None
) -> bool:
    """Built once however many times the loop runs: under a lazy-initialisation test
    (``if scaler is None:``, a first-iteration flag, ``if step == 0:``), or in an
    ``except`` handler (rebuilt after a failure). Any other ``if`` may hold every pass.
    The test may be a conditional expression's (``scaler if scaler is not None else
    GradScaler()``)."""
    child: cst.CSTNode = call
    for ancestor in model.index.ancestors(call):
        if ancestor is loop:
            return False
        if isinstance(ancestor, cst.ExceptHandler):
            return True
        if isinstance(ancestor, cst.If) and _first_time_test(model, ancestor.test, loop, target):
            return True
        if isinstance(ancestor, cst.IfExp) and child is not ancestor.test:
            test = ancestor.test
            if child is ancestor.orelse:
                test = cst.UnaryOperation(operator=cst.Not(), expression=test)
            if _first_time_test(model, test, loop, target):
                return True
        child = ancestor
    return False


_FIRST_WORDS = re.compile(r"start|first|begin|init", re.IGNORECASE)


def _first_time_test(
    model: ModuleModel,
    test: cst.BaseExpression,
    loop: cst.For | cst.While,
    target: str | None,
) -> bool:
    """Whether ``test`` holds only until the scaler exists, or only on the first pass."""
    if isinstance(test, cst.BooleanOperation):
        left = _first_time_test(model, test.left, loop, target)
        right = _first_time_test(model, test.right, loop, target)
        # `a and b` holds no more often than either; `a or b` than both together.
        return (left or right) if isinstance(test.operator, cst.And) else (left and right)
    condition = normalise(model, test)
    plain = condition.test
    # `if scaler is None:` / `if not self.scaler:`: the scaler itself is the flag.
    if not condition.branch and isinstance(plain, (cst.Name, cst.Attribute)):
        name = dotted_name(plain) or ""
        if named_like_scaler(name) or (target is not None and name == target):
            return True
    # `if not hasattr(self, "scaler"):`: built while missing.
    if (
        not condition.branch
        and isinstance(plain, cst.Call)
        and dotted_name(plain.func) == "hasattr"
        and len(plain.args) == 2
        and isinstance(plain.args[1].value, cst.SimpleString)
    ):
        attribute = str(plain.args[1].value.evaluated_value)
        if named_like_scaler(attribute) or (target is not None and target.endswith(attribute)):
            return True
    # `if step == 0:` / `if epoch == start_epoch:`: the first pass only.
    if (
        isinstance(plain, cst.Comparison)
        and len(plain.comparisons) == 1
        and isinstance(plain.comparisons[0].operator, cst.Equal)
    ):
        right = plain.comparisons[0].comparator
        if not isinstance(plain.left, (cst.Name, cst.Attribute)):
            return False  # `(i + 1) % accum == 0`: a boundary, not the first pass
        if isinstance(right, cst.Integer) and right.value == "0":
            return True
        words = dotted_name(right) or ""
        return bool(words and _FIRST_WORDS.search(words))
    # `if first:` ... `first = False` / `if not built:` ... `built = True`: a flag flipped
    # inside the loop.
    if isinstance(plain, (cst.Name, cst.Attribute)):
        flag = dotted_name(plain)
        flipped = "True" if not condition.branch else "False"
        return flag is not None and _assigned_literal(loop, flag, flipped)
    return False


def _assigned_literal(root: cst.CSTNode, name: str, literal: str) -> bool:
    return any(
        isinstance(node, cst.Assign)
        and isinstance(node.value, cst.Name)
        and node.value.value == literal
        and any(dotted_name(t.target) == name for t in node.targets)
        for node in walk_body(root)
    )


def _hoist_target(
    model: ModuleModel, loops: list[cst.For | cst.While], training: cst.For | cst.While
) -> cst.For | cst.While:
    """The loop to create the scaler above: the outermost training loop, and the loops
    around it (epochs) up to one that starts a new run (builds a model or optimizer anew):
    one scaler per run is right, and sharing it across runs would change the program."""
    target = training
    for outer in loops[loops.index(training) + 1 :]:
        fresh = bound_in(outer.body) - bound_in(target)
        if any(_RUN_STATE.search(name.rsplit(".", 1)[-1]) for name in fresh):
            break
        target = outer
    return target


def _lazy(model: ModuleModel, call: cst.Call) -> bool:
    """``self.scaler = self.scaler or GradScaler()``: created on first use only."""
    parent = model.index.parent(call)
    return isinstance(parent, cst.BooleanOperation) and isinstance(parent.operator, cst.Or)


def _per_iteration(model: ModuleModel, function: cst.FunctionDef) -> str | None:
    """How ``function`` runs once per training iteration, or None when it does not (or
    holds a training loop of its own: then it runs once per epoch, or once)."""
    own_loops = [n for n in walk_body(function.body) if isinstance(n, (cst.For, cst.While))]
    if any(runs_training(model, loop) for loop in own_loops):
        return None
    if function.name.value in _PER_STEP_METHODS and runs_training(model, function.body):
        return "training step"
    if function.name.value in _PER_STEP_METHODS and model.index.enclosing_class(function):
        return "training step"
    for call in model.index.calls:
        if model.helper_of(call) is not function:
            continue
        if any(loop_runs_training_directly(model, loop) for loop in model.enclosing_loops(call)):
            return "training iteration (it is called from the training loop)"
    return None


def _hoist(
    model: ModuleModel, construction: ScalerConstruction, outer: cst.For | cst.While
) -> FixPlan | None:
    statement = construction.statement
    if statement is None or construction.target is None:
        return None
    # Only plain loop bodies between the statement and the outer loop: no if/with/try.
    for ancestor in model.index.ancestors(statement):
        if ancestor is outer:
            break
        if not isinstance(ancestor, (cst.IndentedBlock, cst.For, cst.While)):
            return None
    loop_statement = model.statement_in_block(outer)
    if loop_statement is not outer:
        return None
    bound = bound_in(outer) - {construction.target}
    if references_in(construction.call) & bound:
        return None  # the arguments change with the iteration
    # Comments above the statement travel with it; blank lines stay behind.
    comments = [line for line in statement.leading_lines if line.comment is not None]
    moved = statement.with_changes(leading_lines=comments)

    def insert(updated: cst.CSTNode) -> cst.FlattenSentinel:
        return cst.FlattenSentinel([moved, updated])  # type: ignore[list-item]

    return FixPlan(
        f"Create `{construction.target}` once, before the loop",
        {statement: cst.RemovalSentinel.REMOVE, loop_statement: insert},
    )
