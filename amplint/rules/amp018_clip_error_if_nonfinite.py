"""AMP018 clip-error-if-nonfinite."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.clipping import clip_kind
from amplint.analysis.steps import Kind, iterations
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

_SCALER_KINDS = (Kind.SCALED_BACKWARD, Kind.UNSCALE, Kind.SCALER_STEP, Kind.UPDATE)
#: clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
_POSITION = 3


class ClipErrorIfNonfinite(Rule):
    code = "AMP018"
    tokens = (("~scaler",), ("clip_grad_norm_",))

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
                if clip.call in seen or clip_kind(model, clip.call) != "function":
                    continue
                index = _flag_index(clip.call)
                if index is None:
                    continue
                seen.add(clip.call)
                context.report(
                    clip.call,
                    "`error_if_nonfinite=True` with a GradScaler turns its routine overflow "
                    "steps into crashes; drop it (`scaler.step` already skips those steps)",
                    FixPlan(
                        "Remove `error_if_nonfinite=True`",
                        {clip.call: lambda updated, i=index: _drop_argument(updated, i)},
                    ),
                )


def _flag_index(call: cst.Call) -> int | None:
    positional = 0
    for index, arg in enumerate(call.args):
        if arg.star:
            return None
        if arg.keyword is not None:
            if arg.keyword.value == "error_if_nonfinite":
                return index if _is_true(arg.value) else None
            continue
        if positional == _POSITION:
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
