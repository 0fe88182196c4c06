"""Platform.distinct: one platform however it is written, the broader spelling kept."""

from __future__ import annotations

from regcast.registry.manifest import Platform


def test_a_platform_with_and_without_its_default_variant_is_one() -> None:
    asked = [Platform.parse(p) for p in ("linux/arm64/v8", "linux/arm64", "linux/aarch64", "linux/arm/v6", "linux/arm")]
    assert [str(p) for p in Platform.distinct(asked)] == ["linux/arm64", "linux/arm/v6", "linux/arm"]
