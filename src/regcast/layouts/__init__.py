"""OCI image layouts (``oci:DIR``, ``oci-archive:FILE.tar``) as sources and targets of a copy."""

from __future__ import annotations

from regcast.layouts.reference import LayoutRef, is_layout_reference, parse_layout_reference
from regcast.layouts.repository import LayoutRepository, open_layout

__all__ = ["LayoutRef", "LayoutRepository", "is_layout_reference", "open_layout", "parse_layout_reference"]
