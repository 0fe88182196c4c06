"""``oci:DIR[:TAG]`` and ``oci-archive:FILE.tar[:TAG]``, as skopeo spells them; ``@DIGEST`` in place of
``:TAG`` reads one image by digest (a layout's entries may have no name: crane, oras, a copy by digest)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from regcast._exceptions import InvalidReference
from regcast.registry.digest import validate_digest
from regcast.registry.reference import validate_tag

OCI = "oci"
OCI_ARCHIVE = "oci-archive"
KINDS = (OCI, OCI_ARCHIVE)


@dataclass(frozen=True)
class LayoutRef:
    kind: str  # OCI (a directory) or OCI_ARCHIVE (a tar file)
    path: Path
    tag: str | None = None
    digest: str | None = None

    @property
    def where(self) -> str:
        """The layout without its tag: ``oci-archive:/srv/app.tar``."""
        return f"{self.kind}:{self.path}"

    def with_tag(self, tag: str) -> LayoutRef:
        return replace(self, tag=validate_tag(tag))

    def __str__(self) -> str:
        return self.where + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def is_layout_reference(text: str) -> bool:
    return text.split(":", 1)[0] in KINDS and ":" in text


def parse_layout_reference(text: str) -> LayoutRef:
    """Split ``kind:path[:tag]``: a last ``:part`` without ``/`` is the tag; or ``kind:path@digest``."""
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise InvalidReference(
            f"invalid layout reference {text[:200]!r}: expected oci:DIR[:TAG] or oci-archive:FILE[:TAG]"
        )
    head, sep, tail = rest.rpartition("@")
    if sep and tail.partition(":")[0] in ("sha256", "sha512"):
        digest = validate_digest(tail)
        if not head:
            raise InvalidReference(f"invalid layout reference {text[:200]!r}: {kind}: needs a path")
        return LayoutRef(kind, Path(head), None, digest)
    path, tag = rest, None
    head, sep, tail = rest.rpartition(":")
    if sep and "/" not in tail:
        if not tail:
            raise InvalidReference(f"invalid layout reference {text[:200]!r}: empty tag after ':'")
        path, tag = head, validate_tag(tail)
    if not path:
        raise InvalidReference(f"invalid layout reference {text[:200]!r}: {kind}: needs a path")
    return LayoutRef(kind, Path(path), tag)
