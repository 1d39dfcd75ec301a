"""Fix builders: the CST arguments a rule's fix writes when it rewrites a call.

Kept apart from the analysis of what a module names (``api_names``): that decides whether a
call is deprecated, this only builds the replacement once a rule has decided to fix it.
"""

from __future__ import annotations

import libcst as cst

from amplint.analysis.api_names import LEGACY_POSITIONAL, Kind


def string_arg(value: str, *, last: bool) -> cst.Arg:
    comma = (
        cst.MaybeSentinel.DEFAULT if last else cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    )
    return cst.Arg(cst.SimpleString(f'"{value}"'), comma=comma)


def keyword_arg(name: str, value: cst.BaseExpression, comma: cst.Comma | None = None) -> cst.Arg:
    return cst.Arg(
        value,
        keyword=cst.Name(name),
        equal=cst.AssignEqual(
            whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
        ),
        comma=comma if comma is not None else cst.MaybeSentinel.DEFAULT,
    )


def keywordize(
    args: tuple[cst.Arg, ...] | list[cst.Arg], params: tuple[str, ...]
) -> list[cst.Arg] | None:
    """Positional arguments made keywords by ``params``; None when that cannot be done."""
    result = []
    for position, arg in enumerate(args):
        if arg.star == "*":
            return None
        if arg.keyword is None and not arg.star:
            if position >= len(params):
                return None
            arg = arg.with_changes(
                keyword=cst.Name(params[position]),
                equal=cst.AssignEqual(
                    whitespace_before=cst.SimpleWhitespace(""),
                    whitespace_after=cst.SimpleWhitespace(""),
                ),
            )
        result.append(arg)
    return result


def _line_break(
    opening: cst.BaseParenthesizableWhitespace | None,
) -> cst.ParenthesizedWhitespace | None:
    """The break after a call's ``(`` when its arguments stand one a line, without the
    comment that line may hold: the layout of the break between two arguments."""
    if not isinstance(opening, cst.ParenthesizedWhitespace):
        return None
    return opening.with_changes(first_line=cst.TrailingWhitespace(), empty_lines=())


def prepend_device(
    args: list[cst.Arg],
    device: str,
    opening: cst.BaseParenthesizableWhitespace | None = None,
) -> list[cst.Arg]:
    """``device`` as the new first argument, laid out like the arguments that follow it
    (``opening``: the call's whitespace after ``(``)."""
    between = _line_break(opening)
    if between is not None and args:
        return [
            string_arg(device, last=False).with_changes(comma=cst.Comma(whitespace_after=between)),
            *args,
        ]
    new = string_arg(device, last=not args)
    first_comma = args[0].comma if args else None
    if isinstance(first_comma, cst.Comma) and isinstance(
        first_comma.whitespace_after, cst.ParenthesizedWhitespace
    ):
        new = new.with_changes(comma=first_comma)  # one argument per line: keep it so
    return [new, *args]


def legacy_call_args(
    kind: Kind,
    device: str,
    args: tuple[cst.Arg, ...],
    opening: cst.BaseParenthesizableWhitespace | None = None,
) -> list[cst.Arg] | None:
    """The arguments of the modern call that replaces a legacy call with ``args``."""
    if kind in LEGACY_POSITIONAL:
        converted = keywordize(args, LEGACY_POSITIONAL[kind])
        return None if converted is None else prepend_device(converted, device, opening)
    if kind == "function":
        return prepend_device(list(args), device, opening)
    # custom_fwd(fwd=None, *, cast_inputs=None) / custom_bwd(bwd): add device_type= after
    # the positional arguments.
    if any(arg.star == "*" for arg in args):
        return None
    positional = [a for a in args if a.keyword is None and not a.star]
    rest = [a for a in args if a.keyword is not None or a.star]
    new = keyword_arg("device_type", cst.SimpleString(f'"{device}"'))
    if rest:
        new = new.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    if positional:
        last = positional[-1]
        if last.comma is cst.MaybeSentinel.DEFAULT:
            positional[-1] = last.with_changes(
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
    return [*positional, new, *rest]


#: the dtype the legacy autocast classes pass when the call names none: the new class reads
#: the thread's current autocast dtype instead (an outer region's, or set_autocast_dtype's).
LEGACY_AUTOCAST_DTYPE = {"cuda": "float16", "cpu": "bfloat16"}


def with_keyword(
    args: list[cst.Arg],
    name: str,
    value: cst.BaseExpression,
    opening: cst.BaseParenthesizableWhitespace | None = None,
) -> list[cst.Arg]:
    """``args`` with ``name=value`` last, laid out like the arguments before it: one a line
    (``opening``, the call's whitespace after ``(``, says so) with the closing line and a
    trailing comma kept (a comment after it stays on its line; one before the closing
    parenthesis of a call without a trailing comma follows the new argument)."""
    if not args:
        return [keyword_arg(name, value)]
    last = args[-1]
    between = _line_break(opening)
    if between is not None:
        if isinstance(last.comma, cst.Comma):
            after = last.comma.whitespace_after
            closing = after
            if isinstance(after, cst.ParenthesizedWhitespace):
                between = between.with_changes(first_line=after.first_line)
                closing = after.with_changes(first_line=cst.TrailingWhitespace())
            return [
                *args[:-1],
                last.with_changes(comma=last.comma.with_changes(whitespace_after=between)),
                keyword_arg(name, value, comma=cst.Comma(whitespace_after=closing)),
            ]
        return [
            *args[:-1],
            last.with_changes(
                comma=cst.Comma(whitespace_after=between),
                whitespace_after_arg=cst.SimpleWhitespace(""),
            ),
            keyword_arg(name, value).with_changes(whitespace_after_arg=last.whitespace_after_arg),
        ]
    if isinstance(last.comma, cst.Comma):  # a trailing comma: the new argument keeps it
        return [*args, keyword_arg(name, value, comma=last.comma)]
    comma = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
    return [*args[:-1], last.with_changes(comma=comma), keyword_arg(name, value)]
