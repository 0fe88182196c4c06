"""The Alembic revisions form one linear chain: two engineers adding a revision at once must not fork it."""

from __future__ import annotations

from importlib import resources

from alembic.config import Config
from alembic.script import ScriptDirectory


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("regcast.jobs") / "migrations"))
    return ScriptDirectory.from_config(cfg)


def test_one_head() -> None:
    assert len(_scripts().get_heads()) == 1


def test_every_revision_has_one_parent_and_one_child_at_most() -> None:
    revisions = list(_scripts().walk_revisions())
    children: dict[str, int] = {}
    for rev in revisions:
        assert not isinstance(rev.down_revision, tuple | list), f"{rev.revision} merges branches"
        if rev.down_revision is not None:
            children[str(rev.down_revision)] = children.get(str(rev.down_revision), 0) + 1
    forks = {parent: n for parent, n in children.items() if n > 1}
    assert forks == {}
    roots = [rev.revision for rev in revisions if rev.down_revision is None]
    assert roots == ["0001"]


def test_head_read_from_the_files_is_alembics_head() -> None:
    from regcast.jobs.store import head_revision

    assert head_revision() == _scripts().get_current_head()
