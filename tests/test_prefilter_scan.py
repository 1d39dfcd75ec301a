"""The prefilter's own tree walk finds what ``ast.walk`` finds, node for node."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from amplint.engine.prefilter import KEYWORD, RECEIVER, _watched_receivers, code_only, scan

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"

SNIPPETS = {
    "imports": "import torch.cuda.amp as amp, os\nfrom torch.cuda.amp import autocast as ac\n"
    "from . import sibling\nfrom .. import *\n",
    "match": "match cmd:\n    case Point(x=0, y=yy) | [first, *rest]:\n        pass\n"
    "    case {'k': value, **others} if value > guard:\n        pass\n",
    "comprehensions and lambdas": "f = lambda a, *b, c=d, **e: [x for x in it if x]\n"
    "g = {k: v for k, v in z} or (y async for y in w)\n",
    "f-strings": "s = f'{scaler.get_scale()!r:>{width}} {obj.attr=}'\n",
    "async and decorators": "@deco.attr(arg)\nasync def run(x: Ann[int]) -> Ret:\n"
    "    async with ctx() as c:\n        async for y in gen():\n            await y\n",
    "globals and walrus": "def f():\n    global g\n    nonlocal_free = (w := g)\n    del w\n",
    "try star and starred": "try:\n    a, *b = c\nexcept* (E1, E2) as group:\n    raise X from Y\n",
    "dict keys with None": "d = {**base, 'k': v}\nx[1:2, ::step]\n",
    "data and live chains": "TABLE = (torch.amp.autocast, ac, f(x).autocast, [g])\n"
    "ok = ctx is torch.autocast or {torch.autocast: 1, k.v(): torch.autocast}\n"
    "with torch.autocast('cuda'), (a.b, c)[0]:\n    pass\n"
    "isinstance(m, torch.cuda.amp.GradScaler) and m in {amp.GradScaler}\n",
    "type checks": "isinstance(s, (torch.cuda.amp.GradScaler, X)) or issubclass(c, (a.b,))\n"
    "t = (cuda.amp.autocast, y); isinstance(z, [p.q])\n",
}


def _is_type_check(call: ast.AST | None, classes: ast.AST) -> bool:
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in ("isinstance", "issubclass")
        and len(call.args) > 1
        and call.args[1] is classes
    )


def _in_data(node: ast.expr, parents: dict[ast.AST, ast.AST]) -> bool:
    """Whether ``node`` belongs to a bare name/attribute chain that is a table element, a
    compared operand or a dict key, or is the class a type check names (the prefilter's
    "data"), found through parent links."""
    below = node
    while isinstance(below, ast.Attribute):
        below = below.value
    if not isinstance(below, ast.Name):
        return False  # a chain on a call or subscript: not bare
    top = node
    while isinstance(parents.get(top), ast.Attribute):
        top = parents[top]  # type: ignore[assignment]
    holder = parents.get(top)
    if _is_type_check(holder, top):
        return node is top  # the class tested is data, the modules it is reached through not
    if isinstance(holder, (ast.Tuple, ast.List, ast.Set)):
        if isinstance(holder, ast.Tuple) and _is_type_check(parents.get(holder), holder):
            return node is top  # each class of a type check likewise
        return any(element is top for element in holder.elts)
    if isinstance(holder, ast.Compare):
        return holder.left is top or any(c is top for c in holder.comparators)
    if isinstance(holder, ast.Dict):
        return any(key is top for key in holder.keys)
    return False


def _restricted(word: str, receiver: ast.AST | None = None) -> set[str]:
    """The ``word/name`` entries of a live ``word`` (see ``prefilter.LIVE``): one per name a
    token says it does not count on, but the receiver it is on."""
    on = receiver.id if isinstance(receiver, ast.Name) else None
    return {f"{word}{RECEIVER}{name}" for name in _watched_receivers().get(word, ()) if name != on}


def _reference(tree: ast.AST) -> tuple[set[str], int, set[str]]:
    found: set[str] = set()
    live: set[str] = set()
    count = 0
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        count += 1
        if isinstance(node, ast.Name):
            found.add(node.id)
            if not _in_data(node, parents):
                live.add(node.id)
                live |= _restricted(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
            if not _in_data(node, parents):
                live.add(node.attr)
                live |= _restricted(node.attr, node.value)
        elif isinstance(node, ast.alias):
            found.update(node.name.split("."))
            if node.asname:
                found.add(node.asname)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(node.module.split("."))
        elif isinstance(node, ast.keyword) and node.arg:
            value = node.value
            if type(value) is ast.Constant and isinstance(value.value, (str, int)):
                found.add(f"{KEYWORD}{node.arg}:{value.value}")
    imported_or_literal = {
        word
        for node in ast.walk(tree)
        for word in (
            [*node.name.split("."), *([node.asname] if node.asname else [])]
            if isinstance(node, ast.alias)
            else node.module.split(".")
            if isinstance(node, ast.ImportFrom) and node.module
            else []
        )
    } | {word for word in found if word.startswith(KEYWORD)}
    restricted = {entry for word in imported_or_literal for entry in _restricted(word)}
    live |= imported_or_literal | restricted
    return found | {entry for entry in live if RECEIVER in entry}, count, live


def _torch_files(limit: int) -> list[Path]:
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return []
    return sorted(Path(spec.origin).parent.rglob("*.py"))[:limit]


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippets(name: str) -> None:
    tree = ast.parse(SNIPPETS[name])
    assert scan(tree) == _reference(tree)


def test_corpus_and_torch_files() -> None:
    paths = sorted(CORPUS.rglob("*.py")) + _torch_files(100)
    assert len(paths) > 50
    for path in paths:
        try:
            tree = ast.parse(path.read_bytes())
        except SyntaxError:
            continue
        assert scan(tree) == _reference(tree), path


def _identifiers_kept(data: bytes) -> list[str]:
    """The identifiers of ``data``'s code that ``code_only`` lost (must be none)."""
    code = code_only(data)
    assert code is not None
    names, _, _ = scan(ast.parse(data))
    # Keyword literals (``=precision:16-mixed``) and a word's entry for a live token that
    # excludes a receiver (``amp/torch``) are not identifiers.
    return sorted(
        name
        for name in names
        if not name.startswith(KEYWORD) and RECEIVER not in name and name.encode() not in code
    )


def test_code_only_keeps_every_identifier_of_the_code() -> None:
    paths = sorted(CORPUS.rglob("*.py")) + _torch_files(100)
    checked = 0
    for path in paths:
        data = path.read_bytes()
        try:
            ast.parse(data)
        except SyntaxError:
            continue
        if code_only(data) is None:
            continue
        assert _identifiers_kept(data) == [], path
        checked += 1
    assert checked > 50


def test_code_only_drops_words_in_comments_and_strings() -> None:
    source = (
        b'"""Uses torch.autocast and a GradScaler."""\n'
        b"# scaler.step(optimizer)\n"
        b"x = 'autocast' + r\"GradScaler\\\"\" + b'''\nbackward\n'''\n"
        b'y = f"{step(x)!r} {{autocast}}"\n'
    )
    code = code_only(source)
    assert code is not None
    assert b"autocast" not in code.replace(b"{{autocast}}", b"")
    assert b"GradScaler" not in code and b"scaler" not in code and b"backward" not in code
    assert b"step(x)" in code  # an f-string's fields are code


@pytest.mark.parametrize(
    "source",
    [
        b'f"{d["k"]}"\n',  # Python 3.12: a field reusing the string's quote
        b'return"x"\n',  # a keyword glued to a string
        b'x = "unterminated\n',
        b"# -*- coding: latin-1 -*-\nx = 1\n",
        b"x = 1\x00\n",
    ],
)
def test_code_only_refuses_what_it_might_misread(source: bytes) -> None:
    assert code_only(source) is None


@pytest.mark.parametrize(
    ("commented", "code"),
    [
        (
            b"import torch\n"
            b"# we used to wrap this in torch.autocast and call loss.backward() here\n"
            b"def f(x):\n"
            b"    return x  # autocast: no longer\n",
            "AMP001",
        ),
        # AMP009 knows a scaler by a part of its name, in any case: only comments say it.
        (
            b"import torch\n"
            b"# the AMP / GradScaler ops are lowered elsewhere\n"
            b"def lower(x):\n"
            b"    return x.half()  # MyScaler handles float16\n",
            "AMP009",
        ),
    ],
)
def test_words_only_in_comments_never_reach_ast(commented: bytes, code: str) -> None:
    from amplint.engine.prefilter import candidate_codes

    assert candidate_codes(commented, [code]) == ([], None)


@pytest.mark.parametrize(
    ("source", "code", "reads"),
    [
        # the same words in code as well as in a comment
        (
            b"import torch\n# autocast\nwith torch.autocast('cuda'):\n    loss.backward()\n",
            "AMP001",
            True,
        ),
        (b"import torch\n# GradScaler\nmy_scaler = make()\nmodel.half()\n", "AMP009", True),
        # a '#' inside a string on the word's line is not a comment
        (
            b"import torch\ntag = 'a # b'; ctx = torch.autocast('cuda')\nloss.backward()\n",
            "AMP001",
            True,
        ),
        (
            b'import torch\ntag = "#"; ctx = torch.autocast("cuda")\nloss.backward()\n',
            "AMP001",
            True,
        ),
        # a quote before the '#': a string may end between them (here it does not: ast says)
        (b"import torch\nx = 'a'  # b'; grad_scaler = make()\nmodel.half()\n", "AMP009", False),
        # a multi-line string that ends after a '#' on the word's line
        (
            b'import torch\ns = """a\n# """; ctx = torch.autocast("cuda")\nloss.backward()\n',
            "AMP001",
            True,
        ),
        (b'import torch\ns = """a\n# """; my_scaler = make()\nmodel.half()\n', "AMP009", True),
        # lines ended by a lone carriage return: the comment ends with its line
        (
            b"# Copyright\rimport torch\rwith torch.autocast('cuda'):\r    loss.backward()\r",
            "AMP001",
            True,
        ),
        (b"# Copyright\rimport torch\rmy_scaler = make()\rmodel.half()\r", "AMP009", True),
        # the '#' is text of a multi-line f-string; its field is code
        (
            b'import torch\nmodel.half()\nmsg = f"""\n# scale {my_scaler.get_scale()}\n"""\n',
            "AMP009",
            True,
        ),
    ],
)
def test_a_word_in_code_is_kept_whatever_comments_say(
    source: bytes, code: str, reads: bool
) -> None:
    # Plain words (AMP001's) and name parts (AMP009's scaler): ``ast`` decides.
    from amplint.engine.prefilter import candidate_codes

    codes, facts = candidate_codes(source, [code])
    assert facts is not None and facts.names is not None
    assert codes == ([code] if reads else [])


# ---------------------------------------------------------------------- the gate


def _gate(rules: list) -> object:
    from amplint.engine.prefilter import gate_for

    return gate_for(tuple(rule.tokens for rule in rules))


def test_the_gate_covers_a_group_of_every_rule() -> None:
    from amplint.engine.registry import all_rules

    gate = _gate(list(all_rules()))
    for rule in all_rules():
        assert any(
            all(any(needle.covers(_needle(word)) for needle in gate.needles) for word in group)
            for group in rule.tokens
        ), rule.code


def test_the_gate_opens_wherever_a_rule_may_fire() -> None:
    """Soundness on real files: the gate never closes on bytes in which some rule's words
    all occur (the search it replaces)."""
    from amplint.engine.prefilter import SourceWords, may_fire
    from amplint.engine.registry import all_rules

    rules = list(all_rules())
    gates = {rule.code: _gate([rule]) for rule in rules}
    everything = _gate(rules)
    examples = [example.source.encode() for rule in rules for example in rule.invalid]
    files = [path.read_bytes() for path in sorted(CORPUS.rglob("*.py")) + _torch_files(400)]
    opened = 0
    for data in examples + files:
        for rule in may_fire(data, rules):
            assert gates[rule.code].open(SourceWords(data)), rule.code
        if may_fire(data, rules):
            assert everything.open(SourceWords(data))
            opened += 1
    assert opened > 50


def _gate_of_the_catalog() -> object:
    """The gate a run with every static code uses: the word table's groups, rarest first."""
    from amplint.catalog import static_codes
    from amplint.engine.prefilter import gate_for, words_of

    return gate_for(tuple(groups for _, groups in words_of(static_codes())))


def test_the_gate_closes_on_words_that_only_contain_its_needles() -> None:
    from amplint.engine.prefilter import SourceWords

    gate = _gate_of_the_catalog()
    # `amp` inside other words, and no other AMP word at all.
    assert not gate.open(SourceWords(b"def example(sample):\n    return clamp(sample)\n"))
    assert gate.open(SourceWords(b"from torch.cuda import amp\n"))
    assert gate.open(SourceWords(b"x = MY_SCALER\n"))  # a name part, of any case
    # Words sharing a long prefix are found by one scan for it.
    assert gate.open(SourceWords(b"torch.nn.utils.clip_grads_with_norm_(p, 1.0, n)\n"))
    texts = {needle.text for needle in gate.needles}
    assert b"clip_grad" in texts and b"clip_grad_value_" not in texts


def test_what_the_closed_gate_saw_answers_later_searches() -> None:
    from amplint.engine.prefilter import SourceWords

    source = SourceWords(b"import os\nprint(os.sep)\n")
    assert not _gate_of_the_catalog().open(source)
    assert not source.has("get_autocast_gpu_dtype") and not source.has("~Scaler")
    assert not source.has("clip_grad_norm_")


def _needle(word: str) -> object:
    from amplint.engine.prefilter import _needle

    return _needle(word)


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        (b'x = f"{scaler}" + rf"{autocast}"\n', [b"scaler", b"autocast"]),
        (b'x = F"{a}"\ny = Rb"b" + fR"{c}"\n', [b"a", b"c"]),
    ],
)
def test_code_only_keeps_the_fields_of_f_strings(source: bytes, kept: list[bytes]) -> None:
    code = code_only(source)
    assert code is not None and all(word in code for word in kept)


@pytest.mark.parametrize("source", [b'x = abf"{a}"\n', b'x = 1 if y else"z"\n'])
def test_code_only_refuses_strings_glued_to_other_names(source: bytes) -> None:
    assert code_only(source) is None


def test_a_type_check_against_a_tuple_of_classes_is_a_use() -> None:
    """`isinstance(s, (torch.cuda.amp.GradScaler, X))` uses the legacy class (AMP007 reports
    it): the tuple is not a table the prefilter may skip."""
    from amplint.engine.prefilter import candidate_codes

    source = (
        b"import torch\n\ndef step(scaler, loss):\n"
        b"    if isinstance(scaler, (torch.cuda.amp.GradScaler, MyScaler)):\n"
        b"        scaler.scale(loss).backward()\n"
    )
    assert candidate_codes(source, ["AMP007"])[0] == ["AMP007"]
    # The same names in a table stay data.
    table = b"import torch\n\nKNOWN = (torch.cuda.amp.GradScaler, MyScaler)\n"
    assert candidate_codes(table, ["AMP007"])[0] == []


def test_a_type_check_against_autocast_makes_no_region() -> None:
    """The class a type check names is data to live words: ``isinstance(m, autocast)``
    enters no region (dynamo's builder.py tests values so), the modules it is reached
    through still count."""
    from amplint.engine.prefilter import candidate_codes

    region_rules = ["AMP001", "AMP008", "AMP012", "AMP017"]
    tested = (
        b"import torch\n\ndef wrap(value, loss, optimizer):\n"
        b"    if isinstance(value, torch.amp.autocast_mode.autocast):\n"
        b"        loss.backward()\n        optimizer.step()\n"
    )
    assert candidate_codes(tested, region_rules)[0] == []
    for single in (b"autocast", b"(autocast, nullcontext)"):
        source = tested.replace(b"torch.amp.autocast_mode.autocast", single)
        assert candidate_codes(source, ["AMP017"])[0] == []
    entered = tested.replace(
        b"    if isinstance(value, torch.amp.autocast_mode.autocast):\n",
        b"    with torch.autocast('cuda'):\n",
    )
    assert candidate_codes(entered, region_rules)[0] == region_rules


@pytest.mark.parametrize(
    ("source", "legacy"),
    [
        (b"scaler = torch.amp.GradScaler('cuda')\nx = torch.cuda.device_count()\n", False),
        (b"with torch.amp.autocast('cuda'):\n    y = torch.cuda.current_device()\n", False),
        (b"scaler = torch.cuda.amp.GradScaler()\n", True),
        (b"import torch.cuda as tc\nscaler = tc.amp.GradScaler()\n", True),
        (b"from torch import cuda as cu\nwith cu.amp.autocast():\n    pass\n", True),
        (b"c = torch.cuda\nscaler = c.amp.GradScaler()\n", True),
        (b"from torch.cuda import amp\nscaler = amp.GradScaler()\n", True),
        (b"from torch.cpu.amp import autocast\nwith autocast():\n    pass\n", True),
    ],
)
def test_amp_counts_for_the_deprecated_api_except_as_torch_amp(source: bytes, legacy: bool) -> None:
    """``torch.amp`` is the current module: a file that writes ``amp`` only so, beside
    other uses of ``torch.cuda``, is no AMP007 candidate; the legacy modules reached through
    ``cuda`` or ``cpu``, or an alias of one, are."""
    from amplint.engine.prefilter import candidate_codes, may_fire_in_code, words_of

    data = b"import torch\n" + source
    assert candidate_codes(data, ["AMP007"])[0] == (["AMP007"] if legacy else [])
    # Where the identifiers come from the text, not ``ast`` (the project's look at a large
    # file), nothing says where a word was written: it counts.
    groups = dict(words_of(["AMP007"]))["AMP007"]

    class Rule:
        tokens = groups

    assert may_fire_in_code({"torch", "amp", "cuda"}, [Rule], literals_unknown=True)
