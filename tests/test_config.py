"""Settings loading, rule selection and per-file ignores (amplint.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amplint.config import (
    ConfigError,
    Settings,
    codes_ignored_for,
    load_settings,
    resolve_selection,
)

KNOWN = ("AMP001", "AMP002", "AMP003", "AMP010", "AMP101", "AMP999")
DEFAULT = ("AMP001", "AMP002", "AMP003", "AMP010", "AMP999")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def selection(
    settings: Settings,
    *,
    select: list[str] | None = None,
    ignore: list[str] | None = None,
    extend_select: list[str] | None = None,
) -> set[str]:
    return set(
        resolve_selection(
            settings,
            select=select,
            ignore=ignore,
            extend_select=extend_select,
            known_codes=KNOWN,
            default_codes=DEFAULT,
        )
    )


# --------------------------------------------------------------------------- loading


def test_no_configuration_gives_defaults_rooted_at_start(tmp_path: Path) -> None:
    settings = load_settings(None, tmp_path)
    assert settings.select is None
    assert settings.exclude is None
    assert settings.ignore == ()
    assert settings.project_root == tmp_path
    assert settings.config_path is None


def test_nearest_pyproject_with_tool_amplint_wins(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nselect = ["AMP001"]\n')
    # A closer pyproject.toml without [tool.amplint] is skipped, as ruff does.
    write(tmp_path / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n')
    start = tmp_path / "pkg" / "src"
    start.mkdir()
    settings = load_settings(None, start)
    assert settings.select == ("AMP001",)
    assert settings.project_root == tmp_path
    assert settings.config_path == tmp_path / "pyproject.toml"


def test_start_may_be_a_file(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nignore = ["AMP002"]\n')
    module = write(tmp_path / "train.py", "")
    assert load_settings(None, module).ignore == ("AMP002",)


def test_all_keys_kebab_case(tmp_path: Path) -> None:
    config = write(
        tmp_path / "pyproject.toml",
        """
[tool.amplint]
select = ["AMP0"]
ignore = ["AMP003"]
extend-select = ["AMP101"]
exclude = ["legacy"]
extend-exclude = ["gen/"]

[tool.amplint.per-file-ignores]
"tests/*" = ["AMP001", "AMP002"]
""",
    )
    settings = load_settings(config, tmp_path / "elsewhere")
    assert settings == Settings(
        select=("AMP0",),
        ignore=("AMP003",),
        extend_select=("AMP101",),
        per_file_ignores=(("tests/*", ("AMP001", "AMP002")),),
        exclude=("legacy",),
        extend_exclude=("gen/",),
        project_root=tmp_path,
        config_path=config,
    )


def test_snake_case_keys_are_accepted(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[tool.amplint]\nextend_select = ["AMP101"]\nper_file_ignores = {"a.py" = ["AMP001"]}\n',
    )
    settings = load_settings(None, tmp_path)
    assert settings.extend_select == ("AMP101",)
    assert settings.per_file_ignores == (("a.py", ("AMP001",)),)


def test_both_spellings_of_one_key_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.amplint]\nextend-select = []\nextend_select = []\n")
    with pytest.raises(ConfigError, match="given twice"):
        load_settings(None, tmp_path)


def test_explicit_amplint_toml_uses_top_level_keys(tmp_path: Path) -> None:
    config = write(tmp_path / "conf" / "amplint.toml", 'select = ["AMP002"]\n')
    settings = load_settings(config, tmp_path)
    assert settings.select == ("AMP002",)
    assert settings.project_root == tmp_path / "conf"
    assert settings.config_path == config


def test_amplint_toml_is_found_while_walking_up(tmp_path: Path) -> None:
    write(tmp_path / "amplint.toml", 'ignore = ["AMP010"]\n')
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nignore = ["AMP001"]\n')
    # amplint.toml takes priority over pyproject.toml in the same directory.
    assert load_settings(None, tmp_path).ignore == ("AMP010",)


def test_explicit_pyproject_without_table_gives_defaults(tmp_path: Path) -> None:
    config = write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    settings = load_settings(config, tmp_path)
    assert settings.select is None
    assert settings.config_path == config


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nselect = ["AMP001"]\n')
    monkeypatch.chdir(tmp_path)
    settings = load_settings(Path("pyproject.toml"), Path("."))
    assert settings.config_path == tmp_path / "pyproject.toml"
    assert settings.project_root.is_absolute()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("line-length = 88\n", r"unknown key 'line-length' in \[tool.amplint\]"),
        ('select = "AMP001"\n', "'select' must be a list of strings"),
        ("ignore = [1, 2]\n", "'ignore' must be a list of strings"),
        ('exclude = [""]\n', "'exclude' contains an empty string"),
        ("per-file-ignores = []\n", "'per-file-ignores' must be a table"),
        ('per-file-ignores = {"x.py" = "AMP001"}\n', "'per-file-ignores.x.py' must be a list"),
    ],
)
def test_invalid_settings_name_file_and_key(tmp_path: Path, body: str, expected: str) -> None:
    config = write(tmp_path / "pyproject.toml", "[tool.amplint]\n" + body)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings(None, tmp_path)
    message = str(raised.value)
    assert str(config) in message
    assert "\n" not in message


def test_invalid_toml_is_a_one_line_error(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.amplint\nselect = [\n")
    with pytest.raises(ConfigError, match="invalid TOML") as raised:
        load_settings(None, tmp_path)
    assert "\n" not in str(raised.value)


def test_tool_amplint_must_be_a_table(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool]\namplint = 3\n")
    with pytest.raises(ConfigError, match=r"\[tool.amplint\] must be a table"):
        load_settings(None, tmp_path)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", tmp_path)


def test_unreadable_config_is_an_error(tmp_path: Path) -> None:
    # A directory in place of the file fails to read on every platform, also as root.
    (tmp_path / "amplint.toml").mkdir()
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(tmp_path / "amplint.toml", tmp_path)


def test_non_utf8_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "amplint.toml").write_bytes(b'select = ["\xff"]\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(tmp_path / "amplint.toml", tmp_path)


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    base = Settings(select=("AMP001",), project_root=tmp_path)
    same = Settings(select=("AMP001",), project_root=tmp_path)
    assert base.fingerprint() == same.fingerprint()
    assert len(base.fingerprint()) == 64
    assert base.fingerprint() != Settings(select=("AMP002",), project_root=tmp_path).fingerprint()
    assert base.fingerprint() != Settings(select=None, project_root=tmp_path).fingerprint()
    assert (
        Settings(project_root=tmp_path).fingerprint()
        != Settings(select=(), project_root=tmp_path).fingerprint()
    )


# --------------------------------------------------------------------------- selection


def test_default_selection(tmp_path: Path) -> None:
    assert selection(Settings(project_root=tmp_path)) == set(DEFAULT)


def test_config_select_replaces_defaults(tmp_path: Path) -> None:
    settings = Settings(select=("AMP001", "AMP101"), project_root=tmp_path)
    assert selection(settings) == {"AMP001", "AMP101"}


def test_prefix_and_all_selectors(tmp_path: Path) -> None:
    settings = Settings(project_root=tmp_path)
    assert selection(settings, select=["AMP00"]) == {"AMP001", "AMP002", "AMP003"}
    assert selection(settings, select=["AMP0"]) == {"AMP001", "AMP002", "AMP003", "AMP010"}
    assert selection(settings, select=["AMP"]) == set(KNOWN)
    assert selection(settings, select=["ALL"]) == set(KNOWN)


def test_ignore_and_extend_select_add_up_across_config_and_cli(tmp_path: Path) -> None:
    settings = Settings(ignore=("AMP001",), extend_select=("AMP101",), project_root=tmp_path)
    got = selection(settings, ignore=["AMP002"], extend_select=None)
    assert got == {"AMP003", "AMP010", "AMP999", "AMP101"}


def test_cli_select_replaces_config_selection(tmp_path: Path) -> None:
    settings = Settings(select=("AMP001", "AMP002"), ignore=("AMP003",), project_root=tmp_path)
    assert selection(settings, select=["AMP003"]) == {"AMP003"}


def test_cli_ignore_applies_on_top_of_cli_select(tmp_path: Path) -> None:
    settings = Settings(project_root=tmp_path)
    assert selection(settings, select=["AMP0"], ignore=["AMP010"]) == {
        "AMP001",
        "AMP002",
        "AMP003",
    }


def test_more_specific_selector_wins_within_a_layer(tmp_path: Path) -> None:
    broad_select = Settings(select=("AMP",), ignore=("AMP00",), project_root=tmp_path)
    assert selection(broad_select) == {"AMP010", "AMP101", "AMP999"}
    narrow_select = Settings(select=("AMP001",), ignore=("AMP",), project_root=tmp_path)
    assert selection(narrow_select) == {"AMP001"}


def test_ignore_wins_at_equal_specificity(tmp_path: Path) -> None:
    settings = Settings(select=("AMP001", "AMP002"), ignore=("AMP001",), project_root=tmp_path)
    assert selection(settings) == {"AMP002"}


@pytest.mark.parametrize("where", ["select", "ignore", "extend_select"])
def test_unknown_cli_selector_is_an_error_naming_the_option(tmp_path: Path, where: str) -> None:
    option = "--" + where.replace("_", "-")
    with pytest.raises(ConfigError, match=rf"^{option}: unknown rule selector: AMP777$"):
        selection(Settings(project_root=tmp_path), **{where: ["AMP777"]})


def test_unknown_config_selector_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown rule selector: E501"):
        selection(Settings(ignore=("E501",), project_root=tmp_path))


@pytest.mark.parametrize(
    ("body", "key", "hint"),
    [
        ('ignore = ["AMP0003"]\n', "'ignore'", "did you mean AMP003?"),
        ('select = ["amp001"]\n', "'select'", "did you mean AMP001? codes are upper case"),
        ('extend-select = ["AMP7"]\n', "'extend-select'", ""),
        ('per-file-ignores = {"t/*" = ["APM010"]}\n', "'per-file-ignores.t/*'", "AMP010"),
    ],
)
def test_config_selector_error_names_file_key_and_suggestion(
    tmp_path: Path, body: str, key: str, hint: str
) -> None:
    config = write(tmp_path / "pyproject.toml", "[tool.amplint]\n" + body)
    settings = load_settings(None, tmp_path)
    with pytest.raises(ConfigError) as raised:
        selection(settings)
    message = str(raised.value)
    assert message.startswith(f"{config}: {key}: unknown rule selector: ")
    assert hint in message and "\n" not in message


def test_syntax_error_code_cannot_be_selected_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AMP999, a file that cannot be parsed, is always"):
        resolve_selection(
            Settings(project_root=tmp_path),
            select=None,
            ignore=["AMP999"],
            extend_select=None,
            known_codes=("AMP001",),
            default_codes=("AMP001",),
        )


def test_mistyped_config_key_gets_a_suggestion(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nextend-exlude = ["x"]\n')
    with pytest.raises(
        ConfigError, match=r"unknown key 'extend-exlude'.*did you mean 'extend-exclude'"
    ):
        load_settings(None, tmp_path)


def test_force_exclude_must_be_a_boolean(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.amplint]\nforce-exclude = "yes"\n')
    with pytest.raises(ConfigError, match="'force-exclude' must be true or false"):
        load_settings(None, tmp_path)
    write(tmp_path / "pyproject.toml", "[tool.amplint]\nforce-exclude = true\n")
    assert load_settings(None, tmp_path).force_exclude is True


def test_selectors_are_case_sensitive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="amp001"):
        selection(Settings(project_root=tmp_path), select=["amp001"])


# --------------------------------------------------------------------------- per-file ignores


def settings_with_ignores(root: Path, table: dict[str, tuple[str, ...]]) -> Settings:
    return Settings(per_file_ignores=tuple(table.items()), project_root=root)


def test_per_file_ignores_match_relative_path(tmp_path: Path) -> None:
    settings = settings_with_ignores(tmp_path, {"tests/*.py": ("AMP001",)})
    assert codes_ignored_for(settings, tmp_path / "tests" / "test_a.py") == {"AMP001"}
    assert codes_ignored_for(settings, tmp_path / "src" / "tests_a.py") == frozenset()
    # Anchored at the project root, so a nested tests/ folder is another path.
    assert codes_ignored_for(settings, tmp_path / "src" / "tests" / "a.py") == frozenset()


def test_per_file_ignores_match_basename_anywhere(tmp_path: Path) -> None:
    settings = settings_with_ignores(tmp_path, {"__init__.py": ("AMP002",), "*.pyi": ("AMP003",)})
    assert codes_ignored_for(settings, tmp_path / "a" / "b" / "__init__.py") == {"AMP002"}
    assert codes_ignored_for(settings, tmp_path / "a" / "stub.pyi") == {"AMP003"}
    # Outside the project only the basename can match.
    outside = tmp_path.parent / "other" / "__init__.py"
    assert codes_ignored_for(settings, outside) == {"AMP002"}


def test_per_file_ignores_double_star_and_union(tmp_path: Path) -> None:
    settings = settings_with_ignores(
        tmp_path, {"scripts/**": ("AMP001",), "scripts/**/train_*.py": ("AMP0",)}
    )
    target = tmp_path / "scripts" / "deep" / "train_x.py"
    assert codes_ignored_for(settings, target) == {"AMP001", "AMP0"}
    assert codes_ignored_for(settings, target, known_codes=KNOWN) == {
        "AMP001",
        "AMP002",
        "AMP003",
        "AMP010",
    }


def test_per_file_ignores_negated_glob(tmp_path: Path) -> None:
    settings = settings_with_ignores(tmp_path, {"!src/**": ("AMP010",)})
    assert codes_ignored_for(settings, tmp_path / "src" / "a.py") == frozenset()
    assert codes_ignored_for(settings, tmp_path / "tools" / "a.py") == {"AMP010"}


def test_per_file_ignores_relative_path_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = settings_with_ignores(tmp_path, {"tests/*": ("AMP001",)})
    assert codes_ignored_for(settings, Path("tests/test_a.py")) == {"AMP001"}


def test_per_file_ignores_unknown_selector_with_known_codes(tmp_path: Path) -> None:
    settings = settings_with_ignores(tmp_path, {"*.py": ("AMP777",)})
    assert codes_ignored_for(settings, tmp_path / "a.py") == {"AMP777"}
    with pytest.raises(ConfigError, match="AMP777"):
        codes_ignored_for(settings, tmp_path / "a.py", known_codes=KNOWN)


def test_loaded_per_file_ignores_apply(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[tool.amplint.per-file-ignores]\n"examples/*" = ["AMP003"]\n',
    )
    settings = load_settings(None, tmp_path / "examples")
    assert codes_ignored_for(settings, tmp_path / "examples" / "demo.py") == {"AMP003"}
