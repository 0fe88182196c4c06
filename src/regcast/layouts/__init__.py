"""OCI image layouts (``oci:DIR``, ``oci-archive:FILE.tar``) as sources and targets of a copy.

The repository (files, tar archives) is imported when first named: telling a layout reference from a
registry one (every ``regcast copy``) needs only ``reference.py`` (start-up, issue 17).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from regcast.layouts.reference import LayoutRef, is_layout_reference, parse_layout_reference

if TYPE_CHECKING:
    from regcast.layouts.repository import LayoutRepository, open_layout

__all__ = ["LayoutRef", "LayoutRepository", "is_layout_reference", "open_layout", "parse_layout_reference"]


def __getattr__(name: str) -> Any:
    if name in ("LayoutRepository", "open_layout"):
        from regcast.layouts import repository

        return getattr(repository, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
