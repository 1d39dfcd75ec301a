"""Which codes to check in a document: ``[tool.amplint]`` plus the client's options.

The configuration is the one file the server reads from disk. It is looked up exactly as
``amplint check`` does (nearest configuration above the document), cached per directory,
and dropped as a whole when the client reports that a configuration file changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amplint.api import codes_for_file, selected_codes
from amplint.config import CONFIG_FILENAMES, ConfigError, Settings, load_settings


def _codes(value: Any) -> tuple[str, ...] | None:
    """A selector list from JSON: a list of strings or one comma-separated string."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return None
    codes = tuple(str(item).strip().upper() for item in items if str(item).strip())
    # An empty list from an editor's settings UI means "not set", not "select nothing".
    return codes or None


@dataclass(frozen=True)
class ClientOptions:
    """``initializationOptions``; each list plays the part of the CLI flag of the same name."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    extend_select: tuple[str, ...] | None = None
    #: URL template for rule documentation links, with ``{code}`` and ``{name}``.
    docs_url: str | None = None
    #: quiet time after a change before the document is checked again.
    debounce_ms: int = 150

    @classmethod
    def from_json(cls, value: Any) -> ClientOptions:
        if not isinstance(value, Mapping):
            return cls()
        # Clients nest their settings differently: accept {"amplint": {...}} as well.
        if isinstance(value.get("amplint"), Mapping):
            value = value["amplint"]
        docs_url = value.get("docsUrl")
        debounce = value.get("debounceMs")
        return cls(
            select=_codes(value.get("select")),
            ignore=_codes(value.get("ignore")),
            extend_select=_codes(value.get("extendSelect", value.get("extend_select"))),
            docs_url=docs_url if isinstance(docs_url, str) and docs_url else None,
            debounce_ms=debounce
            if isinstance(debounce, int) and not isinstance(debounce, bool) and debounce >= 0
            else cls.debounce_ms,
        )


def is_config_file(path: Path) -> bool:
    return path.name in CONFIG_FILENAMES


class CodeSelection:
    """Codes per document, with configuration errors handed to ``report`` once each."""

    def __init__(
        self,
        options: ClientOptions,
        fallback_root: Path,
        report: Callable[[str], None],
    ) -> None:
        self._options = options
        self._fallback_root = fallback_root
        self._report = report
        self._settings: dict[Path, Settings] = {}
        self._reported: set[str] = set()

    def reload(self) -> None:
        self._settings.clear()
        # A fixed configuration error that comes back later deserves a new message.
        self._reported.clear()

    def codes_for(self, path: Path | None) -> frozenset[str]:
        """Enabled codes for the document at ``path`` (``None``: not a file on disk)."""
        directory = path.parent if path is not None else self._fallback_root
        settings = self._settings_for(directory)
        try:
            codes = selected_codes(
                settings,
                select=self._options.select,
                ignore=self._options.ignore,
                extend_select=self._options.extend_select,
            )
        except ConfigError as error:
            self._once(f"amplint: ignoring the editor's rule selection: {error}")
            codes = selected_codes(settings)
        return codes if path is None else codes_for_file(settings, path, codes)

    def _settings_for(self, directory: Path) -> Settings:
        settings = self._settings.get(directory)
        if settings is None:
            try:
                settings = load_settings(None, directory)
            except ConfigError as error:
                # Keep checking with the defaults: a typo in pyproject.toml must not
                # silence the editor.
                self._once(f"amplint: {error}; using the default settings")
                settings = Settings(project_root=directory)
            self._settings[directory] = settings
        return settings

    def _once(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            self._report(message)
