"""Helpers every command family shares: the settings, errors, and printing tables.

Owns how a command gets its :class:`~modelog.config.Settings` (built once by the
root callback in :mod:`modelog.cli`), how it fails (a red ``error:`` line and exit
code 1) and how it prints a DataFrame (rich table, CSV or JSON lines). Imports
:mod:`modelog.config`, :mod:`modelog.errors` and, lazily, :mod:`modelog.store`.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from modelog.config import Settings
from modelog.errors import ModelogError

if TYPE_CHECKING:
    from modelog.store.reader import Reader

__all__ = ["AsOfOpt", "FormatOpt", "cell", "checked_name", "exit_on_error", "fail",
           "print_frame", "reader_of", "settings_of"]

FormatOpt = Annotated[str, typer.Option("--format", "-F", help="table, csv or json (one object "
                                                                 "per line).")]
"""The ``--format``/``-F`` option of the commands that print a table."""


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback built from the flags and ``MODELOG_*`` variables."""
    s = ctx.obj
    assert isinstance(s, Settings)
    return s


def fail(exc: BaseException, code: int = 1) -> NoReturn:
    """Print ``error: <exc>`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """Report a :class:`~modelog.errors.ModelogError` raised inside with :func:`fail`.

    Examples
    --------
    >>> try:
    ...     with exit_on_error():  # prints "error: no broker at k:9092; ..." on stderr
    ...         raise ModelogError("no broker at k:9092; start one with `modelog up`")
    ... except typer.Exit as stop:
    ...     print("exit code", stop.exit_code)
    exit code 1
    """
    try:
        yield
    except ModelogError as exc:
        fail(exc)


def checked_name(value: str) -> str:
    """A model or alias name argument, checked before the command connects anywhere (a
    Typer callback: ``typer.Argument(callback=checked_name)``).

    Examples
    --------
    >>> checked_name("churn")
    'churn'
    >>> checked_name("x;rm -rf /")
    Traceback (most recent call last):
    ...
    typer._click.exceptions.BadParameter: 'x;rm -rf /' is not a name: 1-128 characters: ...
    """
    from modelog.models.errors import EventValidationError
    from modelog.models.validation import check_name

    try:
        return check_name(value, "command", "name")
    except EventValidationError as exc:
        raise typer.BadParameter(f"{value!r} is not a name: {exc.rule}") from None


AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="ISO date or time (naive = UTC): answer as things stood then, from the "
                    "ledger's events up to that time (event time).")]
"""The ``--as-of`` option of the commands that read the projection."""


def reader_of(ctx: typer.Context, as_of: str | None = None) -> Reader:
    """A :class:`~modelog.store.reader.Reader` over the command's settings (``as_of``: the
    projection as it stood then; raises :class:`~modelog.store.errors.AsOfError` if bad)."""
    from modelog.store.reader import Reader

    return Reader(settings_of(ctx), as_of=as_of)


def cell(value: Any) -> str:
    """One value as a table cell: blank for missing, times to the second, 6 digits.

    Examples
    --------
    >>> import datetime as dt
    >>> cell(None), cell(float("nan")), cell(2 / 3), cell(dt.datetime(2026, 3, 3, 14, 0, 5, 9))
    ('', '', '0.666667', '2026-03-03 14:00:05')
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat(sep=" ", timespec="seconds"))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def print_frame(df: Any, fmt: str = "table", title: str | None = None,
                empty: str | None = None) -> None:
    """Print a DataFrame as a rich table, CSV or JSON lines (``empty``: say so instead of
    printing an empty table)."""
    if empty is not None and df.empty and fmt == "table":
        typer.echo(empty)
    elif fmt == "csv":
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == "json":
        for row in df.to_dict("records"):
            clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
            sys.stdout.write(json.dumps(clean, default=str) + "\n")
    elif fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, show_lines=False)
        for name in df.columns:
            t.add_column(str(name), overflow="fold")
        for row in df.itertuples(index=False):
            t.add_row(*(cell(v) for v in row))
        # No markup or emoji codes: cells hold strings from events ("[/x]", ":bomb:").
        Console(width=max(100, len(df.columns) * 14), markup=False, emoji=False).print(t)
    else:
        fail(ModelogError(f"--format {fmt!r} is not one of table, csv, json"))
