"""The status page in a real headless browser (Debian's chromium driven by Playwright).

Screenshots go to ``test-artifacts/status-page/`` (git-ignored) so that a person can look at what was tested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.helpers import event, put
from tests.operations.conftest import START
from tests.relay.conftest import Linked, link, make_linked, wait_until
from tests.relay.test_import import seed

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("CALRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "status-page"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing: apt-get install chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


def page_for(browser, linked, user: str, mobile: bool = False):
    name, password = linked.relay.auth(user)
    viewport = {"width": 390, "height": 844} if mobile else {"width": 1200, "height": 900}
    context = browser.new_context(http_credentials={"username": name, "password": password}, viewport=viewport)
    return context.new_page()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def emulator_faults(linked, *flags: str) -> None:
    subprocess.run([sys.executable, "-m", "proxy", "emulator", "faults", "--url", linked.emulator.discovery_url,
                    *flags], check=True, capture_output=True, timeout=60)


def test_user_page_banner_after_revocation_and_gone_after_relinking(browser, linked):
    page = page_for(browser, linked, "alice", mobile=True)
    page.goto(linked.url)  # a browser at / is sent to the status page
    assert page.url.endswith("/status/alice")
    assert page.locator("#link").inner_text().count("demo@icloud.test") == 1
    roles = page.locator("#calendars .role").all_inner_texts()
    assert any(r.startswith("primary") for r in roles) and any(r.startswith("conflict") for r in roles)
    assert page.locator("#reconnect-banner").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"
    shot(page, "user-connected-phone")

    emulator_faults(linked, "--revoke-app-passwords")
    linked.sync_now()
    wait_until(lambda: linked.status()["state"] == "needs-reconnect", message="needs-reconnect")
    crm = linked.relay.auth("crm")
    assert put(linked.url + "alice/sales/late.ics", crm, event("late", START)).status_code == 201
    linked.sync_now()
    wait_until(lambda: linked.status()["pending"], message="the appointment waits")
    page.reload()
    pending = page.locator("#pending").inner_text()
    assert "late" in pending and "refused the credentials" in pending
    banner = page.locator("#reconnect-banner")
    assert banner.is_visible()
    text = banner.inner_text()
    assert "app-specific password" in text and "appleid.apple.com" in text and "calrelay link alice" in text
    color = banner.evaluate("e => getComputedStyle(e).backgroundColor")
    red, green, blue = (int(x) for x in color[color.index("(") + 1:color.index(")")].split(",")[:3])
    assert red > 150 and green < 80 and blue < 80, color
    assert page.locator("#link-state").inner_text() == "needs-reconnect"
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"
    shot(page, "user-needs-reconnect-phone")
    operator = page_for(browser, linked, "crm")
    operator.goto(linked.url + "status?attention=1")
    rows = operator.locator("#users .user-row")
    assert [rows.nth(i).get_attribute("data-user") for i in range(rows.count())] == ["alice"]
    assert "needs-reconnect" in rows.first.inner_text()
    shot(operator, "overview-attention")

    emulator_faults(linked, "--no-revoke-app-passwords")
    link(linked.relay)  # the person made a new app-specific password and linked again
    wait_until(lambda: linked.status()["state"] == "connected", message="connected again")
    wait_until(lambda: linked.status()["pending"] == [], message="the waiting appointment sent")
    page.reload()
    assert page.locator("#reconnect-banner").count() == 0
    assert page.locator("#link-state").inner_text() == "connected"
    assert "Nothing waiting" in page.locator("#pending").inner_text()
    activity = page.locator("#activity").inner_text()
    assert "created" in activity and "late" in activity
    assert page.locator("#calendars").inner_text().count("never") == 0  # both calendars pulled
    shot(page, "user-relinked-phone")


def test_service_account_sees_every_user_a_person_only_themself(browser, linked):
    page = page_for(browser, linked, "crm")
    page.goto(linked.url + "status")
    rows = page.locator("#users .user-row")
    users = [rows.nth(i).get_attribute("data-user") for i in range(rows.count())]
    assert {"alice", "bob"} <= set(users)
    shot(page, "overview-service")
    page.click("#attention-filter")
    assert page.locator("#users .user-row").count() == 0  # alice's link is fine, bob has none
    page.goto(linked.url + "status/alice")
    assert page.locator("#link-state").inner_text() == "connected"

    person = page_for(browser, linked, "bob")
    person.goto(linked.url + "status")
    assert person.url.endswith("/status/bob")
    assert "not linked" in person.content()
    response = person.goto(linked.url + "status/alice")
    assert response.status == 403
    assert "demo@icloud.test" not in person.content()
    shot(person, "person-denied")


def test_caldav_clients_at_root_are_unaffected(linked):
    auth = linked.relay.auth("alice")
    propfind = requests.request("PROPFIND", linked.url, auth=auth, headers={"Depth": "0"}, timeout=10)
    assert propfind.status_code == 207
    plain_get = requests.get(linked.url, auth=auth, timeout=10, allow_redirects=False)
    assert plain_get.headers.get("Location") != "/status"  # Radicale's own answer
    browser_get = requests.get(linked.url, auth=auth, timeout=10, allow_redirects=False,
                               headers={"Accept": "text/html,application/xhtml+xml"})
    assert browser_get.status_code == 302 and browser_get.headers["Location"] == "/status"
    assert requests.get(linked.url + "status/alice", timeout=10).status_code == 401


def test_times_in_the_configured_or_the_persons_zone(calrelay_factory):
    linked = make_linked(calrelay_factory(overrides={"availability": {"timezone": "America/New_York"}}))
    auth = linked.relay.auth("alice")
    page = requests.get(linked.url + "status/alice", auth=auth, timeout=10).text
    assert "times in America/New_York" in page and '<meta name="viewport"' in page
    own = requests.get(linked.url + "status/alice", params={"tz": "Asia/Tokyo"}, auth=auth, timeout=10).text
    assert "times in Asia/Tokyo" in own
    bad = requests.get(linked.url + "status/alice", params={"tz": "Mars/Olympus"}, auth=auth, timeout=10)
    assert bad.status_code == 200 and "times in America/New_York" in bad.text


IMPORTED = 300


def test_a_running_import_shows_its_progress(browser, calrelay_factory):
    """A real first import from the emulator, slowed down by its latency fault, seen in the browser."""
    relay = calrelay_factory(overrides={"upstream": {"poll_interval": 3600, "import_batch": 10}})
    seed(relay, IMPORTED)
    linked = Linked(relay)
    emulator_faults(linked, "--latency-ms", "60")
    link(relay)
    page = page_for(browser, linked, "alice")

    def under_way() -> bool:
        """The page shows the import with some of it written (so that the rate and time left are known)."""
        page.goto(linked.url + "status/alice")
        running = page.locator(".import")
        return running.count() > 0 and running.first.locator("progress").get_attribute("value") != "0"

    wait_until(under_way, timeout=30, message="the import under way on the status page")
    running = page.locator(".import").first
    assert running.get_attribute("data-calendar") == "work"
    counts = running.locator(".import-counts").inner_text()
    fetched, total, written = (int(n) for n in re.fullmatch(r"(\d+) of (\d+) fetched, (\d+) written",
                                                             counts).groups())
    assert total == IMPORTED and 0 < written <= fetched <= IMPORTED
    assert running.locator("progress").get_attribute("max") == str(IMPORTED)
    assert running.locator("progress").get_attribute("value") == str(written)
    assert int(re.fullmatch(r"(\d+) events/s", running.locator(".import-rate").inner_text()).group(1)) > 0
    assert re.fullmatch(r"about \d+ (s|min) left", running.locator(".import-left").inner_text())
    assert page.locator('meta[http-equiv="refresh"]').count() == 1  # the page follows the import by itself
    shot(page, "user-importing")
    operator = page_for(browser, linked, "crm")
    operator.goto(linked.url + "status")
    # The latency fault keeps the import going for seconds after the first batch: still running here.
    assert "importing" in operator.locator('#users .user-row[data-user="alice"]').inner_text()

    emulator_faults(linked, "--latency-ms", "0")
    done = wait_until(lambda: linked.status()["calendars"][0]["last_pull"], timeout=120, message="the import's end")
    # Alice's own time zone: the page shows the last pull in it.
    assert requests.put(linked.url + "api/v1/users/alice/settings", json={"timezone": "Asia/Tokyo"},
                        auth=relay.auth("alice"), timeout=10).status_code == 200
    phone = page_for(browser, linked, "alice", mobile=True)
    phone.goto(linked.url + "status/alice")
    assert phone.locator(".import").count() == 0
    assert phone.locator('meta[http-equiv="refresh"]').count() == 0
    assert "times in Asia/Tokyo" in phone.locator("header").inner_text()
    tokyo = datetime.fromisoformat(done).astimezone(ZoneInfo("Asia/Tokyo")).strftime("%a %d %b %Y, %H:%M")
    assert tokyo in phone.locator("#calendars .calendar-row").first.inner_text()
    assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "scrolls sideways"
    shot(phone, "user-imported-phone-tokyo")
