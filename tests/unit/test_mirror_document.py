"""The mirror-set document: shapes, ``${VAR}``, and every bad document named by line and field."""

from __future__ import annotations

import textwrap

import pytest

from regcast.mirrors.document import DocumentError, load_document
from regcast.mirrors.schedule import Schedule, parse_interval
from regcast.mirrors.select import Repo, TagSelector, mirror_selects, targets_of

GOOD = """\
version: 1
registries:
  - host: registry.a.example
    username: ${A_USER}
    password: ${A_PASS}
    max_concurrency: 8
target_groups:
  prod: [reg-eu.example/mirror, reg-us.example]
mirrors:
  - name: app
    source: registry.a.example/team/app
    targets: ["@prod", "reg-ap.example/apps"]
    tags:
      list: ["1.4.2"]
      allow: ['^v?\\d+\\.\\d+\\.\\d+$']
      deny: ['-rc']
      semver: ">=1.4 <2"
      latest: 5
    platforms: [linux/amd64, linux/arm64]
    immutable: ['^v?\\d+\\.\\d+\\.\\d+$']
    schedule: "*/15 * * * *"
  - name: base
    source: registry.a.example/base
    repository: mirrored/base
    targets: ["@prod"]
    interval: 15m
"""
ENV = {"A_USER": "alice", "A_PASS": "pa$$word"}


def problems(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(DocumentError) as info:
        load_document(textwrap.dedent(text), ENV if env is None else env)
    return str(info.value)


def test_the_contract_example_loads_with_variables_filled_in() -> None:
    doc = load_document(GOOD, ENV)
    reg = doc.registry("registry.a.example")
    assert reg is not None
    assert reg.username == "alice"
    assert reg.password == "pa$$word"
    app, base = doc.mirrors
    assert targets_of(doc, app) == [
        Repo("reg-eu.example", "mirror/team/app"),
        Repo("reg-us.example", "team/app"),
        Repo("reg-ap.example", "apps/team/app"),
    ]
    assert targets_of(doc, base) == [
        Repo("reg-eu.example", "mirror/mirrored/base"),
        Repo("reg-us.example", "mirrored/base"),
    ]
    assert doc.public()["registries"][0]["password"] == "***"
    assert "pa$$word" not in repr(doc)


def test_json_documents_load_too() -> None:
    doc = load_document(
        '{"version": 1, "mirrors": [{"name": "a", "source": "r.example/x", "targets": ["t.example"]}]}', {}
    )
    assert doc.mirrors[0].overwrite is True
    assert doc.mirrors[0].referrers is True
    assert doc.mirrors[0].spool is None  # the process's default
    assert "spool" not in doc.public()["mirrors"][0]


def test_a_mirror_chooses_its_spool() -> None:
    doc = load_document(GOOD.replace("    interval: 15m", "    interval: 15m\n    spool: true"), ENV)
    app, base = doc.mirrors
    assert app.spool is None and base.spool is True
    assert doc.public()["mirrors"][1]["spool"] is True


def test_dollar_dollar_is_a_literal_dollar() -> None:
    doc = load_document(GOOD.replace("${A_PASS}", "x$$y"), ENV)
    assert doc.registries[0].password == "x$y"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("    max_concurrency: 8", "    max_concurency: 8"), "line 6: registries[0].max_concurency: unknown key"),
        (
            ("      deny: ['-rc']", "      deny: ['-rc', '(']"),
            "line 16: mirrors[0].tags.deny[1]: invalid regular expression",
        ),
        (
            ('      semver: ">=1.4 <2"', '      semver: ">=1.4 <<2"'),
            "line 17: mirrors[0].tags.semver: invalid semver range",
        ),
        (('      semver: ">=1.4 <2"', "      semver: banana"), "line 17: mirrors[0].tags.semver: invalid semver range"),
        (("  - name: base", "  - name: app"), "line 22: mirrors[1].name: duplicate mirror name 'app'"),
        (
            ('    schedule: "*/15 * * * *"', '    schedule: "*/15 * * *"'),
            "line 21: mirrors[0].schedule: invalid schedule",
        ),
        (("    interval: 15m", "    interval: soon"), "line 26: mirrors[1].interval: invalid interval"),
        (('    targets: ["@prod"]', '    targets: ["@staging"]'), "line 25: mirrors[1].targets: unknown target group"),
        (
            ('"reg-ap.example/apps"]', '"registry.a.example"]'),
            "line 12: mirrors[0].targets: registry.a.example/team/app is the source itself",
        ),
        (("version: 1", "version: 2"), "line 1: version: Input should be 1"),
        (
            ("    interval: 15m", "    interval: 15m\n    spool: maybe"),
            "line 27: mirrors[1].spool: Input should be a valid boolean",
        ),
        (
            ('      list: ["1.4.2"]', '      list: ["1.4.2", "a b"]'),
            "line 14: mirrors[0].tags.list[1]: invalid tag 'a b'",
        ),
        (
            ("      latest: 5", "      latest: -1"),
            "line 18: mirrors[0].tags.latest: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_documents_name_the_line_and_field(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    assert expected in problems(GOOD.replace(old, new, 1))


def test_an_unset_variable_is_an_error_never_an_empty_password() -> None:
    msg = problems(GOOD, {"A_USER": "alice"})
    assert msg == "line 5: registries[0].password: environment variable A_PASS is not set"


def test_group_cycles_and_mirror_cycles_are_refused() -> None:
    msg = problems(
        """\
        version: 1
        target_groups:
          a: ["@b"]
          b: ["@a"]
        mirrors:
          - {name: m, source: r.example/x, targets: ["@a"]}
        """
    )
    assert "target group cycle" in msg
    assert "line 6: mirrors[0].targets" in msg
    msg = problems(
        """\
        version: 1
        mirrors:
          - {name: there, source: a.example/x, targets: [b.example]}
          - {name: back, source: b.example/x, targets: [a.example]}
        """
    )
    assert "mirrors copy in a cycle (there -> back) back into a.example/x" in msg


def test_not_yaml_names_the_line() -> None:
    assert problems("version: 1\nmirrors: [\n  - x: {\n").startswith("line ")


TAGS = [
    "1.0.0",
    "1.4.0",
    "1.4.2",
    "v1.5.0",
    "1.9.9",
    "2.0.0",
    "2.0.0-rc.1",
    "1.5.0-rc.1",
    "latest",
    "stable",
    "1.4",
    "v2.1.0",
]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ({}, TAGS),
        ({"list": ["latest"]}, ["latest"]),
        ({"allow": [r"^v"]}, ["v1.5.0", "v2.1.0"]),
        ({"deny": ["rc", r"^v"]}, ["1.0.0", "1.4", "1.4.0", "1.4.2", "1.9.9", "2.0.0", "latest", "stable"]),
        ({"semver": ">=1.4 <2"}, ["1.4.0", "1.4.2", "1.9.9", "v1.5.0"]),
        ({"latest": 3}, ["2.0.0", "2.0.0-rc.1", "v2.1.0"]),
        ({"semver": "^1", "latest": 2, "list": ["stable"]}, ["1.9.9", "stable", "v1.5.0"]),
    ],
)
def test_tag_selection(rules: dict[str, object], expected: list[str]) -> None:
    from regcast.mirrors.document import TagRules

    assert TagSelector.from_rules(TagRules.model_validate(rules)).select(TAGS) == sorted(expected)


def test_mirror_selects_is_pure() -> None:
    doc = load_document(GOOD, ENV)
    app = doc.mirrors[0]
    assert mirror_selects(doc, app, "registry.a.example", "team/app", "1.4.2")
    assert mirror_selects(doc, app, "registry.a.example", "team/app", "v1.5.0")
    assert not mirror_selects(doc, app, "registry.a.example", "team/app", "1.5.0-rc1")
    assert not mirror_selects(doc, app, "registry.a.example", "team/other", "1.4.2")
    assert not mirror_selects(
        doc, app, "registry.a.example", "team/app", "v1.5.0", tags=[f"1.{i}.0" for i in range(5, 11)]
    )


def test_schedules() -> None:
    import datetime as dt

    assert parse_interval("1h30m") == 5400
    assert parse_interval("45s") == 45
    assert parse_interval("2") == 2
    now = dt.datetime(2026, 1, 1, 10, 7, 30, tzinfo=dt.UTC)
    cron = Schedule.of("*/15 * * * *", None)
    assert cron
    assert cron.latest_due(now) == dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)
    assert cron.next_due(now) == dt.datetime(2026, 1, 1, 10, 15, tzinfo=dt.UTC)
    every = Schedule.of(None, "10m")
    assert every
    assert every.latest_due(now) == dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    "target",
    ["bob:Pw0rdLeak@reg-eu.example/mirror", "https://bob:Pw0rdLeak@reg-eu.example", "bob:Pw0rdLeak@localhost/m"],
)
def test_a_target_with_user_and_password_is_refused_not_taken_for_a_registry_and_never_echoed(target: str) -> None:
    """``bob:pw@host`` was read as a registry named ``bob:pw@host`` (lowercased), shown in every plan,
    status and ``GET /api/mirrors/<name>``; and a URL's password was echoed in the error."""
    msg = problems(
        f"""\
        version: 1
        mirrors:
          - {{name: m, source: registry.a.example/team/app, targets: ["{target}"]}}
        """
    )
    assert msg.startswith("line 3: mirrors[0].targets: ")
    assert "Pw0rdLeak" not in msg and "pw0rdleak" not in msg


def test_a_source_url_with_a_password_is_refused_without_echoing_it() -> None:
    msg = problems(
        """\
        version: 1
        mirrors:
          - {name: m, source: "https://bob:Pw0rdLeak@registry.a.example/team/app", targets: [reg-eu.example]}
        """
    )
    assert "without a scheme" in msg
    assert "Pw0rdLeak" not in msg


def test_a_mirror_of_listed_tags_alone_selects_no_other_tag_pushed_or_deleted() -> None:
    doc = load_document(
        "version: 1\nmirrors:\n  - {name: m, source: r.example/team/app, targets: [t.example], tags: {list: [v1]}}\n",
        {},
    )
    m = doc.mirrors[0]
    assert mirror_selects(doc, m, "r.example", "team/app", "v1")
    assert not mirror_selects(doc, m, "r.example", "team/app", "v9")
    assert not mirror_selects(doc, m, "r.example", "team/app", "v9", tags=["v1", "v9"])


def test_a_reserved_prefix_of_variables_is_refused_in_any_case() -> None:
    env = {**ENV, "REGCAST_SECRET_KEY": "k" * 40}
    doc = GOOD.replace("${A_PASS}", "${REGCAST_SECRET_KEY}").replace("${A_USER}", "${Regcast_Api_Tokens}")
    with pytest.raises(DocumentError) as info:
        load_document(doc, env, reserved="REGCAST_")
    why = "is one of regcast's own settings, not readable by a document"
    assert info.value.problems == [
        f"line 4: registries[0].username: Regcast_Api_Tokens {why}",
        f"line 5: registries[0].password: REGCAST_SECRET_KEY {why}",
    ]
    assert load_document(doc.replace("${Regcast_Api_Tokens}", "u"), env).registries[0].password == "k" * 40  # the CLI


def test_docker_hub_settings_apply_under_any_of_its_names() -> None:
    """``host: index.docker.io`` (as docker's config writes it) matched no ``docker.io/...`` source: its
    credentials and limits went unused, and every pull of the mirror was anonymous (rate limited)."""
    from regcast.jobs.secrets import SecretBox
    from regcast.mirrors.clients import configure_limits
    from regcast.mirrors.service import split_document
    from regcast.registry.limits import Limits

    text = (
        "version: 1\nregistries:\n  - {host: index.docker.io, username: u, password: p, max_concurrency: 2}\n"
        "mirrors:\n  - {name: m, source: docker.io/library/alpine, targets: [reg.example/m]}\n"
    )
    doc = load_document(text, {})
    assert doc.registry("docker.io") is doc.registries[0]
    limits = Limits()
    configure_limits(limits, doc)
    assert limits.for_host("docker.io") is not None and limits.for_host("registry-1.docker.io") is not None
    (stored,) = split_document(doc, SecretBox(b"k" * 32))  # the service keeps it with the mirror
    assert stored.document["registries"][0]["host"] == "index.docker.io"
    twice = text.replace("registries:\n", "registries:\n  - {host: docker.io, username: v, password: q}\n")
    assert "line 4: registries[1].host: duplicate registry 'index.docker.io'" in problems(twice)


def test_only_the_allowed_variables_are_read_when_a_list_is_set() -> None:
    """REGCAST_MIRROR_ENV: the service's other variables (cloud credentials, say) are not a caller's."""
    env = {**ENV, "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    doc = GOOD.replace("${A_PASS}", "${AWS_SECRET_ACCESS_KEY}")
    with pytest.raises(DocumentError) as info:
        load_document(doc, env, reserved="REGCAST_", allowed=("A_*",))
    assert info.value.problems == [
        "line 5: registries[0].password: AWS_SECRET_ACCESS_KEY is not readable by a posted document "
        "(REGCAST_MIRROR_ENV)"
    ]
    assert "s3cr3t" not in str(info.value)
    assert load_document(GOOD, env, reserved="REGCAST_", allowed=("A_*",)).registries[0].password == env["A_PASS"]


def test_a_problem_never_echoes_a_value_read_from_the_environment() -> None:
    """A listed tag that is no tag is quoted in its problem: read from ${VAR}, the name is shown, not the value
    (a document posted to the service would otherwise read any variable of the serving process back)."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" * 3  # not a tag (a '/'), longer than the 80 quoted
    doc = GOOD.replace("${A_PASS}", "pw") + "    tags: {list: ['${CLOUD_KEY}']}\n"
    with pytest.raises(DocumentError) as info:
        load_document(doc, {**ENV, "CLOUD_KEY": secret})
    assert info.value.problems[-1].endswith(
        "tags.list[0]: not valid here (the value read from ${CLOUD_KEY} is not shown)"
    )
    assert secret[:4] not in str(info.value)
    for entry in ("!" * 70 + "${CLOUD_KEY}", "${CLOUD_KEY}${CLOUD_KEY}", "!${SHORT}", "${CLOUD_KEY}\\x"):
        # padded to move the message's cut, doubled, short, escaped: never a character of the value
        with pytest.raises(DocumentError) as info:
            load_document(doc.replace("${CLOUD_KEY}", entry), {**ENV, "CLOUD_KEY": secret, "SHORT": "abc"})
        assert "wJal" not in str(info.value) and "abc" not in str(info.value), info.value


def test_a_key_given_twice_is_named_not_silently_the_last_one_kept() -> None:
    # a second `mirrors:` (two documents pasted together) dropped every mirror of the first, unsaid
    twice = GOOD + "mirrors:\n  - {name: other, source: registry.a.example/o, targets: [reg-ap.example]}\n"
    assert problems(twice) == "line 27: mirrors: duplicate key 'mirrors' (first at line 9)"
    denied = GOOD.replace("      deny: ['-rc']\n", "      deny: ['-rc']\n      deny: ['-beta']\n")
    assert problems(denied) == "line 17: mirrors[0].tags.deny: duplicate key 'deny' (first at line 16)"
    json_text = '{"version": 1, "version": 1, "mirrors": []}'
    assert problems(json_text) == "line 1: version: duplicate key 'version' (first at line 1)"
