"""Settings from ``[tool.amplint]`` and the rule selection built from them.

Reading a configuration file never executes anything: it is parsed as TOML,
checked against a fixed list of keys and turned into a frozen ``Settings``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from amplint.hashing import hex_digest

if TYPE_CHECKING:
    import pathspec

# tomllib, json and difflib are imported where they are used: a file checked where no
# configuration file exists (or with the cache off) never needs them, and each one costs a
# tenth of the budget of a one-file run (issue 21).

__all__ = [
    "ALL_SELECTOR",
    "CONFIG_FILENAMES",
    "ConfigError",
    "Settings",
    "codes_ignored_for",
    "glob_matches",
    "load_settings",
    "relative_to_root",
    "resolve_selection",
    "selector_codes",
    "selector_hint",
]

#: Selects every known code, as ruff's ``ALL`` does.
ALL_SELECTOR = "ALL"

#: Files looked for in each directory, highest priority first (ruff's order for its own files).
CONFIG_FILENAMES = (".amplint.toml", "amplint.toml", "pyproject.toml")

_LIST_KEYS = ("select", "ignore", "extend-select", "exclude", "extend-exclude")
_TABLE_KEYS = ("per-file-ignores",)
_BOOL_KEYS = ("force-exclude",)
_KNOWN_KEYS = _LIST_KEYS + _TABLE_KEYS + _BOOL_KEYS

# Bumped whenever the meaning of a setting changes, so that old cache entries stop matching.
_FINGERPRINT_VERSION = 1


class ConfigError(Exception):
    """A configuration problem, worded as one line for the user."""


@dataclass(frozen=True)
class Settings:
    """The effective ``[tool.amplint]`` settings of one project.

    ``select`` and ``exclude`` are ``None`` when the configuration does not set them, which
    means "the defaults" (the default rule set; the default excluded directories).
    """

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    per_file_ignores: tuple[tuple[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str, ...] | None = None
    extend_exclude: tuple[str, ...] = ()
    #: Apply every exclusion (the defaults too) to paths named on the command line, as
    #: pre-commit names every changed file.
    force_exclude: bool = False
    project_root: Path = field(default_factory=Path.cwd)
    config_path: Path | None = None

    def fingerprint(self) -> str:
        """A stable hash of everything that changes what a check reports."""
        payload = {
            "version": _FINGERPRINT_VERSION,
            "select": _maybe_list(self.select),
            "ignore": list(self.ignore),
            "extend_select": list(self.extend_select),
            "per_file_ignores": [[glob, list(codes)] for glob, codes in self.per_file_ignores],
            "exclude": _maybe_list(self.exclude),
            "extend_exclude": list(self.extend_exclude),
            "force_exclude": self.force_exclude,
            "project_root": str(self.project_root),
        }
        import json

        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hex_digest(text.encode("utf-8"), size=32)


def _maybe_list(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


# --------------------------------------------------------------------------- loading


def load_settings(config: Path | None, start: Path) -> Settings:
    """Settings from ``config`` when given, else from the nearest configuration above ``start``.

    Without ``config`` the search walks up from ``start`` (a file or a directory) and takes the
    first ``.amplint.toml``/``amplint.toml``, or ``pyproject.toml`` that has a ``[tool.amplint]``
    table; with none found the defaults apply and the project root is ``start``.
    """
    if config is not None:
        path = _absolute(config)
        return _settings_from_file(path, _read_toml(path))
    start_dir = _absolute(start)
    if start_dir.is_file():
        start_dir = start_dir.parent
    found = _find_config(start_dir)
    if found is None:
        return Settings(project_root=start_dir)
    path, document = found
    return _settings_from_file(path, document)


def _absolute(path: Path) -> Path:
    # abspath, not resolve(): symlinked checkouts keep the paths the user typed.
    return Path(os.path.abspath(path))


def _find_config(start_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    for directory in (start_dir, *start_dir.parents):
        for name in CONFIG_FILENAMES:
            candidate = directory / name
            if not candidate.is_file():
                continue
            document = _read_toml(candidate)
            if name != "pyproject.toml" or _amplint_table(candidate, document) is not None:
                return candidate, document
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised only on Python 3.10
        import tomli as tomllib

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration is not valid UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {_one_line(str(exc))}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _amplint_table(path: Path, document: Mapping[str, Any]) -> Mapping[str, Any] | None:
    tool = document.get("tool")
    if tool is None:
        return None
    if not isinstance(tool, Mapping):
        raise ConfigError(f"{path}: 'tool' must be a table")
    table = tool.get("amplint")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [tool.amplint] must be a table")
    return table


def _settings_from_file(path: Path, document: dict[str, Any]) -> Settings:
    if path.name == "pyproject.toml":
        table = _amplint_table(path, document) or {}
        where = "[tool.amplint]"
    else:
        table = document
        where = "top level"
    values = _normalized_keys(path, table, where)
    return Settings(
        select=_optional_strings(path, values, "select"),
        ignore=_optional_strings(path, values, "ignore") or (),
        extend_select=_optional_strings(path, values, "extend-select") or (),
        per_file_ignores=_per_file_ignores(path, values.get("per-file-ignores")),
        exclude=_optional_strings(path, values, "exclude"),
        extend_exclude=_optional_strings(path, values, "extend-exclude") or (),
        force_exclude=_bool(path, values, "force-exclude"),
        project_root=path.parent,
        config_path=path,
    )


def _normalized_keys(path: Path, table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Map snake_case spellings onto the kebab-case ones and reject anything unknown."""
    values: dict[str, Any] = {}
    for key, value in table.items():
        canonical = key.replace("_", "-")
        if canonical not in _KNOWN_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' in {where}{_key_hint(canonical)}")
        if canonical in values:
            raise ConfigError(f"{path}: '{canonical}' is given twice (kebab-case and snake_case)")
        values[canonical] = value
    return values


def _key_hint(key: str) -> str:
    from difflib import get_close_matches

    close = get_close_matches(key, _KNOWN_KEYS, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (known keys: {', '.join(_KNOWN_KEYS)})"


def _bool(path: Path, values: Mapping[str, Any], key: str) -> bool:
    value = values.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: '{key}' must be true or false")
    return value


def _optional_strings(path: Path, values: Mapping[str, Any], key: str) -> tuple[str, ...] | None:
    if key not in values:
        return None
    return _strings(path, key, values[key])


def _strings(path: Path, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{path}: '{key}' must be a list of strings")
    if any(not item.strip() for item in value):
        raise ConfigError(f"{path}: '{key}' contains an empty string")
    return tuple(item.strip() for item in value)


def _per_file_ignores(path: Path, value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: 'per-file-ignores' must be a table of glob = [codes]")
    return tuple(
        (glob, _strings(path, f"per-file-ignores.{glob}", codes)) for glob, codes in value.items()
    )


# --------------------------------------------------------------------------- rule selection


def selector_codes(selector: str, known_codes: Collection[str]) -> frozenset[str]:
    """The codes a selector stands for: ``ALL``, an exact code, or a code prefix."""
    if selector == ALL_SELECTOR:
        return frozenset(known_codes)
    matched = frozenset(code for code in known_codes if code.startswith(selector))
    if not matched:
        hint = selector_hint(selector, known_codes)
        raise ConfigError(f"unknown rule selector: {selector}{hint}")
    return matched


def selector_hint(selector: str, known_codes: Collection[str]) -> str:
    """A hint for a mistyped selector (" (did you mean AMP001?)"), or why it cannot be
    selected; empty when there is none."""
    from amplint.catalog import PARSE_ERROR_CODE, by_code

    if len(selector) > len("AMP") and PARSE_ERROR_CODE.startswith(selector.upper()):
        return (
            f" ({PARSE_ERROR_CODE}, a file that cannot be parsed, is always reported: it cannot "
            "be selected or ignored)"
        )
    upper = selector.upper()
    if upper != selector and any(code.startswith(upper) for code in known_codes):
        return f" (did you mean {upper}? codes are upper case)"
    for item in by_code().values():
        if item.name == selector.lower() and item.code in known_codes:
            return f" (did you mean {item.code}? select codes, not names)"
    from difflib import get_close_matches

    close = get_close_matches(upper, sorted(known_codes), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def _specificity(selector: str) -> int:
    # ALL < AMP < AMP0 < AMP00 < AMP001: a longer prefix names fewer rules, so it wins.
    return -1 if selector == ALL_SELECTOR else len(selector)


class _Layer(NamedTuple):
    """One source of selectors (the defaults, the configuration, the command line)."""

    select: Sequence[str] | None
    extend_select: Sequence[str]
    ignore: Sequence[str]
    #: where a key of this layer was written, for error messages: ``where("ignore")``.
    where: Callable[[str], str] | None = None


def _config_origin(settings: Settings) -> Callable[[str], str]:
    file = str(settings.config_path) if settings.config_path else "configuration"

    def where(key: str) -> str:
        return f"{file}: '{key}'"

    return where


def _option_origin(key: str) -> str:
    return f"--{key}"


def resolve_selection(
    settings: Settings,
    *,
    select: Sequence[str] | None,
    ignore: Sequence[str] | None,
    extend_select: Sequence[str] | None,
    known_codes: Collection[str],
    default_codes: Collection[str],
) -> frozenset[str]:
    """The enabled codes: defaults, then the configuration, then the command line, as ruff does.

    A layer that sets ``select`` starts afresh (so ``--select`` replaces the configuration's
    selection, ignores included); a layer without it adds its ``extend-select`` and removes its
    ``ignore`` from what the layers before it left. Within one layer the more specific selector
    wins (``select = ["AMP"]`` with ``ignore = ["AMP001"]`` drops AMP001, and the reverse keeps
    it), and at equal specificity ``ignore`` wins.

    An unknown selector is an error that names where it was written (the configuration file
    and key, or the option), also one in ``per-file-ignores``.
    """
    config_origin = _config_origin(settings)
    layers = (
        _Layer(select=tuple(default_codes), extend_select=(), ignore=()),
        _Layer(settings.select, settings.extend_select, settings.ignore, config_origin),
        _Layer(select, extend_select or (), ignore or (), _option_origin),
    )
    for glob, selectors in settings.per_file_ignores:
        for selector in selectors:
            _checked(selector, known_codes, config_origin(f"per-file-ignores.{glob}"))
    enabled: set[str] = set()
    for layer in layers:
        updates = _layer_updates(layer, known_codes)
        if layer.select is not None:
            enabled = set()
        for code, on in updates.items():
            if on:
                enabled.add(code)
            else:
                enabled.discard(code)
    return frozenset(enabled)


def _checked(selector: str, known_codes: Collection[str], where: str | None) -> frozenset[str]:
    try:
        return selector_codes(selector, known_codes)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}" if where else str(error)) from None


def _layer_updates(layer: _Layer, known_codes: Collection[str]) -> dict[str, bool]:
    tagged = [(selector, True, "select") for selector in layer.select or ()]
    tagged += [(selector, True, "extend-select") for selector in layer.extend_select]
    tagged += [(selector, False, "ignore") for selector in layer.ignore]
    # Stable sort: at one specificity the ignores come after the selects and so override them.
    tagged.sort(key=lambda item: _specificity(item[0]))
    updates: dict[str, bool] = {}
    for selector, on, key in tagged:
        where = layer.where(key) if layer.where else None
        for code in _checked(selector, known_codes, where):
            updates[code] = on
    return updates


# --------------------------------------------------------------------------- per-file ignores


def glob_matches(pattern: str, relative: str | None, basename: str) -> bool:
    """Whether a configuration glob matches a file, with ``.gitignore`` semantics.

    ``relative`` is the POSIX path below the project root (``None`` outside it); a pattern
    without a slash matches the basename at any depth, one with a slash is anchored at the
    project root, and ``**`` spans directories.
    """
    if relative is not None:
        return bool(_compiled(pattern).match_file(relative))
    # Outside the project root only the basename is known: anchored patterns cannot apply.
    if "/" in pattern.rstrip("/"):
        return False
    return bool(_compiled(pattern).match_file(basename))


_SPEC_CACHE: dict[str, pathspec.GitIgnoreSpec] = {}


def _compiled(pattern: str) -> pathspec.GitIgnoreSpec:
    spec = _SPEC_CACHE.get(pattern)
    if spec is None:
        import pathspec  # imported on first use: a one-file check never needs it

        spec = _SPEC_CACHE[pattern] = pathspec.GitIgnoreSpec.from_lines([pattern])
    return spec


def relative_to_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str | None:
    """``path`` relative to ``root`` in POSIX form, or ``None`` when it lies outside."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute, os.path.abspath(root))
    if relative == os.curdir or relative.startswith(os.pardir + os.sep) or relative == os.pardir:
        return None
    return Path(relative).as_posix()


def codes_ignored_for(
    settings: Settings, path: Path, *, known_codes: Collection[str] | None = None
) -> frozenset[str]:
    """The ``per-file-ignores`` that apply to ``path``.

    Without ``known_codes`` the selectors come back as written (``AMP001``, ``AMP0``, ``ALL``);
    with it they are expanded to the codes they name, which is what membership tests need.
    A glob starting with ``!`` applies to the files it does *not* match, as in ruff.
    """
    if not settings.per_file_ignores:
        return frozenset()
    relative = relative_to_root(path, settings.project_root)
    basename = Path(path).name
    selectors = _matching_selectors(settings.per_file_ignores, relative, basename)
    if known_codes is None:
        return frozenset(selectors)
    return frozenset(code for s in selectors for code in selector_codes(s, known_codes))


def _matching_selectors(
    table: Iterable[tuple[str, tuple[str, ...]]], relative: str | None, basename: str
) -> Iterator[str]:
    for glob, selectors in table:
        negated = glob.startswith("!")
        pattern = glob[1:] if negated else glob
        if glob_matches(pattern, relative, basename) != negated:
            yield from selectors
