"""AMP023 fp16-and-bf16-both."""

from __future__ import annotations

from amplint.analysis.frameworks import IMPORT_TOKENS, frameworks_of, literal_flags
from amplint.engine.contract import Invalid, Rule, RuleContext

#: The flag pairs of ``TrainingArguments`` that ``__post_init__`` refuses together.
_PAIRS = (("fp16", "bf16"), ("fp16_full_eval", "bf16_full_eval"))


class Fp16AndBf16Both(Rule):
    code = "AMP023"
    tokens = (
        IMPORT_TOKENS,
        ("=fp16:True", "=fp16_full_eval:True", "parse_dict"),
        ("=bf16:True", "=bf16_full_eval:True", "parse_dict"),
    )

    valid = (
        """
from transformers import TrainingArguments
args = TrainingArguments("out", bf16=True, fp16=False)
""",
        # One of the two from the command line: the analysis cannot know both are on.
        """
from transformers import TrainingArguments
args = TrainingArguments("out", fp16=True, bf16=cli.bf16)
""",
        # Not Hugging Face's TrainingArguments.
        """
from mytrainer import TrainingArguments
args = TrainingArguments(fp16=True, bf16=True)
""",
        # A full-eval dtype next to a training dtype is allowed.
        """
import transformers
args = transformers.TrainingArguments("out", fp16=True, bf16_full_eval=True)
""",
    )
    invalid = (
        Invalid(
            """
from transformers import TrainingArguments
args = TrainingArguments(output_dir="out", fp16=True, bf16=True)
""",
            line=3,
        ),
        # The dataclass parser's dict, and keyword expansion of a literal dict.
        Invalid(
            """
import transformers as tf
parser = tf.HfArgumentParser((ModelArguments, tf.Seq2SeqTrainingArguments))
model_args, training_args = parser.parse_dict({"output_dir": "o", "fp16": True, "bf16": True})
args = tf.TrainingArguments(**{"output_dir": "o", "fp16_full_eval": True, "bf16_full_eval": True})
""",
            line=4,
            count=2,
        ),
    )

    def check(self, context: RuleContext) -> None:
        model = context.model
        for config in frameworks_of(model).configs:
            if config.framework != "transformers":
                continue
            flags = literal_flags(config.call)
            for fp16, bf16 in _PAIRS:
                if flags.get(fp16) is True and flags.get(bf16) is True:
                    context.report(
                        config.call,
                        f"`{fp16}=True` and `{bf16}=True` together: TrainingArguments refuses "
                        f"the pair ('At most one of fp16 and bf16 can be True'); keep the one "
                        "you mean",
                    )
