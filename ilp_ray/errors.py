"""User-facing errors. Each names where the problem is: file, line or row, and field."""

from __future__ import annotations

import re

#: ``scheme://user:secret@`` in any text: the userinfo of a URL.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")  # to the authority's last @


def redact(text: str) -> str:
    """``text`` with the userinfo (``user:password@``) of every URL in it removed: what goes to a
    terminal, a log or an MLflow parameter never carries credentials."""
    return _USERINFO.sub(r"\1", text) if "@" in text else text


def cli_fail(e: BaseException, code: int = 2):
    """The CLIs' one way out on a user's error: ``error: <message>`` in red on stderr, without a
    URL's credentials, and exit ``code``."""
    import typer

    typer.secho(f"error: {redact(str(e))}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code) from None


class IlpError(Exception):
    """Base class for errors the user can fix (bad data, bad config, bad arguments)."""


class DataError(IlpError, ValueError):
    """Bad input data or config.

    Args:
        message: what is wrong, in words the user can act on.
        file: the file (path or URI) the problem is in.
        line: 1-based line (JSONL, CSV, YAML) or row (Parquet) number, when known.
        field: the field or column, when known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.message, self.file, self.line, self.field = message, file, line, field
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}{what}{self.message}"


class ConfigError(DataError):
    """A bad configuration value (YAML file or CLI override)."""


class TrackingError(IlpError):
    """The MLflow tracking server could not be reached or refused a call. The message names the
    server (without userinfo) and what to do."""
