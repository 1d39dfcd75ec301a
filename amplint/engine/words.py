"""The prefilter's word groups of every rule, so that files are filtered before any rule
module (and libcst) is imported.

Derived from the rules' own ``tokens``, which stay their one home: regenerate this table
with ``python -m amplint.engine.words`` (then ``ruff format``) after changing a rule's
words; a test compares them. A code missing here makes the prefilter import the rules to
learn its words.
"""

from __future__ import annotations

#: code -> groups of words; every group must match, any one word of a group.
WORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    # BEGIN GENERATED
    "AMP001": (
        ("!autocast",),
        ("backward", "grad", "manual_backward"),
    ),
    "AMP002": (
        ("GradScaler", "ShardedGradScaler"),
        ("step",),
    ),
    "AMP003": (
        ("autocast",),
        ("backward",),
        ("step",),
    ),
    "AMP004": (
        ("~scaler",),
        ("scale",),
        ("backward",),
        ("step",),
    ),
    "AMP005": (
        ("~scaler",),
        ("backward",),
        ("step",),
    ),
    "AMP006": (
        (
            "~scaler",
            "=fp16:True",
            "=mixed_precision:fp16",
            "=precision:16-mixed",
            "=precision:16",
            "parse_dict",
        ),
        (
            "scale",
            "=fp16:True",
            "=mixed_precision:fp16",
            "=precision:16-mixed",
            "=precision:16",
            "parse_dict",
        ),
        (
            "clip_grad_norm_",
            "clip_grad_value_",
            "clip_grad_norm",
            "clip_gradients",
            "clip_grads_with_norm_",
        ),
    ),
    "AMP007": (
        (
            "!amp/torch",
            "!get_autocast_cpu_dtype",
            "!get_autocast_gpu_dtype",
            "!get_autocast_ipu_dtype",
            "!get_autocast_xla_dtype",
            "!is_autocast_cpu_enabled",
            "!is_autocast_ipu_enabled",
            "!is_autocast_xla_enabled",
            "!set_autocast_cpu_dtype",
            "!set_autocast_cpu_enabled",
            "!set_autocast_gpu_dtype",
            "!set_autocast_ipu_dtype",
            "!set_autocast_ipu_enabled",
            "!set_autocast_xla_dtype",
            "!set_autocast_xla_enabled",
        ),
        (
            "cuda",
            "cpu",
            "get_autocast_cpu_dtype",
            "get_autocast_gpu_dtype",
            "get_autocast_ipu_dtype",
            "get_autocast_xla_dtype",
            "is_autocast_cpu_enabled",
            "is_autocast_ipu_enabled",
            "is_autocast_xla_enabled",
            "set_autocast_cpu_dtype",
            "set_autocast_cpu_enabled",
            "set_autocast_gpu_dtype",
            "set_autocast_ipu_dtype",
            "set_autocast_ipu_enabled",
            "set_autocast_xla_dtype",
            "set_autocast_xla_enabled",
        ),
        ("torch",),
    ),
    "AMP008": (
        ("!autocast",),
        ("torch",),
    ),
    "AMP009": (
        ("~scaler",),
        ("half", "float16"),
    ),
    "AMP010": (("GradScaler", "ShardedGradScaler"),),
    "AMP011": (("unscale_",),),
    "AMP012": (
        ("!autocast",),
        ("step", "update", "zero_grad"),
    ),
    "AMP013": (
        ("state_dict", "load_state_dict"),
        ("~scaler",),
    ),
    "AMP014": (
        ("GradScaler", "ShardedGradScaler"),
        ("autocast",),
    ),
    "AMP015": (
        ("Function",),
        ("apply",),
        ("autocast",),
    ),
    "AMP016": (
        ("~scaler",),
        ("zero_grad",),
        ("step", "update", "unscale_"),
    ),
    "AMP017": (
        ("!autocast",),
        ("torch",),
    ),
    "AMP018": (
        ("~scaler",),
        ("clip_grad_norm_", "clip_grad_norm", "get_total_norm"),
    ),
    "AMP019": (
        ("GradScaler", "ShardedGradScaler"),
        ("step",),
    ),
    "AMP020": (
        ("binary_cross_entropy", "BCELoss"),
        ("autocast",),
    ),
    "AMP021": (
        ("~scaler",),
        ("get_scale", "state_dict", "_scale", "_growth_tracker"),
    ),
    "AMP022": (
        ("^transformers", "^accelerate", "^lightning", "^pytorch_lightning", "^lightning_fabric"),
        (
            "=fp16:True",
            "=mixed_precision:fp16",
            "=precision:16-mixed",
            "=precision:16",
            "parse_dict",
        ),
        ("half", "float16", "torch_dtype", "dtype"),
    ),
    "AMP023": (
        ("^transformers", "^accelerate", "^lightning", "^pytorch_lightning", "^lightning_fabric"),
        ("=fp16:True", "=fp16_full_eval:True", "parse_dict"),
        ("=bf16:True", "=bf16_full_eval:True", "parse_dict"),
    ),
    "AMP024": (
        ("^transformers", "^accelerate", "^lightning", "^pytorch_lightning", "^lightning_fabric"),
        (
            "=fp16:True",
            "=mixed_precision:fp16",
            "=precision:16-mixed",
            "=precision:16",
            "parse_dict",
        ),
        ("=use_cpu:True", "=no_cuda:True", "=cpu:True", "=accelerator:cpu", "parse_dict"),
    ),
    "AMP025": (
        ("^transformers", "^accelerate", "^lightning", "^pytorch_lightning", "^lightning_fabric"),
        (
            "=fp16:True",
            "=mixed_precision:fp16",
            "=precision:16-mixed",
            "=precision:16",
            "parse_dict",
            "=bf16:True",
            "=mixed_precision:bf16",
            "=precision:bf16-mixed",
            "=precision:bf16",
        ),
        ("scale", "autocast"),
    ),
    # END GENERATED
}


def _render() -> str:
    from amplint.engine.registry import all_rules

    lines = []
    for rule in all_rules():
        lines.append(f"    {rule.code!r}: (")
        for group in rule.tokens:
            lines.append(f"        {group!r},")
        lines.append("    ),")
    return "\n".join(lines)


def _write() -> None:
    from pathlib import Path

    path = Path(__file__)
    text = path.read_text()
    head, _, rest = text.partition("    # BEGIN GENERATED\n")
    _, _, tail = rest.partition("    # END GENERATED\n")
    body = _render()
    path.write_text(f"{head}    # BEGIN GENERATED\n{body}\n    # END GENERATED\n{tail}")


if __name__ == "__main__":
    _write()
