"""sync-collection paging (proxy.interop.synclimit): tokens, and a model of the storage's sync().

The model stands for Radicale's ``sync()``: a token names a snapshot, and a sync from it reports every href
whose version differs (created, changed or deleted). Whatever the limit and whatever changes happen
between pages, following the continuation tokens brings the client exactly to the server's state.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.interop.davxml import DAV, href_of, status_response
from proxy.interop.synclimit import MAX_TIERS, TOKEN_PREFIX, Checkpoint, parse_limit, plan_page


class ModelStorage:
    def __init__(self, hrefs: list[str]) -> None:
        self.counter = 0
        self.items: dict[str, int] = {}
        self.snapshots: list[dict[str, int]] = []
        for href in hrefs:
            self.write(href)

    def write(self, href: str) -> None:
        self.counter += 1
        self.items[href] = self.counter

    def delete(self, href: str) -> None:
        self.items.pop(href, None)

    def changed(self, token: str) -> set[str]:
        old = self.snapshots[int(token)] if token else {}
        return {h for h in old.keys() | self.items.keys() if old.get(h) != self.items.get(h)}

    def sync(self, token: str) -> tuple[list[ET.Element], str]:
        """Radicale's answer from ``token``: a response per changed href, and the current token."""
        responses = []
        for href in self.changed(token):
            version = self.items.get(href)
            response = status_response(href, "HTTP/1.1 200 OK" if version else "HTTP/1.1 404 Not Found")
            response.set("version", str(version or 0))
            responses.append(response)
        self.snapshots.append(dict(self.items))
        return responses, str(len(self.snapshots) - 1)


def one_report(storage: ModelStorage, token: str, limit: int | None) -> tuple[list[ET.Element], str, bool]:
    """What the front door does for one REPORT (the two Radicale calls, then the pure plan)."""
    checkpoint = Checkpoint.decode(token) if token.startswith(TOKEN_PREFIX) else None
    base = checkpoint.base if checkpoint else token
    responses, storage_token = storage.sync(base)
    since_tier = {token: storage.sync(token)[0] for token, _ in checkpoint.tiers} if checkpoint else {}
    return plan_page(responses, checkpoint, since_tier, base, storage_token, limit)


def apply(client: dict[str, int], shown: list[ET.Element]) -> None:
    for response in shown:
        version = int(response.get("version", "0"))
        if version:
            client[href_of(response)] = version
        else:
            client.pop(href_of(response), None)


hrefs = st.sampled_from([f"/alice/cal/e{i:02}.ics" for i in range(12)])
operations = st.lists(st.tuples(st.sampled_from(["write", "delete"]), hrefs), max_size=4)


@settings(max_examples=600, deadline=None)
@given(
    initial=st.lists(hrefs, max_size=12, unique=True),
    limit=st.integers(1, 5),
    between_pages=st.lists(operations, max_size=6),
    start_synced=st.booleans(),
)
def test_following_continuation_tokens_reaches_the_server_state(initial, limit, between_pages, start_synced):
    storage = ModelStorage(initial)
    client: dict[str, int] = {}
    token = ""
    if start_synced:  # a client that synced fully once, then pages through later changes
        shown, token, _ = one_report(storage, "", None)
        apply(client, shown)
        for href in initial[::2]:
            storage.write(href)
    pending = list(between_pages)
    for _page in range(100):
        shown, token, truncated = one_report(storage, token, limit)
        assert len(shown) <= limit
        apply(client, shown)
        if truncated:
            assert token.startswith(TOKEN_PREFIX)
        elif not pending:
            break
        for action, href in pending.pop(0) if pending else []:
            getattr(storage, action)(href)
    else:
        pytest.fail("paging did not finish")
    assert client == storage.items
    assert not token.startswith(TOKEN_PREFIX)  # the complete answer hands out the storage's own token


def test_without_a_limit_nothing_is_truncated():
    storage = ModelStorage([f"/c/{i}.ics" for i in range(50)])
    shown, token, truncated = one_report(storage, "", None)
    assert len(shown) == 50 and not truncated and token == "0"


def test_a_truncated_page_holds_the_first_hrefs_in_order():
    storage = ModelStorage(["/c/b.ics", "/c/a.ics", "/c/c.ics"])
    shown, token, truncated = one_report(storage, "", 2)
    assert [href_of(r) for r in shown] == ["/c/a.ics", "/c/b.ics"] and truncated
    assert Checkpoint.decode(token) == Checkpoint("", (("0", "/c/b.ics"),))


@given(st.text(), st.lists(st.tuples(st.text(), st.text()), min_size=1, max_size=MAX_TIERS, unique_by=lambda t: t[1]))
def test_checkpoints_round_trip(base, tiers):
    checkpoint = Checkpoint(base, tuple(sorted(tiers, key=lambda tier: tier[1])))
    token = checkpoint.encode()
    assert token.startswith(TOKEN_PREFIX) and token.isascii() and " " not in token
    assert Checkpoint.decode(token) == checkpoint


def forged(value) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize("token", [
    TOKEN_PREFIX + "!!!", TOKEN_PREFIX + "e30", TOKEN_PREFIX + "WzEsMiwzXQ", "x",
    forged(["", []]), forged(["", [["a", "/z"], ["b", "/a"]]]), forged([1, [["a", "/a"]]]),
    forged(["", [["a", "/a"]] * 2]), forged(["", [[str(i), f"/{i:02}"] for i in range(MAX_TIERS + 1)]]),
])
def test_forged_continuation_tokens_are_refused(token):
    with pytest.raises(ValueError):
        Checkpoint.decode(token)


@pytest.mark.parametrize(("xml", "expected"), [
    ("", None),
    ("<D:limit><D:nresults>7</D:nresults></D:limit>", 7),
    ("<D:limit><D:nresults> 1 </D:nresults></D:limit>", 1),
])
def test_parse_limit(xml, expected):
    root = ET.fromstring(f'<D:sync-collection xmlns:D="DAV:">{xml}</D:sync-collection>')
    assert parse_limit(root) == expected


@pytest.mark.parametrize("nresults", ["0", "-3", "many", ""])
def test_unusable_limits_are_refused(nresults):
    root = ET.fromstring(
        f'<D:sync-collection xmlns:D="DAV:"><D:limit><D:nresults>{nresults}</D:nresults></D:limit></D:sync-collection>'
    )
    with pytest.raises(ValueError, match="positive integer"):
        parse_limit(root)
    assert root.find(DAV + "limit") is not None
