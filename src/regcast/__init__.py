"""regcast: copy one container image from one registry to many, over the registry HTTP API only."""

from __future__ import annotations

__version__: str  # the one source is pyproject.toml; the API, CLI and User-Agent read it here
USER_AGENT: str


def __getattr__(name: str) -> str:
    """``__version__`` and ``USER_AGENT``, read from the package metadata on first use.

    Lazily: importlib.metadata costs more than the rest of `regcast --help` (#17, start-up).
    """
    if name not in ("__version__", "USER_AGENT"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import version

    found = version("regcast")
    globals().update(__version__=found, USER_AGENT=f"regcast/{found}")
    return str(globals()[name])
