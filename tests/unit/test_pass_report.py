"""A pass's totals count each (image, target) once: a target whose check failed is given a 'failed'
outcome by the pass too, and the summary said '2 failed' for one failed target."""

from __future__ import annotations

from regcast.mirrors.plan import Action, ImagePlan, MirrorPlan, TargetPlan
from regcast.mirrors.select import Repo
from regcast.mirrors.sync import Outcome, PassReport

SRC = Repo("src.example", "team/app")
BAD, GOOD = Repo("bad.example", "team/app"), Repo("good.example", "team/app")


def report(*, unplanned: bool = False) -> PassReport:
    img = ImagePlan(
        "m",
        SRC,
        "v1",
        "sha256:" + "a" * 64,
        [TargetPlan(BAD, Action.FAILED, reason="unreachable"), TargetPlan(GOOD, Action.COPY)],
    )
    plans = [MirrorPlan("m", SRC, [BAD, GOOD], [img]), MirrorPlan("n", SRC, [GOOD], error="tag list refused")]
    rep = PassReport(plans, dry_run=False)
    if not unplanned:
        rep.outcomes[("m", "v1", str(BAD))] = Outcome("failed", error="unreachable")
    rep.outcomes[("m", "v1", str(GOOD))] = Outcome("copied", moved=10)
    return rep


def test_a_target_whose_check_failed_counts_once() -> None:
    totals = report().summary()
    assert (totals["failed"], totals["copied"], totals["moved"]) == (2, 1, 10)  # the target, and mirror n


def test_a_failed_check_without_an_outcome_still_counts() -> None:
    assert report(unplanned=True).summary()["failed"] == 2
