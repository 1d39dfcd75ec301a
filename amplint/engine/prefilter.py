"""Deciding cheaply that a file cannot produce a finding, so it is never parsed with libcst.

Two stages, both sound for rules whose ``tokens`` are identifiers (names, attributes,
imported names) — which every rule's are, since the analysis only resolves identifiers:

1. the raw bytes must contain every token group of some selected rule, as whole words;
2. CPython's ``ast`` (much faster than libcst) must show those words as identifiers in
   code, not only in strings, comments or docstrings.

Both stages work on codes (:func:`candidate_codes`, words from :mod:`amplint.engine.words`)
before any rule module or libcst is imported: a file that no rule can matter to costs a
read and a byte search, nothing more.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    import ast


class _HasWords(Protocol):
    """A rule class, or a code with its words: what both stages filter."""

    tokens: tuple[tuple[str, ...], ...]


_T = TypeVar("_T", bound=_HasWords)

#: A token that starts with this marks a part of a name (``"~scaler"``: any identifier that
#: contains "scaler", in any case), for rules that recognise objects by how they are named.
PART = "~"
#: A token that starts with this names a keyword argument given a literal:
#: ``"=precision:16-mixed"`` is ``precision="16-mixed"`` (or ``precision=16-mixed`` for an
#: int or bool, written as Python prints it), for rules about configuration switches. The
#: raw-bytes stage looks for ``name=value`` written on one line (a value spelled with
#: escapes, split by implicit concatenation or over lines is missed: a miss, never a finding).
KEYWORD = "="
#: A token that starts with this names a module the code imports (``"^lightning"``:
#: ``import lightning``, ``from lightning.pytorch import ...``). The raw-bytes stage looks
#: for ``import NAME`` / ``from NAME`` (a name later in ``import a, b`` is missed).
IMPORTED = "^"
#: A token that starts with this names an identifier that counts only where it occurs in
#: code outside *data*: a bare name or attribute chain (``autocast``, ``torch.amp.autocast``)
#: that is an element of a tuple, list or set display (not the tuple of classes an
#: ``isinstance`` checks against), an operand of a comparison, or a key of a dict display;
#: and the class itself that an ``isinstance`` or ``issubclass`` checks against (the last
#: name of its chain: ``autocast`` in ``isinstance(m, torch.amp.autocast)``, whose
#: ``torch`` and ``amp`` count). Such a chain is a table entry, a value compared or a type
#: tested, never called or entered: a rule may mark a word so when it reports and resolves
#: nothing through one (dynamo's modules list ``torch.amp.autocast`` in tables of
#: thousand-line functions). Written ``"!word/name"``, the word does not count either where
#: it is an attribute of the bare name ``name`` (``"!amp/torch"``: ``torch.amp`` is the
#: current module, the deprecated ones are reached through ``cuda`` or ``cpu``). The
#: raw-bytes stage reads it as the plain word.
LIVE = "!"
#: In a live token, what follows this names the receiver it does not count on.
RECEIVER = "/"


def bare(word: str) -> str:
    """The identifier a plain, imported (``^``) or live (``!``) word searches for."""
    if word.startswith(LIVE):
        return word[1:].partition(RECEIVER)[0]
    return word[1:] if word.startswith(IMPORTED) else word


_IDENTIFIER_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class SourceWords:
    """The raw bytes, searched once per word however many rules ask about it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._lower: bytes | None = None
        self._known: dict[str, bool] = {}
        #: words not even present as substrings: no word containing one can be present.
        self._missing: list[bytes] = []
        #: the same for the lowered bytes (name parts).
        self._missing_lowered: list[bytes] = []
        self._code: bytes | bool | None = False

    def has_group(self, group: tuple[str, ...]) -> bool:
        return any(self.has(word) for word in group)

    def note_absent(self, text: bytes, *, lowered: bool) -> None:
        """Record that ``text`` is not even a substring of the bytes (of the lowered bytes):
        later searches of words containing it are answered without a scan."""
        (self._missing_lowered if lowered else self._missing).append(text)

    def lowered(self) -> bytes:
        """The bytes in lower case, made once (name-part words search them)."""
        if self._lower is None:
            self._lower = self.data.lower()
        return self._lower

    def known_absent(self, group: tuple[str, ...]) -> bool:
        """Whether every word of ``group`` was searched already and not found."""
        known = self._known
        return all(known.get(word) is False for word in group)

    def code_only(self) -> bytes | None:
        """:func:`code_only` of the bytes, made once (the candidates and the syntax check of
        a large file both ask)."""
        if self._code is False:
            self._code = code_only(self.data)
        return self._code  # type: ignore[return-value]

    def may_be_code(self, group: tuple[str, ...]) -> bool:
        """Whether a word of the group may occur in code: False only when every occurrence
        of each of its words sits after a ``#`` with no quote or brace before it on its
        line, in a comment or inside a multi-line string, never code. A cheap look
        before ``ast``: torch's comments name ``amp`` and ``autocast`` in a dozen modules."""
        return any(self._may_be_code(word) for word in group)

    def _may_be_code(self, word: str) -> bool:
        if word.startswith(LIVE):
            word = bare(word)
        if word.startswith((IMPORTED, KEYWORD)):
            return True  # not a plain word: ``ast`` decides
        if word.startswith(PART):
            # A name part, in any case, inside any identifier (torch's ``lowering.py`` says
            # "GradScaler" once, in a comment).
            data = self.lowered()
            found: Iterable[int] = _occurrences(data, word[1:].lower().encode())
        else:
            data = self.data
            found = _whole_words(data, word.encode())
        for start in found:
            # The line as CPython counts them (a lone carriage return ends one too).
            line = max(data.rfind(b"\n", 0, start), data.rfind(b"\r", 0, start)) + 1
            before = data[line:start]
            # Any quote before the word: a string may end between the '#' and it; a brace:
            # the '#' may be text of a multi-line f-string, whose field holds code.
            if b"#" not in before or any(mark in before for mark in _OPENERS):
                return True
        return False

    def has(self, word: str) -> bool:
        known = self._known.get(word)
        if known is None:
            known = self._known[word] = self._search(word)
        return known

    def _search(self, word: str) -> bool:
        if word.startswith(LIVE):
            return self.has(bare(word))
        if word.startswith(IMPORTED):
            name = word[1:]
            return self.has(name) and _imports(self.data, name.encode())
        if word.startswith(KEYWORD):
            name, _, value = word[1:].partition(":")
            return self.has(name) and _keyword_pattern(name, value).search(self.data) is not None
        if word.startswith(PART):
            part = word[1:].lower().encode()
            if any(missing in part for missing in self._missing_lowered):
                return False
            return part in self.lowered()
        encoded = word.encode()
        if any(missing in encoded for missing in self._missing):
            return False
        if self._missing_lowered:  # `scaler` in no case: no `GradScaler` either
            lowered = encoded.lower()
            if any(missing in lowered for missing in self._missing_lowered):
                return False
        if encoded not in self.data:
            self._missing.append(encoded)
            return False
        return next(_whole_words(self.data, encoded), None) is not None


def _whole_words(data: bytes, word: bytes) -> Iterator[int]:
    """Where ``word`` occurs in ``data`` as a whole word. ``bytes.find`` is a fast C scan;
    the word-boundary test runs only where it matched (a regex with look-behinds cannot
    skip ahead and is ~50x slower here)."""
    end = len(data)
    start = data.find(word)
    while start >= 0:
        after = start + len(word)
        if (start == 0 or data[start - 1] not in _IDENTIFIER_BYTES) and (
            after == end or data[after] not in _IDENTIFIER_BYTES
        ):
            yield start
        start = data.find(word, start + 1)


#: What, before a '#' on a word's line, leaves it possibly code (see ``may_be_code``).
_OPENERS = (b'"', b"'", b"{")


def _occurrences(data: bytes, text: bytes) -> Iterator[int]:
    """Where ``text`` occurs in ``data``, as part of a word or not."""
    start = data.find(text)
    while start >= 0:
        yield start
        start = data.find(text, start + 1)


@cache
def _keyword_pattern(name: str, value: str) -> re.Pattern[bytes]:
    """``name=value`` / ``name = "value"`` as written on one line."""
    return re.compile(
        rb"\b"
        + re.escape(name.encode())
        + rb"[ \t]*=[ \t]*[\"']?"
        + re.escape(value.encode())
        + rb"(?![\w-])"
    )


def _imports(data: bytes, name: bytes) -> bool:
    for lead in (b"import ", b"from "):
        start = data.find(lead + name)
        while start >= 0:
            after = start + len(lead) + len(name)
            if after == len(data) or data[after] not in _IDENTIFIER_BYTES:
                return True
            start = data.find(lead + name, start + 1)
    return False


def may_fire(data: bytes, rules: Sequence[_T], source: SourceWords | None = None) -> list[_T]:
    """Stage 1: rules whose token groups all occur in the raw bytes as whole words (or,
    for name parts, anywhere). ``source`` is ``SourceWords(data)`` to search (and keep)."""
    source = source or SourceWords(data)
    # A rule ruled out by words already searched costs no new search: the rules share
    # their rare words (autocast, GradScaler, scaler), so most rules of a file without AMP
    # are decided by the first few.
    return [
        rule
        for rule in rules
        if not any(source.known_absent(group) for group in rule.tokens)
        and all(source.has_group(group) for group in rule.tokens)
    ]


#: The shortest prefix two words share for one scan to look for both.
_SHARED_PREFIX = 8


class _Needle(NamedTuple):
    """A byte string every word it stands for contains, searched in one scan."""

    text: bytes
    #: searched in the lowered bytes (it stands for a name-part word, of any case).
    lowered: bool = False
    #: it stands for one word alone, itself, searched as a whole word (``amp`` is in
    #: "example" and "sample": a substring would open the gate of most files).
    whole_word: bool = False

    def covers(self, other: _Needle) -> bool:
        """Whether every file holding ``other`` holds this needle."""
        if self.lowered:
            return self.text in other.text.lower()
        return not other.lowered and self.text in other.text

    def found(self, source: SourceWords) -> bool:
        if self.whole_word:
            return source.has(self.text.decode())
        if self.text in (source.lowered() if self.lowered else source.data):
            return True
        # Later searches (the project's look at dropped rules) skip the words containing it.
        source.note_absent(self.text, lowered=self.lowered)
        return False


def _shared_length(one: bytes, other: bytes) -> int:
    """The length of the longest prefix the two share."""
    length = 0
    for a, b in zip(one, other, strict=False):
        if a != b:
            break
        length += 1
    return length


def _needle(word: str) -> _Needle:
    """What the raw bytes must contain for ``word`` to be found: the identifier itself (a
    keyword literal's name, an imported module's name), lowered for a name part."""
    if word.startswith(PART):
        return _Needle(word[1:].lower().encode(), lowered=True)
    if word.startswith(KEYWORD):
        return _Needle(word[1:].partition(":")[0].encode())
    return _Needle(bare(word).encode())


class Gate(NamedTuple):
    """A few scans that rule out, at once, a file in which no rule's words can all occur:
    for each rule one of its groups is *covered* (each of its words contains one of the
    needles), so a file with no needle lacks a whole group of every rule. Most files of a
    library hold no AMP word: they cost these scans instead of a search per word."""

    needles: tuple[_Needle, ...]

    def open(self, source: SourceWords) -> bool:
        return any(needle.found(source) for needle in self.needles)


@cache
def gate_for(groups_of_rules: tuple[tuple[tuple[str, ...], ...], ...]) -> Gate:
    """The gate of rules given by their token groups (each rule's groups rarest first)."""
    # Each rule takes its first group, the rarest, unless the needles of all first groups
    # cover another one, which then adds no needle (AMP015's `autocast` rather than its
    # `Function`). Sound whatever the choices: the needles are made from the words of the
    # chosen groups, so each chosen group is covered.
    if any(not groups for groups in groups_of_rules):
        return Gate((_Needle(b""),))  # a rule without words fires anywhere
    first = _needles(word for groups in groups_of_rules for word in groups[0])
    chosen = [
        next(
            (group for group in groups[1:] if all(_covered(word, first) for word in group)),
            groups[0],
        )
        for groups in groups_of_rules
    ]
    return Gate(_needles(word for group in chosen for word in group))


def _covered(word: str, needles: Sequence[_Needle]) -> bool:
    form = _needle(word)
    return any(needle.covers(form) for needle in needles)


def _needles(words: Iterable[str]) -> tuple[_Needle, ...]:
    """The fewest needles covering ``words``: a word that contains a shorter needle adds
    none. A needle that stands for itself alone is searched as a whole word: every word
    but a name part is found only where its identifier is (see :meth:`SourceWords.has`)."""
    forms = {_needle(word) for word in words}
    # Words that share a long prefix (`clip_grad_norm_`, `clip_grad_value_`, ...) are found
    # by one scan for the prefix: fewer scans, each letting through a little more.
    plain = sorted(form.text for form in forms if not form.lowered)
    for one, other in itertools.pairwise(plain):
        shared = one[: _shared_length(one, other)]
        if len(shared) >= _SHARED_PREFIX:
            forms.add(_Needle(shared))
    forms = sorted(forms, key=lambda n: (len(n.text), n.lowered))
    needles: list[_Needle] = []
    for form in forms:
        if not any(needle.covers(form) for needle in needles):
            needles.append(form)
    return tuple(
        _Needle(needle.text, whole_word=True)
        if not needle.lowered and [form for form in forms if needle.covers(form)] == [needle]
        else needle
        for needle in needles
    )


#: libcst's native parser recurses without a guard: nesting beyond what CPython itself
#: accepts can overflow its stack and kill the process, so such files never reach it.
MAX_BRACKET_DEPTH = 150
#: Syntax nodes above which a file is not analysed. Large files are parsed in pieces cut
#: between statements, but one huge statement (a 20k-line table literal) is parsed whole,
#: at several KiB of libcst working memory per node.
MAX_SYNTAX_NODES = 200_000


@dataclass
class CodeFacts:
    """What CPython's ``ast`` tells about a file before libcst is trusted with it."""

    #: identifiers used in code; None when ``ast`` could not parse the file.
    names: set[str] | None = None
    #: those of ``names`` that occur outside data (see :data:`LIVE`).
    live: set[str] | None = None
    #: a reason not to hand the file to libcst at all (too deep, too large).
    refusal: str | None = None
    #: where ``ast`` located its error, for the diagnostic.
    position: tuple[int, int] = (1, 1)
    #: CPython's own syntax error (message, position), when libcst is left to decide: if
    #: libcst refuses the file too, CPython's place is the one to report (libcst's
    #: tokenizer may name the line after the error).
    syntax_error: tuple[str, tuple[int, int]] | None = None
    #: the tree itself, handed on so that later stages (cutting a large file into pieces,
    #: placing findings by line) need not parse again.
    tree: ast.Module | None = None


def inspect_code(data: bytes) -> CodeFacts:
    """Identifiers in code, or why the file must not be parsed with libcst."""
    import ast  # most files never get here: imported on first use
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences and the like
            tree = ast.parse(data)
    except (RecursionError, MemoryError):
        return CodeFacts(refusal="source is nested too deeply to analyse")
    except SyntaxError as error:
        position = (error.lineno or 1, error.offset or 1)
        if "too many" in str(error.msg) or _bracket_depth(data) > MAX_BRACKET_DEPTH:
            return CodeFacts(refusal=f"SyntaxError: {error.msg}", position=position)
        # Perhaps newer syntax than this Python's: libcst decides.
        return CodeFacts(syntax_error=(f"SyntaxError: {error.msg}", position))
    except ValueError:  # NUL bytes and the like: libcst's reading gives the diagnostic
        return CodeFacts()
    found, count, live = scan(tree)
    if count > MAX_SYNTAX_NODES:
        return CodeFacts(
            names=found,
            live=live,
            refusal=f"file too large to analyse ({count:,} syntax nodes; "
            f"the limit is {MAX_SYNTAX_NODES:,})",
        )
    return CodeFacts(names=found, live=live, tree=tree)


_TYPE_CHECKS = frozenset({"isinstance", "issubclass"})


def scan(tree: ast.AST) -> tuple[set[str], int, set[str]]:
    """The identifiers of a tree's code (names, attributes, imported names and modules), how
    many nodes ``ast.walk`` would yield, and the identifiers that occur outside data (see
    :data:`LIVE`); for a word a live token restricts by receiver (``"!amp/torch"``), the
    live set holds that token's ``word/name`` where the word occurs live on another one.

    A stack walk that reads the fields itself and does not descend into names: 3x faster
    than ``ast.walk`` over ``iter_child_nodes`` generators (30 ms against 95 ms on torch's
    160k-node ``common_methods_invocations.py``).
    """
    import ast

    name_type, attribute_type, alias_type, import_from_type, keyword_type, constant_type = (
        ast.Name,
        ast.Attribute,
        ast.alias,
        ast.ImportFrom,
        ast.keyword,
        ast.Constant,
    )
    displays = (ast.Tuple, ast.List, ast.Set)
    compare_type, dict_type, call_type, tuple_type = ast.Compare, ast.Dict, ast.Call, ast.Tuple
    node_type = ast.AST
    live: set[str] = set()
    inert: set[str] = set()  # identifiers seen in data
    add = live.add
    watched = _watched_receivers()
    # The Name and Attribute nodes of the bare chains in data positions (by id: ast nodes
    # compare by identity, and the set is empty in most files).
    data_nodes: set[int] = set()
    # The tuples of classes an `isinstance`/`issubclass` checks against: a type check is a
    # use of each class's module (AMP007 reports `isinstance(s, (torch.cuda.amp.GradScaler,
    # X))`), not of the class itself: the Attribute nodes whose own name is data.
    checked_tuples: set[int] = set()
    checked_classes: set[int] = set()

    def mark(slots: list[ast.expr | None]) -> None:
        for slot in slots:
            chain = slot
            while type(chain) is attribute_type:
                chain = chain.value  # type: ignore[attr-defined]
            if type(chain) is name_type:
                data_nodes.add(id(slot))

    def watch(word: str, receiver: ast.AST | None = None) -> None:
        """``word`` is live: its restricted tokens count unless on their own receiver."""
        on = receiver.id if type(receiver) is name_type else None  # type: ignore[attr-defined]
        for name in watched[word]:
            if name != on:
                add(f"{word}{RECEIVER}{name}")

    count = 0
    stack: list[ast.AST] = [tree]
    pop, push = stack.pop, stack.append
    while stack:
        node = pop()
        count += 1
        kind = type(node)
        if kind is name_type:
            if data_nodes and id(node) in data_nodes:
                inert.add(node.id)  # type: ignore[attr-defined]
            else:
                add(node.id)  # type: ignore[attr-defined]
                if node.id in watched:  # type: ignore[attr-defined]
                    watch(node.id)  # type: ignore[attr-defined]
            count += 1  # its context (Load, Store, Del), a node of its own for ast.walk
            continue
        if kind is alias_type:  # two strings, no nodes below
            for part in node.name.split("."):  # type: ignore[attr-defined]
                add(part)
                if part in watched:
                    watch(part)
            if node.asname:  # type: ignore[attr-defined]
                add(node.asname)  # type: ignore[attr-defined]
                if node.asname in watched:  # type: ignore[attr-defined]
                    watch(node.asname)  # type: ignore[attr-defined]
            continue
        if kind is attribute_type:
            if data_nodes and id(node) in data_nodes:
                inert.add(node.attr)  # type: ignore[attr-defined]
                data_nodes.add(id(node.value))  # type: ignore[attr-defined]
            elif checked_classes and id(node) in checked_classes:
                inert.add(node.attr)  # type: ignore[attr-defined]
            else:
                add(node.attr)  # type: ignore[attr-defined]
                if node.attr in watched:  # type: ignore[attr-defined]
                    watch(node.attr, node.value)  # type: ignore[attr-defined]
        elif kind in displays:
            if not (checked_tuples and id(node) in checked_tuples):
                mark(node.elts)  # type: ignore[attr-defined]
        elif kind is call_type:
            func, args = node.func, node.args  # type: ignore[attr-defined]
            if len(args) > 1 and type(func) is name_type and func.id in _TYPE_CHECKS:
                classes = args[1]
                if type(classes) is tuple_type:
                    checked_tuples.add(id(classes))
                    classes = classes.elts  # type: ignore[attr-defined]
                else:
                    classes = [classes]
                for checked in classes:  # type: ignore[attr-defined]
                    if type(checked) is name_type:
                        data_nodes.add(id(checked))
                    elif type(checked) is attribute_type:
                        checked_classes.add(id(checked))
        elif kind is compare_type:
            mark([node.left, *node.comparators])  # type: ignore[attr-defined]
        elif kind is dict_type:
            mark(node.keys)  # type: ignore[attr-defined]
        elif kind is import_from_type and node.module:  # type: ignore[attr-defined]
            for part in node.module.split("."):  # type: ignore[attr-defined]
                add(part)
                if part in watched:
                    watch(part)
        elif kind is keyword_type and node.arg:  # type: ignore[attr-defined]
            value = node.value  # type: ignore[attr-defined]
            if type(value) is constant_type and isinstance(value.value, (str, int)):
                add(f"{KEYWORD}{node.arg}:{value.value}")  # type: ignore[attr-defined]
        for field in node._fields:
            value = getattr(node, field, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, node_type):
                        push(item)
            elif isinstance(value, node_type):
                push(value)
    return live | inert, count, live


@cache
def _watched_receivers() -> dict[str, frozenset[str]]:
    """Word -> the receivers some live token says it does not count on (see :data:`LIVE`)."""
    found: dict[str, set[str]] = {}
    for word in all_words():
        if word.startswith(LIVE) and RECEIVER in word:
            name, _, receiver = word[1:].partition(RECEIVER)
            found.setdefault(name, set()).add(receiver)
    return {name: frozenset(receivers) for name, receivers in found.items()}


def _bracket_depth(data: bytes) -> int:
    """Deepest bracket nesting, counted naively (brackets in strings count too: an
    overestimate errs on the side of not crashing)."""
    depth = deepest = 0
    for byte in data:
        if byte in b"([{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b")]}":
            depth = max(0, depth - 1)
    return deepest


def identifiers(data: bytes) -> set[str] | None:
    """Every identifier used in the code, or None when ``ast`` cannot parse it."""
    return inspect_code(data).names


def may_fire_in_code(
    names: set[str],
    rules: Sequence[_T],
    *,
    literals_unknown: bool = False,
    live: set[str] | None = None,
) -> list[_T]:
    """Stage 2: rules whose token groups all occur among the code's identifiers.
    ``literals_unknown``: ``names`` say nothing of keyword literals (see
    :func:`code_identifiers`), which then count as present. ``live``: the identifiers that
    occur outside data (see :data:`LIVE`); None: all of ``names`` may."""
    lowered: list[str] | None = None

    def has(word: str) -> bool:
        nonlocal lowered
        if word.startswith(LIVE):
            # Without ``ast``'s reading, every identifier of the code may be live.
            return bare(word) in names if live is None else word[1:] in live
        if word.startswith(KEYWORD) and literals_unknown:
            return True
        if word.startswith(IMPORTED):
            return word[1:] in names
        if not word.startswith(PART):
            return word in names
        if lowered is None:
            lowered = [name.lower() for name in names]
        part = word[1:].lower()
        return any(part in name for name in lowered)

    return [
        rule for rule in rules if all(any(has(word) for word in group) for group in rule.tokens)
    ]


#: Files above this size are stripped of comments and strings before ``ast`` sees them:
#: ``ast.parse`` holds about 85 bytes per byte of source (115 MB for torch's 1.4 MB
#: ``common_methods_invocations.py``, whose AMP words all sit in strings), more than linting
#: any other file of the tree needs; the regex pass costs about what the parse would.
STRIP_ABOVE = 512 * 1024

_STRING = (
    rb"""(?:'''(?:[^'\\]|\\.|'(?!''))*'''"""
    rb'''|"""(?:[^"\\]|\\.|"(?!""))*"""'''
    rb"""|'(?:[^'\\\r\n]|\\.)*'"""
    rb"""|"(?:[^"\\\r\n]|\\.)*")"""
)
#: Comments and strings with a plain prefix are dropped; identifiers are kept whole (with a
#: string glued to them: f-strings, or a keyword such as ``return"x"``), and so are quotes
#: that start no string.
_LEXEME = (
    rb"\#[^\r\n]*"
    rb"|(?:[rRbBuU]|[bB][rR]|[rR][bB])?"
    + _STRING
    + rb"|(?P<keep>[A-Za-z0-9_]+(?:"
    + _STRING
    + rb""")?|['"])"""
)
#: The quotes left in the stripped code: strings glued to a name, or quotes that start none.
#: Found first, then matched as a string: a pattern that may start with a name tries every
#: byte of a megabyte file (80 ms for 44 strings), this one skips to the next quote.
_QUOTE = rb"['\"]"
_F_PREFIXES = frozenset((b"f", b"rf", b"fr"))
_CODING = rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)"


@cache
def _compiled() -> tuple[re.Pattern[bytes], ...]:
    # Compiled on first use: the one-file path of a file without AMP words never needs them.
    return (
        re.compile(_LEXEME, re.DOTALL),
        re.compile(_STRING, re.DOTALL),
        re.compile(_QUOTE),
        re.compile(_CODING),
    )


def code_only(data: bytes) -> bytes | None:
    """``data`` without its comments and (non-f) string literals, or None when unsure.

    Sound for the prefilter: the result holds every identifier of the code (f-strings are
    kept whole, since their fields are code). It is None when the file may not be read the
    way CPython reads it: a coding other than UTF-8 (a multi-byte encoding may hide quotes
    in its second bytes), NUL bytes, a quote that starts no string, a string glued to a name
    other than an f-string prefix, or an f-string whose braces do not balance (Python 3.12
    lets a field reuse the string's own quote, which would end it here too early).
    """
    if b"\x00" in data:
        return None
    lexeme, string, quote, coding = _compiled()
    for line in data.split(b"\n", 2)[:2]:
        cookie = coding.match(line)
        if cookie is not None and cookie.group(1).lower().replace(b"_", b"-") not in (
            b"utf-8",
            b"utf8",
        ):
            return None
    # Each lexeme becomes its `keep` group (None when it is a comment or a string). split()
    # does in C what sub()'s template would do in Python per match (3.11): 1.5x faster.
    code = b"".join([part for part in lexeme.split(data) if part])
    found = quote.search(code)
    while found is not None:
        kept = string.match(code, found.start())
        if kept is None:
            return None
        begin = start = kept.start()
        while begin > 0 and code[begin - 1] in _IDENTIFIER_BYTES:
            begin -= 1
        if code[begin:start].lower() not in _F_PREFIXES:
            return None
        body = kept.group().replace(b"{{", b"").replace(b"}}", b"")
        if body.count(b"{") != body.count(b"}"):
            return None
        found = quote.search(code, kept.end())
    return code


_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def code_identifiers(
    data: bytes, source: SourceWords | None = None
) -> tuple[set[str] | None, bool]:
    """The identifiers of the code, and whether they are exact (``ast``'s, keyword literals
    included) or a superset read from the code without comments and strings (files above
    :data:`STRIP_ABOVE`, whose ``ast`` tree would cost more memory than the rest of the
    run: its keyword literals are then unknown). None when the code cannot be parsed."""
    code = (source or SourceWords(data)).code_only() if len(data) > STRIP_ABOVE else None
    if code is not None:
        return {match.decode() for match in _IDENTIFIER.findall(code)}, False
    return inspect_code(data).names, True


def candidate_rules(
    data: bytes, rules: Sequence[_T], source: SourceWords | None = None
) -> tuple[list[_T], CodeFacts | None]:
    """Both stages: the rules that may fire on ``data``, and what ``ast`` said (None when
    stage 1 already excluded every rule). ``source``: see :func:`may_fire`."""
    candidates = _outside_comments(data, rules, source or SourceWords(data))
    if not candidates:
        return [], None
    facts = inspect_code(data)
    if facts.names is None:
        return candidates, facts
    return may_fire_in_code(facts.names, candidates, live=facts.live), facts


def _outside_comments(data: bytes, rules: Sequence[_T], source: SourceWords) -> list[_T]:
    """Stage 1, and what can be said before ``ast``: the rules whose words occur in the
    bytes, not all of one group only after a ``#``, and, in a file above
    :data:`STRIP_ABOVE`, not only in strings either."""
    if not gate_for(tuple(rule.tokens for rule in rules)).open(source):
        return []
    candidates = [
        rule
        for rule in may_fire(data, rules, source)
        if all(source.may_be_code(group) for group in rule.tokens)
    ]
    if candidates and len(data) > STRIP_ABOVE and (code := source.code_only()) is not None:
        # Keyword literals are strings, which the stripped code has lost: such rules go on.
        in_code = may_fire(code, candidates)
        candidates = [c for c in candidates if c in in_code or _reads_literals(c)]
    return candidates


def _reads_literals(rule: _HasWords) -> bool:
    return any(word.startswith(KEYWORD) for group in rule.tokens for word in group)


class _Code(NamedTuple):
    code: str
    tokens: tuple[tuple[str, ...], ...]


def _reads_bytes_only(word: str) -> bool:
    return not word.startswith(KEYWORD)


def _cheapest_first(groups: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
    """The same groups, in the rule's order (its rarest words first) except that words
    matched by a regex (keyword literals) come last, in a group and among the groups: a
    file that lacks a rule's words is ruled out by byte searches before any regex runs
    (AMP006's ``=precision:16`` alternatives cost more than all its plain words together)."""
    ordered = [tuple(sorted(group, key=_reads_bytes_only, reverse=True)) for group in groups]
    return tuple(sorted(ordered, key=lambda group: not all(map(_reads_bytes_only, group))))


#: code -> its words; None for a static code that no rule implements.
_WORDS: dict[str, _Code | None] = {}


def _words_of(codes: Collection[str]) -> list[_Code]:
    if not _WORDS:
        from amplint.engine.words import WORDS

        _WORDS.update(
            (code, _Code(code, _cheapest_first(groups))) for code, groups in WORDS.items()
        )
    missing = [code for code in codes if code not in _WORDS]
    if missing:
        from amplint.catalog import static_codes

        missing = [code for code in missing if code in static_codes()]
    if missing:  # a rule newer than the table: learn its words from the rule itself
        from amplint.engine.registry import all_rules

        learned = {
            rule.code: _Code(rule.code, _cheapest_first(rule.tokens)) for rule in all_rules()
        }
        _WORDS.update((code, learned.get(code)) for code in missing)
    return [words for code in sorted(codes) if (words := _WORDS.get(code)) is not None]


def candidate_codes(
    data: bytes, codes: Collection[str], source: SourceWords | None = None
) -> tuple[list[str], CodeFacts | None]:
    """:func:`candidate_rules` by code, without importing a rule: the codes whose rules may
    fire on ``data``, and what ``ast`` said (None when the bytes alone ruled out every
    code). Codes without a rule are dropped."""
    found, facts = candidate_rules(data, _words_of(codes), source)
    return [item.code for item in found], facts


def words_of(codes: Collection[str]) -> list[tuple[str, tuple[tuple[str, ...], ...]]]:
    """Each code's word groups (codes without a rule are left out)."""
    return [(item.code, item.tokens) for item in _words_of(codes)]


def mentions_amp(data: bytes, source: SourceWords | None = None) -> bool:
    """Whether any rule's words occur in the raw bytes (stage 1 for every static code),
    outside comments (and, in a file above :data:`STRIP_ABOVE`, outside strings);
    ``source``: see :func:`may_fire`."""
    from amplint.catalog import static_codes

    # A file above STRIP_ABOVE whose words are all in strings is not parsed for its syntax
    # alone: CPython's tree of it would be the run's peak memory.
    return bool(_outside_comments(data, _words_of(static_codes()), source or SourceWords(data)))


@cache
def all_words() -> frozenset[str]:
    """Every word of every static code's groups."""
    from amplint.catalog import static_codes

    return frozenset(
        word for item in _words_of(static_codes()) for group in item.tokens for word in group
    )
