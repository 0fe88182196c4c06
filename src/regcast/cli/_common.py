"""What every command shares: the ``Invocation`` in click's ``ctx.obj`` (settings built once), exit codes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from regcast.config import Settings

EXIT_FAILED = 1
EXIT_SKIPPED = 3


def _knob_error(exc: ValueError) -> Exception:
    """pydantic's verdict on the settings as one line per bad knob, named as users set it
    (``REGCAST_PORT: Input should be ...``): not its "1 validation error for Settings" block with a
    link to its documentation."""
    from regcast._exceptions import ConfigError

    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return exc
    said = []
    for err in errors(include_url=False, include_input=False):
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        said.append(f"REGCAST_{loc[0].upper()}: {msg}" if loc else msg)
    return ConfigError("; ".join(said))


class Invocation:
    """``ctx.obj`` of every command: ``-v`` now, the command's Settings when it first asks for them.

    The group callback runs before a command parses its options, so ``regcast COMMAND --help`` would pay
    for pydantic if the callback built Settings (#17); a command builds them once, with its flags, here.
    """

    def __init__(self, verbose: int) -> None:
        self.verbose = verbose
        self._settings: Settings | None = None

    def settings(self, **flags: Any) -> Settings:
        """Settings from ``REGCAST_*`` and ``flags`` (not None: flags win), built once; logging in their format."""
        if self._settings is None:
            from regcast.config import load_settings

            self._log("text")  # a warning while reading the environment goes through the usual handler
            try:
                self._settings = load_settings(**flags)
            except ValueError as exc:
                raise _knob_error(exc) from None
            self._log(self._settings.log_format)
        return self._settings

    def log(self) -> None:
        """Logging only (commands with no Settings of their own): the format of REGCAST_LOG_FORMAT if valid."""
        try:
            self.settings()
        except Exception:  # a bad setting is reported by a command that reads it
            self._log("text")

    def reports_failures(self) -> None:
        """The command prints each failed target itself (copy's ``error:`` lines, sync's table): the engine's log
        line saying the same (``regcast.transfer.failed``, for the service's log) only with ``-v``."""
        if not self.verbose:
            import logging

            logging.getLogger("regcast.transfer.failed").setLevel(logging.ERROR)

    def _log(self, fmt: str) -> None:
        import logging

        from regcast.ops.logs import setup_logging

        setup_logging(fmt, logging.WARNING - 10 * min(self.verbose, 2))


def platform_list(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``--platform`` repeated or as docker buildx and podman take it, comma-separated
    (``linux/amd64,linux/arm64``): one platform per item either way."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


def invocation() -> Invocation:
    """The running command's ``Invocation`` (made by the group callback)."""
    found = click.get_current_context().find_object(Invocation)
    return found if found is not None else Invocation(0)


db_option = click.option(
    "--database-url", help="Job database (default: sqlite:///regcast.db; env REGCAST_DATABASE_URL)."
)
