"""One pass of a mirror-set document in this process: plan, then copy what is missing or different.

Images are copied one after another, each to all of its targets at once (the source read once
for all of them): later images then find the blobs earlier ones uploaded, so the bytes a pass
moves are exactly the bytes its plan predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from regcast._exceptions import RegcastError
from regcast.config import Settings
from regcast.mirrors.clients import ClientPool
from regcast.mirrors.document import Mirror, MirrorDocument
from regcast.mirrors.plan import Action, ImagePlan, MirrorPlan, Planner, totals
from regcast.registry.client import describe
from regcast.registry.manifest import Platform
from regcast.transfer.engine import CopyEngine, Target
from regcast.transfer.progress import TargetState, TargetStatus
from regcast.transfer.referrers import ReferrerOptions
from regcast.transfer.remote import RegistryRepository


class PassListener(Protocol):
    """Told about a pass as it goes (the CLI's progress bars)."""

    def planned(self, plans: list[MirrorPlan]) -> None: ...

    def image_started(self, image: ImagePlan) -> None: ...

    def changed(self, image: ImagePlan, status: TargetStatus) -> None: ...

    def image_done(self, image: ImagePlan) -> None: ...


@dataclass
class Outcome:
    """What happened to one image at one target during a pass."""

    state: str  # up-to-date | copied | skipped | failed
    moved: int = 0
    error: str | None = None


@dataclass
class PassReport:
    plans: list[MirrorPlan]
    dry_run: bool
    outcomes: dict[tuple[str, str, str], Outcome] = field(default_factory=dict)  # (mirror, tag, target)

    def outcome(self, image: ImagePlan, target: str) -> Outcome | None:
        return self.outcomes.get((image.mirror, image.tag, target))

    @property
    def ok(self) -> bool:
        """Every selected image is in every target (a dry run: already, as planned; it has no outcomes)."""
        for p in self.plans:
            if p.error:
                return False
            for img in p.images:
                for t in img.targets:
                    if self.dry_run:
                        if img.error or t.action is not Action.UP_TO_DATE:
                            return False
                        continue
                    out = self.outcome(img, str(t.target))
                    if out is None or out.state not in ("up-to-date", "copied"):
                        return False
        return True

    @property
    def skipped(self) -> bool:
        return any(o.state == "skipped" for o in self.outcomes.values())

    def summary(self) -> dict[str, int]:
        counts = totals(self.plans)
        if not self.dry_run:
            outs = list(self.outcomes.values())
            counts.update(
                copied=sum(o.state == "copied" for o in outs),
                failed=self._failed(),
                moved=sum(o.moved for o in outs),
            )
        return counts

    def _failed(self) -> int:
        """Mirrors that could not be planned, and each (image, target) once: by its outcome, or by its plan
        when the pass gave it none (a target whose check failed has both: it was counted twice)."""
        failed = sum(p.error is not None for p in self.plans)
        for p in self.plans:
            for img in p.images:
                for t in img.targets:
                    out = self.outcome(img, str(t.target))
                    if out is not None:
                        failed += out.state == "failed"
                    else:
                        failed += bool(img.error) or t.action is Action.FAILED
        return failed

    def public(self) -> dict[str, Any]:
        mirrors = []
        for p in self.plans:
            body = p.public()
            for img, img_body in zip(p.images, body["images"], strict=True):
                for t, t_body in zip(img.targets, img_body["targets"], strict=True):
                    out = self.outcome(img, str(t.target))
                    if out is not None and not self.dry_run:
                        t_body.update(state=out.state, moved=out.moved, error=out.error)
            mirrors.append(body)
        return {"ok": self.ok, "dry_run": self.dry_run, "totals": self.summary(), "mirrors": mirrors}


class _Forward:
    def __init__(self, image: ImagePlan, listener: PassListener | None) -> None:
        self.image = image
        self.listener = listener

    def changed(self, status: TargetStatus) -> None:
        if self.listener is not None:
            self.listener.changed(self.image, status)


async def run_pass(
    doc: MirrorDocument,
    settings: Settings,
    *,
    dry_run: bool = False,
    names: list[str] | None = None,
    listener: PassListener | None = None,
    engine: CopyEngine | None = None,
) -> PassReport:
    """Plan every mirror (bytes included), then, unless ``dry_run``, copy what the plan says."""
    pool = ClientPool(doc, settings)
    try:
        plans = await Planner(doc, pool, with_bytes=True).plan(names)
        report = PassReport(plans, dry_run)
        if listener is not None:
            listener.planned(plans)
        engine = engine or CopyEngine(settings.transfer_options())
        for plan in plans:
            mirror = doc.mirror(plan.name)
            assert mirror is not None
            platforms = [Platform.parse(p) for p in mirror.platforms] if mirror.platforms else None
            for img in plan.images:
                _record_known(report, img)
                if dry_run or not img.to_copy or img.error:
                    continue
                await _copy_image(report, pool, engine, img, mirror, platforms, listener)
        if not dry_run:
            await _write_layouts(report, pool)
        return report
    finally:
        await pool.close()


async def _write_layouts(report: PassReport, pool: ClientPool) -> None:
    """Layout targets are written once, with every tag copied into them; a failed write fails those copies."""
    for where, layout in pool.layouts():
        try:
            await layout.flush()
        except RegcastError as exc:
            for key, out in report.outcomes.items():
                if key[2] == where and out.state == "copied":
                    report.outcomes[key] = Outcome("failed", error=describe(exc))


def _record_known(report: PassReport, img: ImagePlan) -> None:
    for t in img.targets:
        if t.action is Action.UP_TO_DATE:
            report.outcomes[(img.mirror, img.tag, str(t.target))] = Outcome("up-to-date")
        elif t.action is Action.SKIP:
            report.outcomes[(img.mirror, img.tag, str(t.target))] = Outcome("skipped", error=t.reason)
        elif t.action is Action.FAILED or img.error:
            report.outcomes[(img.mirror, img.tag, str(t.target))] = Outcome("failed", error=t.reason or img.error)


async def _copy_image(
    report: PassReport,
    pool: ClientPool,
    engine: CopyEngine,
    img: ImagePlan,
    mirror: Mirror,
    platforms: list[Platform] | None,
    listener: PassListener | None,
) -> None:
    source = RegistryRepository(pool.source(img.source.registry), img.source.repository)
    targets = [
        Target(str(t.target), pool.repository(t.target), img.tag, overwrite=mirror.overwrite) for t in img.to_copy
    ]
    if listener is not None:
        listener.image_started(img)
    try:
        result = await engine.copy(
            source,
            img.tag,
            targets,
            platforms=platforms,
            listener=_Forward(img, listener),
            # referrers are found while loading the graph: the plan's graph has none
            graph=None if mirror.referrers else img.graph,
            referrers=ReferrerOptions(enabled=mirror.referrers),
            spool=mirror.spool,
        )
        statuses = result.targets
    except RegcastError as exc:
        for t in targets:
            t.status.state = TargetState.FAILED
            t.status.error = describe(exc)
        statuses = [t.status for t in targets]
    for st in statuses:
        state = {TargetState.FINISHED: "copied", TargetState.SKIPPED: "skipped"}.get(st.state, "failed")
        report.outcomes[(img.mirror, img.tag, st.key)] = Outcome(state, st.bytes_uploaded + st.bytes_mounted, st.error)
    if listener is not None:
        listener.image_done(img)
