"""sync-collection with DAV:limit over real HTTP (RFC 6578 §3.6, §3.7), raw where the bytes matter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import defusedxml.ElementTree as DefusedET
import pytest
import requests

from proxy.interop.synclimit import TOKEN_PREFIX
from tests.conftest import Calrelay
from tests.helpers import event, mkcalendar, put

D = "{DAV:}"
START = datetime(2026, 3, 2, 9, tzinfo=UTC)


def sync(server: Calrelay, token: str, limit: int | None = None, user: str = "alice", path: str = "alice/cal/"):
    limit_xml = f"<D:limit><D:nresults>{limit}</D:nresults></D:limit>" if limit is not None else ""
    body = (
        '<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
        f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>{limit_xml}"
        "<D:prop><D:getetag/></D:prop></D:sync-collection>"
    )
    return requests.request("REPORT", server.url + path, data=body.encode(), auth=server.auth(user),
                            headers={"Depth": "0", "Content-Type": "application/xml"}, timeout=10)


def parsed(response: requests.Response) -> tuple[dict[str, str], str]:
    """href -> status of every response, and the token."""
    assert response.status_code == 207, response.text
    root = DefusedET.fromstring(response.content)
    statuses = {}
    for element in root.findall(D + "response"):
        status = element.find(D + "status")
        if status is None:
            status = element.find(f"{D}propstat/{D}status")
        statuses[element.findtext(D + "href")] = status.text if status is not None else ""
    return statuses, root.findtext(D + "sync-token") or ""


@pytest.fixture
def server(calrelay: Calrelay) -> Calrelay:
    assert mkcalendar(calrelay.url + "alice/cal/", calrelay.auth("alice"), "Cal").status_code == 201
    for i in range(5):
        add(calrelay, i)
    return calrelay


def add(server: Calrelay, i: int, summary: str = "Call") -> None:
    text = event(f"e{i}", START + timedelta(hours=i), summary=summary)
    assert put(f"{server.url}alice/cal/e{i}.ics", server.auth("alice"), text).status_code in (201, 204)


def href(i: int) -> str:
    return f"/alice/cal/e{i}.ics"


def test_a_limited_initial_sync_is_paged_with_507_and_continuation_tokens(server):
    first, token = parsed(sync(server, "", 2))
    assert first == {href(0): "HTTP/1.1 200 OK", href(1): "HTTP/1.1 200 OK",
                     "/alice/cal/": "HTTP/1.1 507 Insufficient Storage"}
    assert token.startswith(TOKEN_PREFIX)
    second, token = parsed(sync(server, token, 2))
    assert set(second) == {href(2), href(3), "/alice/cal/"}
    third, token = parsed(sync(server, token, 2))
    assert third == {href(4): "HTTP/1.1 200 OK"}  # complete: no 507
    assert token.startswith("http://radicale.org/ns/sync/")  # the storage's own token from here on
    assert parsed(sync(server, token))[0] == {}


def test_the_507_response_is_exactly_the_request_uri_and_comes_before_the_token(server):
    response = sync(server, "", 4)
    root = DefusedET.fromstring(response.content)
    assert response.headers["Content-Type"].startswith("text/xml")
    assert [child.tag for child in root] == [D + "response"] * 5 + [D + "sync-token"]
    assert response.content.startswith(b"<?xml version='1.0' encoding='utf-8'?>\n<multistatus xmlns=\"DAV:\">")
    assert (
        b"<response><href>/alice/cal/</href><status>HTTP/1.1 507 Insufficient Storage</status></response>"
        b"<sync-token>urn:calrelay:sync-page:"
    ) in response.content


def test_without_a_limit_nothing_is_ever_truncated(server):
    for i in range(5, 40):
        add(server, i)
    statuses, token = parsed(sync(server, ""))
    assert len(statuses) == 40 and "/alice/cal/" not in statuses
    assert token.startswith("http://radicale.org/ns/sync/")


def test_changes_between_pages_are_not_lost(server):
    _, token = parsed(sync(server, ""))
    add(server, 1, "moved")
    add(server, 3, "moved")
    add(server, 6)
    first, token = parsed(sync(server, token, 2))
    assert set(first) == {href(1), href(3), "/alice/cal/"}
    # Between pages: an already sent object changes again, one is deleted, and one is new.
    add(server, 1, "moved again")
    assert requests.delete(server.url + "alice/cal/e0.ics", auth=server.auth("alice"), timeout=10).status_code == 200
    add(server, 7)
    seen: dict[str, str] = {}
    for _ in range(10):
        page, token = parsed(sync(server, token, 2))
        seen.update(page)
        if "/alice/cal/" not in page:
            break
    assert {href(0): "HTTP/1.1 404 Not Found"}.items() <= seen.items()
    assert {href(1), href(6), href(7)} <= set(seen)


def test_an_object_deleted_after_the_first_page_of_an_initial_sync_is_reported_gone(server):
    first, token = parsed(sync(server, "", 2))
    assert set(first) == {href(0), href(1), "/alice/cal/"}
    assert requests.delete(server.url + "alice/cal/e1.ics", auth=server.auth("alice"), timeout=10).status_code == 200
    rest: dict[str, str] = {}
    while True:
        page, token = parsed(sync(server, token, 2))
        rest.update(page)
        if "/alice/cal/" not in page:
            break
    assert rest[href(1)] == "HTTP/1.1 404 Not Found"
    assert {href(2), href(3), href(4)} <= set(rest)


def test_python_caldav_continues_from_a_continuation_token_without_a_limit(server):
    _, token = parsed(sync(server, "", 2))
    calendar = server.client("alice").calendar(url=server.url + "alice/cal/")
    remainder = calendar.objects_by_sync_token(sync_token=token, load_objects=True)
    assert sorted(str(o.url.path) for o in remainder) == [href(2), href(3), href(4)]
    assert remainder.sync_token.startswith("http://radicale.org/ns/sync/")
    add(server, 9)
    later = calendar.objects_by_sync_token(sync_token=remainder.sync_token, load_objects=True)
    assert [str(o.url.path) for o in later] == [href(9)]


@pytest.mark.parametrize("nresults", ["0", "-1", "ten"])
def test_an_unusable_limit_is_a_400_that_says_what_to_send(server, nresults):
    body = ('<D:sync-collection xmlns:D="DAV:"><D:sync-token/><D:sync-level>1</D:sync-level>'
            f"<D:limit><D:nresults>{nresults}</D:nresults></D:limit><D:prop><D:getetag/></D:prop>"
            "</D:sync-collection>")
    response = requests.request("REPORT", server.url + "alice/cal/", data=body, auth=server.auth("alice"),
                                headers={"Depth": "0"}, timeout=10)
    assert response.status_code == 400 and "positive integer" in response.text


def test_a_forged_continuation_token_is_refused_as_an_invalid_sync_token(server):
    response = sync(server, TOKEN_PREFIX + "bm9uc2Vuc2U", 2)
    assert response.status_code == 403 and "valid-sync-token" in response.text


def test_a_stranger_cannot_page_someone_elses_calendar(server):
    _, token = parsed(sync(server, "", 2))
    assert sync(server, token, 2, user="bob").status_code == 403
    assert sync(server, "", 2, user="bob").status_code == 403
