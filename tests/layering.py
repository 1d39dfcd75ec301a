"""Which part of amplint may import which: read from the import statements themselves."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: (importing part, imported module prefix, why it is forbidden). A part is a dotted module
#: prefix; the runtime's files live in ``runtime/`` but are imported as ``amplint.runtime``.
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("amplint", "torch", "the linter must run where torch is not installed"),
    ("amplint.catalog", "", "the catalog is dependency-free (standard library only)"),
    ("amplint.engine", "amplint.rules.", "the engine knows no rule by name"),
    ("amplint.engine", "amplint.output", "the engine knows nothing of output formats"),
    ("amplint.engine", "amplint.cli", "the engine knows nothing of the command line"),
    ("amplint.engine", "amplint.command", "the engine knows nothing of the command line"),
    ("amplint.command", "click", "plain `check` runs without importing click (launch.py)"),
    ("amplint.command", "amplint.cli", "the click layer calls the command, not the reverse"),
    ("amplint.engine", "amplint.api", "the engine is below the API"),
    ("amplint.engine", "amplint.lsp", "the engine is below the language server"),
    ("amplint.analysis", "amplint.rules", "the analysis serves every rule and names none"),
    ("amplint.analysis", "amplint.output", "the analysis knows nothing of output formats"),
    ("amplint.rules", "amplint.output", "rules report findings; emitters print them"),
    ("amplint.rules", "amplint.cli", "rules know nothing of the command line"),
    ("amplint.rules", "amplint.command", "rules know nothing of the command line"),
    ("amplint.rules", "amplint.api", "rules import only the analysis and the contract"),
    ("amplint.rules", "amplint.lsp", "rules know nothing of editors"),
    ("amplint.runtime", "libcst", "the runtime needs torch only"),
    ("amplint.runtime", "amplint.engine", "the runtime does not load the linter"),
    ("amplint.runtime", "amplint.analysis", "the runtime does not load the linter"),
    ("amplint.runtime", "amplint.rules", "the runtime does not load the linter"),
    ("amplint.runtime", "amplint.output", "the runtime prints its own report"),
    ("amplint.runtime", "amplint.api", "the runtime does not load the linter"),
)

#: The linter's parts may not import the runtime, except the `amplint run` command, which
#: hands the script over to it.
RUNTIME_ALLOWED_FROM = ("amplint.cli",)

STANDARD_LIBRARY = frozenset(__import__("sys").stdlib_module_names) | {"__future__"}


@dataclass(frozen=True)
class Crossing:
    path: Path
    line: int
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.why}"


def module_name(path: Path, package_roots: dict[Path, str]) -> str:
    for root, prefix in package_roots.items():
        if path.is_relative_to(root):
            parts = [prefix, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join(parts)
    raise ValueError(f"{path} is in no package root")


def imports_of(path: Path, name: str) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from amplint.rules import amp001_x` names a module
                yield node.lineno, f"{target}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    if prefix.endswith("."):
        return name.startswith(prefix)
    return name == prefix or name.startswith(prefix + ".")


def _applies(part: str, importer: str) -> bool:
    # The runtime is imported as amplint.runtime, yet the linter's rules ("amplint" imports
    # no torch) are not its rules: only the rules written for it apply.
    if _within(importer, "amplint.runtime"):
        return part == "amplint.runtime"
    return _within(importer, part)


def _forbidden(imported: str, prefix: str) -> bool:
    if prefix == "":  # standard library only
        return imported.partition(".")[0] not in STANDARD_LIBRARY
    return _within(imported, prefix)


def crossings(package_roots: dict[Path, str]) -> list[Crossing]:
    found = []
    for root in package_roots:
        for path in sorted(root.rglob("*.py")):
            importer = module_name(path, package_roots)
            for line, imported in imports_of(path, importer):
                for part, prefix, why in FORBIDDEN:
                    if _applies(part, importer) and _forbidden(imported, prefix):
                        found.append(Crossing(path, line, importer, imported, why))
                if (
                    _within(imported, "amplint.runtime")
                    and not _within(importer, "amplint.runtime")
                    and not any(_within(importer, allowed) for allowed in RUNTIME_ALLOWED_FROM)
                ):
                    why = "the linter never imports the runtime"
                    found.append(Crossing(path, line, importer, imported, why))
    return found
