"""AMP018 clip-error-if-nonfinite."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.clipping import clip_function, norm_source
from amplint.analysis.steps import Kind, iterations
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_SCALER_KINDS = (Kind.SCALED_BACKWARD, Kind.UNSCALE, Kind.SCALER_STEP, Kind.UPDATE)
#: where ``error_if_nonfinite`` goes positionally: clip_grad_norm_(parameters, max_norm,
#: norm_type, error_if_nonfinite, foreach), get_total_norm(tensors, norm_type,
#: error_if_nonfinite, foreach) (the norm that torch 2.6's clip_grads_with_norm_ clips with).
_CLIP_POSITION = 3
_TOTAL_NORM_POSITION = 2


class ClipErrorIfNonfinite(Rule):
    code = "AMP018"
    tokens = (("~scaler",), ("clip_grad_norm_", "clip_grad_norm", "get_total_norm"))

    valid = (
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        # No scaler (bfloat16 or float32): a non-finite gradient is a real error.
        """
import torch
for batch in loader:
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    optimizer.step()
""",
        # error_if_nonfinite=False.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=False)
    scaler.step(optimizer)
    scaler.update()
""",
        # The split clip's `True` is `foreach`; its norm's flag is off.
        """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.get_total_norm(grads, 2.0, False, True)
    torch.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, norm, True)
    scaler.step(optimizer)
    scaler.update()
""",
        # A literally disabled scaler.
        """
import torch
scaler = torch.amp.GradScaler(enabled=False)
for batch in loader:
    scaler.scale(loss).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    scaler.step(optimizer)
    scaler.update()
""",
    )
    invalid = (
        Invalid(
            """
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
    scaler.step(optimizer)
    scaler.update()
""",
            line=7,
            fixed="""
import torch
scaler = torch.amp.GradScaler()
for batch in loader:
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Imported alias, keyword in the middle, attribute scaler.
        Invalid(
            """
from torch.nn.utils import clip_grad_norm_
class Trainer:
    def step(self, loss):
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = clip_grad_norm_(
            self.params, max_norm=self.max_norm, error_if_nonfinite=True, foreach=True
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
            line=7,
            fixed="""
from torch.nn.utils import clip_grad_norm_
class Trainer:
    def step(self, loss):
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = clip_grad_norm_(
            self.params, max_norm=self.max_norm, foreach=True
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
""",
        ),
        # torch 2.6's split clip: the flag is get_total_norm's.
        Invalid(
            """
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
def step(scaler, optimizer, loss, params, grads):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = get_total_norm(grads, error_if_nonfinite=True)
    clip_grads_with_norm_(params, 1.0, norm)
    scaler.step(optimizer)
    scaler.update()
""",
            line=6,
            fixed="""
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
def step(scaler, optimizer, loss, params, grads):
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    norm = get_total_norm(grads)
    clip_grads_with_norm_(params, 1.0, norm)
    scaler.step(optimizer)
    scaler.update()
""",
        ),
        # Positional flag.
        Invalid(
            """
import torch
def train(loader, scaler, optimizer):
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0, 2.0, True)
        scaler.step(optimizer)
        scaler.update()
""",
            line=7,
            fixed="""
import torch
def train(loader, scaler, optimizer):
    for batch in loader:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0, 2.0)
        scaler.step(optimizer)
        scaler.update()
""",
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        seen: set[cst.Call] = set()
        for iteration in iterations(model):
            if not iteration.of(*_SCALER_KINDS):
                continue
            for clip in iteration.of(Kind.CLIP):
                name = clip_function(model, clip.call)
                call: cst.Call | None = clip.call
                if name in ("clip_grad_norm_", "clip_grad_norm"):
                    position = _CLIP_POSITION
                elif name == "clip_grads_with_norm_":
                    call, position = norm_source(model, clip.call), _TOTAL_NORM_POSITION
                else:
                    continue
                if call is None or call in seen:
                    continue
                index = _flag_index(call, position)
                if index is None:
                    continue
                seen.add(call)
                context.report(
                    call,
                    "`error_if_nonfinite=True` with a GradScaler turns its routine overflow "
                    "steps into crashes; drop it (`scaler.step` already skips those steps)",
                    FixPlan(
                        "Remove `error_if_nonfinite=True`",
                        {call: lambda updated, i=index: _drop_argument(updated, i)},
                    ),
                )


def _flag_index(call: cst.Call, position: int) -> int | None:
    positional = 0
    for index, arg in enumerate(call.args):
        if arg.star:
            return None
        if arg.keyword is not None:
            if arg.keyword.value == "error_if_nonfinite":
                return index if _is_true(arg.value) else None
            continue
        if positional == position:
            last_positional = all(a.keyword is not None for a in call.args[index + 1 :])
            return index if _is_true(arg.value) and last_positional else None
        positional += 1
    return None


def _is_true(value: cst.BaseExpression) -> bool:
    return isinstance(value, cst.Name) and value.value == "True"


def _drop_argument(updated: cst.CSTNode, index: int) -> cst.CSTNode:
    assert isinstance(updated, cst.Call)
    args = list(updated.args)
    removed = args.pop(index)
    if index == len(args) and args:
        # The last argument went: the one before takes over its trailing comma (or none).
        args[-1] = args[-1].with_changes(comma=removed.comma)
    return updated.with_changes(args=args)
