"""The seed's finished_endpoints / skipped_clusters: each endpoint once across both lists."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from regcast.api.status import in_sync, seed_lists


def job(*targets: tuple[str, str], state: str = "FINISHED", image: str = "app") -> Any:
    return SimpleNamespace(
        state=state, targets=[SimpleNamespace(endpoint=e, state=s, repository=image, ref="v1") for e, s in targets]
    )


def test_a_target_named_twice_is_listed_once_in_the_list_of_the_first_that_ended() -> None:
    j = job(("a", "SKIPPED"), ("a", "FINISHED"), ("b", "FINISHED"), ("b", "FINISHED"), ("c", "FAILED"))
    assert seed_lists(j) == {"FINISHED": ["b"], "SKIPPED": ["a"]}


def test_targets_of_one_endpoint_with_other_images_are_listed_each() -> None:
    j = job(("a", "SKIPPED"), ("a", "SKIPPED"))
    j.targets[1].repository = "app/other"
    assert seed_lists(j) == {"FINISHED": [], "SKIPPED": ["a", "a"]}


def test_a_finished_job_without_targets_is_in_sync() -> None:
    assert in_sync(job())
    assert not in_sync(job(state="RUNNING"))
