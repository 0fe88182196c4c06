"""Where ``regcast copy`` (and ``submit``) takes credentials from, without putting them on the command line.

A ``--src-creds USER:PASS`` flag shows in ``ps`` and shell history; a file (``--src-creds-file``,
``-`` for stdin as ``docker login --password-stdin``) or ``REGCAST_SRC_CREDS`` / ``REGCAST_DEST_CREDS``
does not. Order: the flag or the file (never both), then the variable, then the Docker config.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from regcast.registry.auth import Credentials
from regcast.registry.dockerconfig import credentials_for, helper_for

_WARNED: set[str] = set()  # registries already warned about (a helper's credentials), once per process


@dataclass(frozen=True)
class CredsSource:
    """One side's (source or targets) credentials as given: flag, file, environment variable."""

    side: str  # "src" or "dest"
    flag: str | None = None
    file: str | None = None

    @property
    def env_name(self) -> str:
        return f"REGCAST_{self.side.upper()}_CREDS"

    def text(self) -> tuple[str, str] | None:
        """(where it came from, USER:PASS) or None."""
        if self.flag and self.file:
            raise click.UsageError(f"give --{self.side}-creds or --{self.side}-creds-file, not both")
        if self.flag:
            return f"--{self.side}-creds", self.flag
        if self.file:
            return f"--{self.side}-creds-file {self.file}", _read(self.file, f"--{self.side}-creds-file")
        value = os.environ.get(self.env_name)
        return (self.env_name, value) if value else None

    def explicit(self) -> Credentials | None:
        """What the user gave (flag, file or variable), or None."""
        given = self.text()
        if given is None:
            return None
        where, text = given
        try:
            return Credentials.parse(text)
        except ValueError as exc:
            raise click.UsageError(f"{where}: {exc}") from None

    def for_registry(self, registry: str) -> Credentials | None:
        """What the user gave, else the Docker config's entry for ``registry`` (a warning, once per registry,
        when the config keeps it in a credential helper regcast does not run: the copy goes anonymous)."""
        creds = self.explicit() or credentials_for(registry)
        helper = helper_for(registry) if creds is None and registry not in _WARNED else None
        if helper:
            _WARNED.add(registry)
            click.echo(
                f"warning: {registry}: the Docker config keeps its credentials in the credential helper "
                f"docker-credential-{helper}, which regcast does not run; going anonymous (give "
                f"--{self.side}-creds, --{self.side}-creds-file or {self.env_name})",
                err=True,
            )
        return creds


def _read(path: str, option: str) -> str:
    """The first line of ``path`` (``-``: standard input), without its line end."""
    try:
        data = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise click.UsageError(f"{option}: cannot read {path}: {exc.strerror}") from None
    line = data.splitlines()[0] if data else ""
    if not line:
        raise click.UsageError(f"{option}: {path} is empty (expected one line USER:PASS)")
    return line


def check_stdin_once(*sources: CredsSource) -> None:
    """Standard input can be read once: only one of the files may be ``-``."""
    if sum(s.file == "-" for s in sources) > 1:
        raise click.UsageError("only one of --src-creds-file and --dest-creds-file can read standard input (-)")
