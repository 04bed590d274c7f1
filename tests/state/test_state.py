"""The relay state on both backends: every StateDB operation, two handles sharing one database (the CLI beside
the server), and concurrent writers through AsyncState's pool."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from proxy.state import AsyncState, ItemStatus, Link, LinkCalendar, StateDB


def _link(user: str = "alice", **changes) -> Link:
    link = Link(user, f"{user}@icloud.test", "https://caldav.icloud.test/", b"\x00secret\xff", "two-way", "keep",
                "/alice/sales/", "connected", None, None, 1.0, 1.0)
    return replace(link, **changes)


def _calendars(user: str = "alice", mirror: str = "/alice/icloud-work/") -> list[LinkCalendar]:
    return [
        LinkCalendar(user, "https://caldav.icloud.test/1/calendars/work/", "work", "Work", "primary", True, mirror),
        LinkCalendar(user, "https://caldav.icloud.test/1/calendars/home/", "home", "Home", "conflict", False,
                     "/alice/icloud-home/"),
    ]


def _item(uid: str, user: str = "alice", url: str = "https://caldav.icloud.test/1/calendars/work/") -> ItemStatus:
    return ItemStatus(user, url, uid, "crm", "/alice/sales/", f"{uid}.ics", '"e1"', "h1", f"/1/work/{uid}.ics",
                      '"r1"', "h1")


@pytest.fixture
def db(database_url):
    state = StateDB(database_url)
    yield state
    state.close()


def test_links_round_trip_with_their_calendars(db):
    db.save_link(_link(), _calendars())
    assert db.link("alice") == _link()
    assert db.links() == [_link()]
    calendars = db.link_calendars("alice")
    assert [c.role for c in calendars] == ["primary", "conflict"]  # primary first
    assert calendars == _calendars()
    assert isinstance(calendars[0].blocks, bool)
    assert db.link("nobody") is None


def test_relinking_keeps_pull_state_of_calendars_that_stay_and_forgets_the_rest(db):
    db.save_link(_link(), _calendars())
    work, home = _calendars()
    db.update_pull_state("alice", work.remote_url, ctag="c1", sync_token="t1", token_state="valid",
                         last_success_at=5.0)
    db.save_item(_item("a"))
    db.save_item(_item("b", url=home.remote_url))
    db.save_link(_link(updated_at=2.0), [work])
    (kept,) = db.link_calendars("alice")
    assert (kept.ctag, kept.sync_token, kept.token_state, kept.last_success_at) == ("c1", "t1", "valid", 5.0)
    assert [i.uid for i in db.items("alice")] == ["a"]  # the unlinked calendar's status is gone
    db.save_link(_link(updated_at=3.0), _calendars(mirror="/alice/icloud-other/"))
    assert db.link_calendars("alice")[0].ctag is None  # another mirror: pull from scratch
    with pytest.raises(ValueError, match="not pull state"):
        db.update_pull_state("alice", work.remote_url, mirror_path="/x/")


def test_a_remirror_asked_for_survives_relinking_and_a_pull_that_began_before_it(db):
    db.save_link(_link(), _calendars())
    work, home = _calendars()
    db.update_pull_state("alice", work.remote_url, ctag="c1", sync_token="t1", token_state="valid")
    db.save_link(_link(updated_at=2.0), [replace(work, token_state="remirror"), home])
    kept = db.link_calendars("alice")[0]
    assert (kept.ctag, kept.sync_token, kept.token_state) == ("c1", "t1", "remirror")
    # A pull under the old policies ends: the re-mirror stays asked for.
    db.update_pull_state("alice", work.remote_url, keep_remirror=True, ctag="c2", token_state="valid")
    assert (db.link_calendars("alice")[0].ctag, db.link_calendars("alice")[0].token_state) == ("c2", "remirror")
    # The re-mirroring pull itself ends it.
    db.update_pull_state("alice", work.remote_url, token_state="valid")
    assert db.link_calendars("alice")[0].token_state == "valid"
    db.update_pull_state("alice", home.remote_url, keep_remirror=True, token_state="refused")
    assert db.link_calendars("alice")[1].token_state == "refused"  # nothing to keep: written as given


def test_link_state_and_errors(db):
    db.save_link(_link(), _calendars())
    db.set_link_state("alice", "needs-reconnect", "revoked")
    link = db.link("alice")
    assert (link.state, link.last_error) == ("needs-reconnect", "revoked")
    assert link.last_error_at is not None and link.updated_at > 1.0
    db.set_link_state("alice", "connected")
    assert (db.link("alice").state, db.link("alice").last_error) == ("connected", "revoked")


def test_item_status_upsert_and_delete(db):
    db.save_item(_item("a"))
    db.save_item(replace(_item("a"), local_etag='"e2"', remote_href=None))
    (item,) = db.items("alice")
    assert (item.local_etag, item.remote_href) == ('"e2"', None)
    assert item.updated_at > 0
    assert db.items("alice", "https://other/") == []
    db.delete_item("alice", item.calendar_url, "a")
    assert db.items("alice") == []


def test_pending_counts_attempts_and_a_fresh_plan_replaces_the_list(db):
    db.set_pending("alice", "a", "create", "throttled")
    db.set_pending("alice", "a", "create", "still throttled")
    (entry,) = db.pending("alice")
    assert (entry.attempts, entry.reason) == (2, "still throttled")
    db.replace_pending("alice", [("a", "create", "queued"), ("b", "delete", "queued")])
    a, b = sorted(db.pending("alice"), key=lambda p: p.uid)
    assert (a.reason, a.attempts, a.first_at) == ("still throttled", 2, entry.first_at)  # history kept
    assert (b.reason, b.attempts) == ("queued", 0)
    db.replace_pending("alice", [("b", "update", "queued")])
    (b,) = db.pending("alice")
    assert (b.uid, b.action) == ("b", "update")
    db.clear_pending("alice", "b")
    db.replace_pending("alice", [])
    assert db.pending("alice") == []


def test_deleting_a_link_removes_everything_of_the_user_only(db):
    for user in ("alice", "bob"):
        db.save_link(_link(user), _calendars(user))
        db.save_item(_item("a", user=user))
        db.set_pending(user, "a", "create", "queued")
    assert db.delete_link("alice")
    assert not db.delete_link("alice")
    assert (db.link("alice"), db.link_calendars("alice"), db.items("alice"), db.pending("alice")) == (None, [], [], [])
    assert db.link("bob") and db.link_calendars("bob") and db.items("bob") and db.pending("bob")


def test_another_handle_sees_link_changes_and_sync_requests(database_url, db):
    other = StateDB(database_url)  # as the CLI would, beside the server
    try:
        seen = db.data_version()
        other.save_link(_link(), _calendars())
        assert db.data_version() != seen
        seen = db.data_version()
        other.set_link_state("alice", "connected")  # a worker's outcome is not a change of the set of links
        assert db.data_version() == seen
        other.request_sync("alice")
        other.request_sync("alice")
        assert db.take_sync_requests() == ["alice"]
        assert db.take_sync_requests() == []
        assert other.delete_link("alice")
        assert db.data_version() != seen
    finally:
        other.close()


def test_concurrent_writers_through_the_pool_lose_nothing(database_url):
    state = AsyncState(database_url)

    async def writes() -> None:
        await asyncio.gather(*(state.call(state.db.set_pending, "alice", f"u{n % 10}", "create", f"try {n}")
                               for n in range(100)))
        await asyncio.gather(*(state.call(state.db.save_item, _item(f"i{n}")) for n in range(50)))

    try:
        asyncio.run(writes())
        assert sum(p.attempts for p in state.db.pending("alice")) == 100
        assert len(state.db.items("alice")) == 50
    finally:
        state.close()


@pytest.mark.parametrize("command", [["status"], ["db", "check"], ["db", "upgrade"]], ids=" ".join)
def test_an_unreachable_database_is_a_clear_message(tmp_path, capsys, command):
    from proxy import cli
    from tests.helpers import free_port

    url = f"postgresql+psycopg://calrelay:hunter2@127.0.0.1:{free_port()}/calrelay"
    (tmp_path / "calrelay.toml").write_text(f'[storage]\ndata_dir = "{tmp_path}"\ndatabase = "{url}"\n')
    assert cli.main([*command, "--config", str(tmp_path / "calrelay.toml")]) == 3
    error = capsys.readouterr().err
    assert "is unavailable" in error and "[storage] database" in error
    assert "hunter2" not in error  # the password is never shown


def test_instances_starting_together_on_a_fresh_database(database_url):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        handles = list(pool.map(lambda _: StateDB(database_url), range(4)))
    try:
        handles[0].save_link(_link(), _calendars())
        assert all(h.link("alice") == _link() for h in handles)
    finally:
        for handle in handles:
            handle.close()
