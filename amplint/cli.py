"""The ``amplint`` command line: a thin click layer over :mod:`amplint.command` and
:mod:`amplint.api`.

Option parsing, ``amplint rules`` and ``amplint rule`` read only :mod:`amplint.catalog`: the
rules (and libcst) are imported when a file is really analysed. The console script is
:func:`amplint.launch.main`, which hands every command line but the plainest to :data:`cli`.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from amplint import __version__, api
from amplint.cache import CACHE_DIR_ENV
from amplint.command import (
    EXIT_CLEAN,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Options,
    UserError,
    error_line,
    lint,
)
from amplint.config import ConfigError, load_settings
from amplint.output import FORMATS

if TYPE_CHECKING:
    from amplint.catalog import Threshold


def _codes_option(name: str, help_text: str):  # type: ignore[no-untyped-def]
    return click.option(
        name,
        multiple=True,
        metavar="CODES",
        help=f"{help_text} Comma-separated codes or prefixes (AMP001, AMP0, ALL).",
    )


def _lint_options(*, fix_command: bool):  # type: ignore[no-untyped-def]
    """The options ``check`` and ``fix`` share (``fix`` is ``check --fix``), as ruff's."""
    options = [
        click.argument("paths", nargs=-1, type=click.Path(path_type=Path)),
        _codes_option("--select", "Rules to enable (replaces the configured selection)."),
        _codes_option("--ignore", "Rules to disable."),
        _codes_option("--extend-select", "Rules to enable in addition to the selection."),
        click.option(
            "--config",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Configuration file (pyproject.toml with [tool.amplint], or amplint.toml).",
        ),
        click.option(
            "--output-format",
            type=click.Choice(FORMATS),
            default="concise",
            show_default=True,
            help="How findings are printed.",
        ),
        *(
            []
            if fix_command
            else [click.option("--fix", is_flag=True, help="Apply fixes in place (as `fix`).")]
        ),
        click.option("--unsafe-fixes", is_flag=True, help="Also apply fixes marked unsafe."),
        click.option("--diff", is_flag=True, help="Print the fixes as a diff; write nothing."),
        click.option(
            "--show-fixes",
            is_flag=True,
            help="List the fixes applied per file; without --fix, each finding's fix.",
        ),
        click.option("--exit-zero", is_flag=True, help="Exit 0 even when findings remain."),
        click.option(
            "--exit-non-zero-on-fix",
            is_flag=True,
            help="Exit 1 when a file was fixed, even if nothing remains (for pre-commit).",
        ),
        click.option("--statistics", is_flag=True, help="Count findings per code instead."),
        click.option("-q", "--quiet", is_flag=True, help="Print the findings and nothing else."),
        click.option(
            "--exclude",
            multiple=True,
            metavar="PATTERNS",
            help="Exclude these gitignore-style patterns (replaces the configured exclude "
            "and the default excluded directories).",
        ),
        click.option(
            "--extend-exclude",
            multiple=True,
            metavar="PATTERNS",
            help="Exclude these patterns in addition to the configured ones.",
        ),
        click.option(
            "--force-exclude/--no-force-exclude",
            default=None,
            help="Apply exclusions to paths named on the command line too (pre-commit).",
        ),
        click.option(
            "--stdin-filename",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Read the source from standard input ('-' or no paths) as this file; with "
            "fixes, the fixed source goes to standard output.",
        ),
        click.option("--no-cache", is_flag=True, help="Do not read or write a cache."),
        click.option(
            "--cache-dir",
            type=click.Path(path_type=Path, file_okay=False),
            envvar=CACHE_DIR_ENV,
            show_envvar=True,
            help="Cache directory [default: .amplint_cache at the project root].",
        ),
    ]

    def decorate(function):  # type: ignore[no-untyped-def]
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


class _AmplintGroup(click.Group):
    """Click's usage errors become one line on stderr and exit 2, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[no-untyped-def, override]
        try:
            result = super().main(args, prog_name or "amplint", complete_var, False, **extra)
        except click.exceptions.Abort:
            click.echo("amplint: aborted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.NoSuchOption as error:
            # The one wording for every command (``run`` parses its own options).
            context = error.ctx or click.Context(self)
            click.echo(error_line(_unknown_option(error.option_name, context)), err=True)
            sys.exit(EXIT_ERROR)
        except click.ClickException as error:
            click.echo(error_line(error.format_message()), err=True)
            sys.exit(EXIT_ERROR)
        except UserError as error:
            click.echo(error_line(str(error)), err=True)
            sys.exit(EXIT_ERROR)
        except BrokenPipeError:
            sys.exit(EXIT_CLEAN)
        sys.exit(result if isinstance(result, int) else EXIT_CLEAN)

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[no-untyped-def]
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise click.UsageError(f"no such command '{name}'{hint}", ctx)
        return super().resolve_command(ctx, args)


@click.group(cls=_AmplintGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="amplint")
def cli() -> None:
    """Find and fix misuse of PyTorch Automatic Mixed Precision."""


@cli.command()
@_lint_options(fix_command=False)
def check(**given: Any) -> None:
    """Report AMP misuse in PATHS (default: the current directory; '-': standard input)."""
    sys.exit(lint(Options(**given)))


@cli.command()
@_lint_options(fix_command=True)
def fix(**given: Any) -> None:
    """Apply fixes to PATHS in place (`check --fix`); what cannot be fixed is reported."""
    sys.exit(lint(Options(**given, fix=True)))


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown"]),
    default="text",
    help="markdown: the table kept in README.md.",
)
def rules(fmt: str) -> None:
    """List every code: name, where it is caught, fixable, default-on, summary."""
    click.echo(rules_table(markdown=fmt == "markdown"), nl=False)


def rules_table(*, markdown: bool = False) -> str:
    """Every catalog code; reads the catalog only (no rule is imported)."""
    from amplint.catalog import ALWAYS_REPORTED, CATALOG

    header = ("code", "name", "caught", "fix", "default", "summary")
    rows = [
        (
            f"[{item.code}](docs/rules/{item.code}.md)" if markdown else item.code,
            item.name,
            item.caught,
            "yes" if item.fixable else "no",
            "always" if item.code in ALWAYS_REPORTED else "yes" if item.default_enabled else "no",
            item.summary,
        )
        for item in sorted(CATALOG, key=lambda item: item.code)
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines) + "\n"


@cli.command()
@click.argument("code", required=False)
@click.option("--all", "every", is_flag=True, help="Print the documentation of every code.")
def rule(code: str | None, every: bool) -> None:
    """Print the documentation of CODE (any code `amplint rules` lists)."""
    from amplint.catalog import CATALOG, documentation, entry, known_codes
    from amplint.config import selector_hint

    if every:
        pages = [documentation(item, fixable=item.fixable) for item in CATALOG]
        click.echo("\n".join(pages), nl=False)
        return
    if code is None:
        raise UserError("give a code (amplint rule AMP001) or --all")
    found = entry(code.strip())
    if found is None:
        wanted = code.strip().upper()
        below = [item.code for item in CATALOG if item.code.startswith(wanted)]
        if below and len(wanted) > len("AMP"):
            raise UserError(f"{code} is a prefix of {', '.join(below)}: give one code")
        codes = [*known_codes(), *(item.code for item in CATALOG)]
        raise UserError(f"unknown rule code: {code}{selector_hint(code.strip(), codes)}")
    click.echo(documentation(found, fixable=found.fixable), nl=False)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar=CACHE_DIR_ENV,
    show_envvar=True,
    help="Cache directory [default: .amplint_cache at the project root].",
)
def clean(paths: tuple[Path, ...], cache_dir: Path | None) -> None:
    """Remove the cache (of PATHS' project, default: here)."""
    from amplint.cache import clean as remove_cache

    try:
        settings = load_settings(None, paths[0] if paths else Path("."))
    except ConfigError as error:
        raise UserError(str(error)) from error
    directory = api.cache_directory(settings, cache_dir)
    if remove_cache(directory):
        click.echo(f"Removed cache at {directory}", err=True)


@cli.command()
def server() -> None:
    """Run the language server over stdio (diagnostics and quick fixes in editors)."""
    try:
        from amplint.lsp.server import serve
    except ImportError as error:
        raise UserError(f"`amplint server` needs pygls: install amplint[lsp] ({error})") from error
    serve()


_ALIASES = {"--json": ("--output-format json", "--report FILE")}


def _unknown_option(given: str, context: click.Context) -> str:
    known = [name for param in context.command.params for name in param.opts + param.secondary_opts]
    name = given.split("=", 1)[0]
    close = difflib.get_close_matches(name, [k for k in known if k.startswith("--")], n=1)
    # Names other tools give the same thing (`--json`: ruff's old flag, pytest's plugins).
    close += [alias for alias in _ALIASES.get(name, ()) if alias.split()[0] in known]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"no such option: {name}{hint}"


def _threshold_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per runtime threshold, as the catalog documents it (its one home besides
    ``HealthConfig``, which a runtime test keeps in agreement)."""
    from amplint.catalog import CATALOG

    found: dict[str, tuple[Threshold, list[str]]] = {}
    for item in CATALOG:
        for threshold in item.thresholds:
            found.setdefault(threshold.name, (threshold, []))[1].append(item.code)
    for name, (threshold, codes) in reversed(found.items()):
        text = f"{'/'.join(codes)}: {threshold.meaning} [{threshold.default}]."
        if isinstance(threshold.default, bool):
            # A flag that flips the default: say what it does, not the setting's value.
            state = "on" if threshold.default else "off"
            text = f"{'/'.join(codes)}: {threshold.meaning}; {state} unless this flag is given."
            option = click.option(
                threshold.run_option,
                name,
                is_flag=True,
                flag_value=not threshold.default,
                default=None,
                help=text,
            )
        else:
            option = click.option(
                threshold.run_option, name, type=type(threshold.default), help=text
            )
        command = option(command)
    return command


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--mode", type=click.Choice(["warn", "raise", "log"]), default="warn", show_default=True
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here."
)
@click.option(
    "--health/--no-health",
    default=True,
    show_default=True,
    help="Numerical-health checks (AMP101-AMP107) and the summary at exit.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Write a PNG of the loss scale and skipped steps (needs matplotlib: amplint[plot]).",
)
@_threshold_options
@click.option(
    "-m",
    "as_module",
    is_flag=True,
    help="SCRIPT is a module name, run as `python -m SCRIPT ARGS` runs it.",
)
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    mode: str,
    report_path: str | None,
    health: bool,
    plot_path: str | None,
    as_module: bool,
    script: str,
    args: tuple[str, ...],
    **thresholds: float | int | None,
) -> None:
    """Run SCRIPT like `python SCRIPT ARGS` (with -m: `python -m SCRIPT ARGS`) with amplint's
    runtime checks installed."""
    if script.startswith("-"):
        # Options after SCRIPT are the script's; one before it that is not ours is a typo
        # (python too reads a leading dash as an option, never as a file name).
        raise click.UsageError(_unknown_option(script, click.get_current_context()))
    try:
        from amplint.runtime.health_config import HealthConfig
        from amplint.runtime.runner import exit_as_python, run_script
    except ImportError as error:
        raise UserError(f"`amplint run` needs torch: install amplint[runtime] ({error})") from error
    chosen = {name: value for name, value in thresholds.items() if value is not None}
    try:
        HealthConfig(**chosen)  # the ranges live there: one line, before the script starts
    except (TypeError, ValueError) as error:
        raise UserError(f"invalid threshold: {error}") from error
    # Ctrl-C ends amplint run as it ends `python SCRIPT`: by SIGINT, so shell loops stop.
    exit_as_python(
        run_script(
            script,
            list(args),
            mode=mode,
            report_path=report_path,
            health=health,
            thresholds=chosen,
            plot_path=plot_path,
            module=as_module,
        )
    )


#: The click command line as a callable (what tests and ``python -c`` callers invoke); the
#: console script is :func:`amplint.launch.main`, which parses the plainest form itself.
main = cli
