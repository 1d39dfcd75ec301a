"""AMP024 framework-fp16-on-cpu."""

from __future__ import annotations

import libcst as cst

from amplint.analysis.frameworks import (
    CPU_TOKENS,
    FP16_TOKENS,
    IMPORT_TOKENS,
    FrameworkAmp,
    frameworks_of,
)
from amplint.engine.contract import FixPlan, Invalid, Rule, RuleContext

#: What each framework does with float16 mixed precision on a CPU (see the catalog's
#: references): Accelerate (under the HF Trainer too) builds neither scaler nor autocast.
_OUTCOME = {
    "transformers": "Accelerate builds no GradScaler and no autocast on a CPU, so it trains "
    "in float32; `bf16=True` is mixed precision on a CPU",
    "accelerate": "it builds no GradScaler and no autocast on a CPU, so it trains in float32; "
    '`mixed_precision="bf16"` is mixed precision on a CPU',
    "lightning": 'Lightning warns and runs "bf16-mixed" instead; say so',
    "fabric": 'Fabric warns and runs "bf16-mixed" instead; say so',
}


class FrameworkFp16OnCpu(Rule):
    code = "AMP024"
    tokens = (IMPORT_TOKENS, FP16_TOKENS, CPU_TOKENS)

    valid = (
        """
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed")
""",
        """
from transformers import TrainingArguments
args = TrainingArguments("out", fp16=True)
""",
        # The device comes from the command line.
        """
from accelerate import Accelerator
accelerator = Accelerator(mixed_precision="fp16", cpu=args.cpu)
""",
        # Lightning's "16-true" is pure float16, not mixed precision.
        """
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="16-true")
""",
    )
    invalid = (
        Invalid(
            """
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="16-mixed", max_epochs=1)
""",
            line=3,
            fixed="""
import lightning as L
trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_epochs=1)
""",
        ),
        Invalid(
            """
from lightning.fabric import Fabric
fabric = Fabric(accelerator="cpu", precision=16)
""",
            line=3,
            fixed="""
from lightning.fabric import Fabric
fabric = Fabric(accelerator="cpu", precision="bf16-mixed")
""",
        ),
        Invalid(
            """
from transformers import TrainingArguments
args = TrainingArguments("out", use_cpu=True, fp16=True)
""",
            line=3,
        ),
        Invalid(
            """
import accelerate
accelerator = accelerate.Accelerator(cpu=True, mixed_precision="fp16")
""",
            line=3,
        ),
    )

    def check(self, context: RuleContext) -> None:
        for config in frameworks_of(context.model).configs:
            if config.precision != "fp16" or not config.cpu_only:
                continue
            context.report(
                config.call,
                f"float16 mixed precision asked of a CPU-only {config.label}: "
                f"{_OUTCOME[config.framework]}",
                _bf16_fix(config),
            )


def _bf16_fix(config: FrameworkAmp) -> FixPlan | None:
    """Lightning already runs "bf16-mixed" here: writing it changes nothing but the text."""
    if config.framework not in ("lightning", "fabric") or config.fp16_arg is None:
        return None
    return FixPlan(
        'Write precision="bf16-mixed", which Lightning runs on a CPU anyway',
        {config.fp16_arg: cst.SimpleString('"bf16-mixed"')},
    )
