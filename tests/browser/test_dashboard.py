"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real service.

Every test runs with API tokens on: the page must ask for the token, keep it in the tab and send it
as a bearer header. Screenshots go to ``test-artifacts/screenshots/`` (gitignored). The browser
may only talk to the service: any other request fails the test (the page must work offline).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import images
from tests.support.proxy import TcpProxy
from tests.support.registries import Registries
from tests.support.registry import RegistryServer
from tests.support.service import Service, basicauth, source
from tests.support.verify import assert_same_image

CHROMIUM = "/usr/bin/chromium"
TOKEN = "dashboard-token-0123456789"
MiB = 1024 * 1024
WAIT = 120_000  # ms: generous, the machine is shared
ARTIFACTS = Path(os.environ.get("REGCAST_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")) / "screenshots"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("docker-registry") is None,
    reason="chromium or docker-registry not installed (make test installs both)",
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, ca_bundle: Path) -> Iterator[Service]:
    svc = Service(
        tmp_path_factory.mktemp("dashboard"), {"REGCAST_API_TOKENS": TOKEN, "REGCAST_CA_BUNDLE": str(ca_bundle)}
    ).start()
    svc.http.headers["Authorization"] = f"Bearer {TOKEN}"
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        yield b
        b.close()


class Page:
    """One tab on the dashboard; records every request that left for somewhere else than the service."""

    def __init__(self, browser: Any, service: Service) -> None:
        self.service = service
        self.context = browser.new_context(viewport={"width": 1200, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.elsewhere: list[str] = []
        self.api_auth: list[str | None] = []

        def route(r: Any) -> None:
            if r.request.url.startswith(service.url + "/"):
                r.continue_()
            else:
                self.elsewhere.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page.on(
            "request",
            lambda req: self.api_auth.append(req.headers.get("authorization")) if "/api/" in req.url else None,
        )

    def open(self, fragment: str = "") -> Any:
        self.page.goto(f"{self.service.url}/{fragment}")
        if self.page.input_value("#token") != TOKEN:
            self.page.fill("#token", TOKEN)
            self.page.click("text=Use token")
        return self.page

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        assert self.elsewhere == [], f"the page reached beyond regcast: {self.elsewhere}"
        assert self.api_auth
        assert all(a == f"Bearer {TOKEN}" for a in self.api_auth[-3:])
        self.context.close()


@pytest.fixture
def tab(browser: Any, service: Service) -> Iterator[Page]:
    t = Page(browser, service)
    yield t
    t.close()


@pytest.fixture
def slow(src_reg: RegistryServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(src_reg.port, rate=2 * MiB).start()
    yield proxy
    proxy.stop()


def test_asks_for_the_token_then_submits_from_the_form_and_bars_reach_100(
    tab: Page,
    service: Service,
    registries: Registries,
    repo: str,
    src_reg: RegistryServer,
    basic_reg: RegistryServer,
    slow: TcpProxy,
) -> None:
    from playwright.sync_api import expect

    second = registries.open("browser-second")
    images.image([os.urandom(3 * MiB), os.urandom(2 * MiB)]).push(src_reg.http(), repo, "v1")
    page = tab.page
    page.goto(f"{service.url}/")
    expect(page.locator("#notice")).to_contain_text("API token")  # 401 without it: the page says what to do
    tab.open()
    expect(page.locator("#notice")).to_have_text("Token saved for this tab.")
    page.fill("#src-endpoint", f"http://127.0.0.1:{slow.port}/v2")
    page.fill("#src-image", repo)
    page.fill("#src-ref", "v1")
    page.fill("#dst-endpoints", f"{second.endpoint}\n{basic_reg.endpoint}")
    user, password = next(iter(basic_reg.users.items()))
    page.get_by_label("Target user (optional)").fill(user)
    page.fill("#dst-password", password)
    page.click("text=Start copy")
    page.wait_for_url("**/#/jobs/*")
    job = page.url.rsplit("/", 1)[-1]
    targets = page.locator("#targets li")
    expect(targets).to_have_count(2)
    expect(page.locator('#job-summary dd[data-field="state"]')).to_have_text("FINISHED", timeout=WAIT)
    for i in range(2):
        expect(targets.nth(i)).to_have_attribute("data-state", "FINISHED")
        expect(targets.nth(i).locator("progress")).to_have_attribute("value", "100")
        expect(targets.nth(i).locator(".pct")).to_contain_text("100 %")
    expect(page.locator("#cancel")).to_be_hidden()
    tab.shot("dashboard-job-finished")
    assert service.status(job)["value"] == "FINISHED"
    assert_same_image(src_reg.http(), repo, "v1", second.http(), repo, "v1")
    assert_same_image(src_reg.http(), repo, "v1", basic_reg.http(), repo, "v1")
    assert page.input_value("#dst-password") == ""
    assert password not in page.content()
    # the jobs list shows it, newest first, and the filters narrow it
    page.click("text=All jobs")
    expect(page.locator(f'#jobs tr[data-job="{job}"]')).to_be_visible()
    page.fill("#f-image", "no-such-image")
    page.click("#filter-form button")
    expect(page.locator("#jobs tr")).to_have_count(0)
    page.fill("#f-image", repo)
    page.select_option("#f-state", "FINISHED")
    page.click("#filter-form button")
    expect(page.locator("#jobs tr")).to_have_count(1)
    tab.shot("dashboard-jobs")


def test_cancel_a_running_job(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, slow: TcpProxy
) -> None:
    from playwright.sync_api import expect

    images.image([os.urandom(8 * MiB) for _ in range(3)]).push(src_reg.http(), repo, "v1")
    body = {"source": {"endpoint": f"http://127.0.0.1:{slow.port}/v2", "image": repo, "ref": "v1"}}
    job = service.submit({**body, "targets": [{"endpoint": open_reg.endpoint}]})
    page = tab.open(f"#/jobs/{job}")
    state = page.locator('#job-summary dd[data-field="state"]')
    expect(state).to_have_text("RUNNING")
    page.wait_for_function("() => Number(document.querySelector('#targets progress')?.value) > 0", timeout=WAIT)
    tab.shot("dashboard-job-running")
    page.click("#cancel")
    expect(state).to_have_text("CANCELLED")
    expect(page.locator("#retry")).to_be_visible()
    expect(page.locator("#cancel")).to_be_hidden()
    assert service.status(job)["value"] == "CANCELLED"
    assert open_reg.http().get_manifest(repo, "v1").status_code == 404


def test_failed_target_reason_in_plain_words_and_retry(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer, basic_reg: RegistryServer
) -> None:
    from playwright.sync_api import expect

    images.image().push(src_reg.http(), repo, "v1")
    job = service.submit(
        {
            "source": source(src_reg, repo),
            "targets": [
                {"endpoint": open_reg.endpoint},
                {"endpoint": basic_reg.endpoint, "auth": basicauth(basic_reg, "not-the-password")},
            ],
        }
    )
    page = tab.open(f"#/jobs/{job}")
    expect(page.locator('#job-summary dd[data-field="state"]')).to_have_text("FAILED")
    failed = page.locator('#targets li[data-state="FAILED"]')
    expect(failed).to_have_count(1)
    expect(failed.locator(".reason")).to_contain_text("The registry refused the credentials.")
    expect(failed.locator(".reason")).to_contain_text(basic_reg.host)
    expect(page.locator('#targets li[data-state="FINISHED"]')).to_have_count(1)
    expect(page.locator("#job-error")).to_be_visible()
    assert "not-the-password" not in page.content()
    tab.shot("dashboard-job-failed")
    page.click("#retry")
    expect(page.locator("#notice")).to_have_text("Failed targets queued again.")
    expect(page.locator('#job-summary dd[data-field="state"]')).to_have_text("FAILED")  # same wrong password
    assert service.status(job)["attempts"] >= 1


def test_keyboard_and_labels(tab: Page, service: Service) -> None:
    from playwright.sync_api import expect

    page = tab.open()
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
             .map(e => e.id || e.outerHTML)"""
    )
    assert unlabeled == []
    page.reload()
    expect(page.locator("#token")).to_have_value(TOKEN)  # kept for this tab across a reload
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    outline = page.evaluate(
        "() => { const e = document.querySelector('#src-image'); e.focus(); return getComputedStyle(e).outlineStyle }"
    )
    assert outline != "none"


def test_mirror_sets_with_last_runs_and_run_now(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from playwright.sync_api import expect

    images.image().push(src_reg.http(), repo, "v1")
    name = "browser-" + repo.rsplit("-", 1)[-1]
    doc = (
        f"version: 1\nmirrors:\n  - name: {name}\n    source: {src_reg.host}/{repo}\n"
        f"    targets: ['{open_reg.host}/mirrored']\n    tags:\n      list: [v1]\n"
    )
    r = service.http.post("/api/mirrors", content=doc, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    page = tab.open()
    row = page.locator(f'#mirrors tr[data-mirror="{name}"]')
    expect(row.locator(".runs")).to_have_text("never run")
    row.get_by_role("button", name=f"Run {name} now").click()
    expect(page.locator("#notice")).to_have_text(f"Mirror {name} started.")
    expect(row.locator(".runs")).to_contain_text("FINISHED (1 copied, 0 up to date, 0 failed)", timeout=WAIT)
    tab.shot("dashboard-mirrors")
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), f"mirrored/{repo}", "v1")


def test_push_events_and_their_lag(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from playwright.sync_api import expect

    img = images.image().push(src_reg.http(), repo, "v2")
    name = "pushed-" + repo.rsplit("-", 1)[-1]
    doc = (
        f"version: 1\nregistries:\n  - host: '{src_reg.host}'\n    events: {{name: {name}, secret: s3cret-{name}}}\n"
        f"mirrors:\n  - name: {name}\n    source: {src_reg.host}/{repo}\n"
        f"    targets: ['{open_reg.host}/pushed']\n"
    )
    r = service.http.post("/api/mirrors", content=doc, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    event = {"events": [{"action": "push", "target": {"mediaType": img.root.media_type, "digest": img.digest,
                                                      "repository": repo, "tag": "v2"}}]}  # fmt: skip
    r = service.http.post(f"/api/events/{name}", json=event, headers={"Authorization": f"Bearer s3cret-{name}"})
    assert r.status_code == 202, r.text
    assert r.json()["matched"] == 1
    page = tab.open()
    row = page.locator(f'#mirrors tr[data-mirror="{name}"]')
    expect(row.locator(".runs")).to_contain_text("push: FINISHED (1 copied", timeout=WAIT)
    expect(row.locator(".runs")).to_contain_text("after the push", timeout=WAIT)
    page.reload()
    expect(page.locator("#events-summary")).to_contain_text("1 matched")
    tab.shot("dashboard-push-events")
    assert_same_image(src_reg.http(), repo, "v2", open_reg.http(), f"pushed/{repo}", "v2")


def test_the_form_sends_spool_only_when_chosen(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    from playwright.sync_api import expect

    images.image().push(src_reg.http(), repo, "v1")
    page = tab.open()
    expect(page.locator("#spool")).to_have_count(1)  # tri-state: service default / on / off
    expect(page.locator("#spool")).to_have_value("")

    def submit(choice: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The body the page POSTed and the request the service stored."""
        page.goto(f"{service.url}/#/")
        page.fill("#src-endpoint", src_reg.endpoint)
        page.fill("#src-image", repo)
        page.fill("#src-ref", "v1")
        page.fill("#dst-endpoints", open_reg.endpoint)
        if choice is not None:
            page.select_option("#spool", label=choice)
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/api/distribute/image")) as request:
            page.click("text=Start copy")
        page.wait_for_url("**/#/jobs/*")
        job = page.url.rsplit("/", 1)[-1]
        expect(page.locator('#job-summary dd[data-field="state"]')).to_have_text("FINISHED", timeout=WAIT)
        with sqlite3.connect(service.directory / "regcast.db") as db:
            (stored,) = db.execute("SELECT request FROM jobs WHERE id = ?", (job,)).fetchone()
        return json.loads(request.value.post_data), json.loads(stored)

    body, stored = submit(None)  # left at the default: no key, the service decides
    assert "spool" not in body
    assert "spool" not in stored
    body, stored = submit("off")
    assert body["spool"] is False
    assert stored["spool"] is False
    body, stored = submit("on")
    assert body["spool"] is True
    assert stored["spool"] is True
    assert_same_image(src_reg.http(), repo, "v1", open_reg.http(), repo, "v1")


def test_a_target_waiting_on_a_rate_limit_or_going_alone_says_so(
    tab: Page, service: Service, repo: str, src_reg: RegistryServer, open_reg: RegistryServer
) -> None:
    """The page shows a target's ``waiting`` and ``detached`` keys (issue 19, rate-limit waits) in words.
    The job is real; its status, as the page reads it, gets the two keys a slow fleet would give it."""
    from playwright.sync_api import expect

    images.image().push(src_reg.http(), repo, "v1")
    job = service.submit({"source": source(src_reg, repo), "targets": [{"endpoint": open_reg.endpoint}]})
    body = service.wait(job)
    body["targets"][0].update(
        waiting="waiting for the rate limit of registry r.example until 2026-11-29T16:00:00Z: 429",
        detached={"blobs": 2, "reason": "fell behind"},
        bytes_per_second=5_000_000,
    )

    def status(r: Any) -> None:
        if r.request.method == "GET" and r.request.headers.get("authorization") == f"Bearer {TOKEN}":
            r.fulfill(status=200, content_type="application/json", body=json.dumps(body))
        else:
            r.continue_()

    tab.page.route(f"**/api/distribute/image/{job}", status)
    page = tab.open(f"#/jobs/{job}")
    target = page.locator("#targets li").first
    expect(target.locator(".waiting")).to_have_text(
        "Waiting: waiting for the rate limit of registry r.example until 2026-11-29T16:00:00Z: 429"
    )
    expect(target.locator(".detached")).to_contain_text("Going alone at ")
    expect(target.locator(".detached")).to_contain_text("(2 blobs): fell behind")
    for _ in range(2):  # read again with the token the tab keeps (the fixture checks the last reads' bearer)
        page.reload()
        expect(page.locator("#targets li .waiting")).to_have_count(1)
