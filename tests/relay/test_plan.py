"""Unit tests of the relay's pure decisions: the push/pull plans, the conflict rule and the back-off."""

from __future__ import annotations

from proxy.model import Origin
from proxy.relay.backoff import Backoff
from proxy.relay.conflicts import edited_at, winner
from proxy.relay.plan import (
    ApplyToCrm,
    Create,
    Delete,
    Forget,
    Hold,
    Import,
    Keep,
    LocalItem,
    Note,
    NoteRemote,
    RefreshMirror,
    Relocate,
    RemoteDeleted,
    RemoteItem,
    Update,
    outdated,
    plan_pull,
    plan_push,
    tombstone,
    vanished,
)
from proxy.state import ItemStatus

CAL = "https://p1.example/1/calendars/work/"


def local(uid: str, hash_: str = "h1", path: str = "/alice/sales/", etag: str = '"e1"') -> LocalItem:
    return LocalItem(uid, path, f"{uid}.ics", etag, "TEXT", hash_)


def status(uid: str, origin: str = Origin.CRM, local_hash: str = "h1", remote_hash: str = "r1",
           remote_href: str | None = "/1/calendars/work/x.ics", local_path: str = "/alice/sales/") -> ItemStatus:
    return ItemStatus("alice", CAL, uid, origin, local_path, f"{uid}.ics", '"e1"', local_hash, remote_href, '"r"',
                      remote_hash)


def push(appointments, statuses, mirror=(), two_way=True):
    return plan_push({i.uid: i for i in appointments}, {i.uid: i for i in mirror}, statuses,
                     "/1/calendars/work/", lambda uid: f"{uid}.ics", two_way)


def test_push_creates_updates_relocates_and_deletes():
    actions = push(
        [local("new"), local("changed", "h2"), local("moved", path="/alice/support/"), local("same")],
        [status("changed"), status("moved"), status("same"), status("cancelled")],
    )
    kinds = {type(a).__name__: a for a in actions}
    assert set(kinds) == {"Create", "Update", "Relocate", "Delete"}
    assert isinstance(kinds["Create"], Create) and kinds["Create"].href == "/1/calendars/work/new.ics"
    assert isinstance(kinds["Update"], Update) and kinds["Update"].local.uid == "changed"
    assert isinstance(kinds["Relocate"], Relocate) and kinds["Relocate"].local.path == "/alice/support/"
    assert isinstance(kinds["Delete"], Delete) and kinds["Delete"].status.uid == "cancelled"


def test_push_never_overwrites_an_icloud_born_uid_and_does_not_undo_icloud_deletions():
    theirs = status("theirs", origin=Origin.ICLOUD, local_path="/alice/icloud-work/")
    copy = local("theirs", "h2")
    assert push([copy], [theirs], mirror=[local("theirs", path="/alice/icloud-work/")]) == [
        Keep(copy, theirs, Hold.ICLOUD_UID)]  # held back, and said why
    gone = status("gone", remote_href=None)
    # Deleted in iCloud, unchanged in the CRM: stays deleted.
    assert push([local("gone")], [gone]) == [Keep(local("gone"), gone, Hold.ICLOUD_DELETION)]
    assert [type(a) for a in push([local("gone", "h2")], [gone])] == [Create]  # changed again: comes back
    assert [type(a) for a in push([], [gone])] == [Forget]


def test_push_sends_crm_edits_of_icloud_born_events_only_in_two_way_mode():
    born = status("born", origin=Origin.ICLOUD, local_path="/alice/icloud-work/")
    edited = local("born", "h2", path="/alice/icloud-work/")
    assert [type(a) for a in push([], [born], mirror=[edited])] == [Update]
    assert push([], [born], mirror=[edited], two_way=False) == []
    assert [type(a) for a in push([], [born], mirror=[])] == [Delete]  # deleted from the mirror by the CRM
    assert push([], [born], mirror=[local("born", path="/alice/icloud-work/")]) == []


def remote(uid: str, hash_: str = "r1", href: str | None = None, etag: str = '"r"') -> RemoteItem:
    return RemoteItem(uid, href or "/1/calendars/work/x.ics", etag, "TEXT", hash_)


def test_pull_imports_refreshes_and_recognises_its_own_pushes():
    rows = [status("ours"), status("theirs", origin=Origin.ICLOUD), status("churned", origin=Origin.ICLOUD)]
    actions = plan_pull(
        [remote("new"), remote("ours"), remote("theirs", "r2"), remote("churned", etag='"new"')],
        [], rows, two_way=True, propagate_deletions=False,
    )
    by_uid = {a.remote.uid: a for a in actions}
    assert isinstance(by_uid["new"], Import)
    assert "ours" not in by_uid  # what calrelay pushed is never imported
    assert isinstance(by_uid["theirs"], RefreshMirror)
    assert isinstance(by_uid["churned"], NoteRemote)  # only the ETag changed: housekeeping
    assert by_uid["churned"].note is Note.HOUSEKEEPING
    moved = plan_pull([remote("theirs", href="/1/calendars/work/y.ics")], [], rows, True, False)
    assert [(type(a), a.note) for a in moved] == [(NoteRemote, Note.MOVED)]


def test_pull_applies_icloud_edits_of_appointments_in_two_way_only():
    edited = [remote("ours", "r2")]
    assert [type(a) for a in plan_pull(edited, [], [status("ours")], True, False)] == [ApplyToCrm]
    (one_way,) = plan_pull(edited, [], [status("ours")], False, False)
    assert isinstance(one_way, NoteRemote) and one_way.note is Note.ONE_WAY  # recorded, not applied (rule 9)


def test_pull_deletions_keep_by_default_and_never_delete_appointments():
    rows = [status("ours", remote_href="/a.ics"), status("theirs", origin=Origin.ICLOUD, remote_href="/b.ics")]
    kept = plan_pull([], ["/a.ics", "/b.ics"], rows, True, propagate_deletions=False)
    assert all(isinstance(a, RemoteDeleted) and not a.remove_mirror for a in kept)
    propagated = {a.status.uid: a.remove_mirror for a in plan_pull([], ["/a.ics", "/b.ics"], rows, True, True)}
    assert propagated == {"ours": False, "theirs": True}


def test_a_deleted_objects_status_stays_until_icloud_no_longer_lists_it():
    for origin in (Origin.CRM, Origin.ICLOUD):
        gone = tombstone(status("gone", origin=origin, remote_href="/g.ics"), '"r9"', "r9")
        # The push does not delete it again, not even in two-way mode.
        assert push([], [gone], two_way=True) == []
        # A pull that still sees the deleted version (fetched before the delete, or a lagging listing) does not
        # import it; a new version under that UID is iCloud's own.
        assert plan_pull([remote("gone", "r9", href="/g.ics")], [], [gone], True, True) == []
        assert [type(a) for a in plan_pull([remote("gone", "r10", href="/g.ics")], [], [gone], True, True)] == [Import]
        # Listed no more: the status goes.
        assert plan_pull([], ["/g.ics"], [gone], True, True) == [Forget(gone)]
    # An appointment again under the UID: created anew.
    crm_gone = tombstone(status("gone", remote_href="/g.ics"), '"r9"', "r9")
    assert push([local("gone")], [crm_gone]) == [Create(local("gone"), "/1/calendars/work/gone.ics")]


def test_listing_helpers():
    rows = [status("a", remote_href="/a.ics"), status("b", remote_href="/b.ics")]
    listing = {"/a.ics": '"r"', "/c.ics": '"x"'}
    assert vanished(listing, rows) == ["/b.ics"]
    assert outdated(listing, rows) == ["/c.ics"]


def event(stamp: str) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:u\r\nDTSTART:20270101T100000Z\r\n"
            f"{stamp}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def test_conflicts_later_edit_wins_ties_and_one_way_go_to_the_crm():
    early, late = event("LAST-MODIFIED:20270101T100000Z"), event("LAST-MODIFIED:20270101T110000Z")
    assert winner(early, late, two_way=True) is Origin.ICLOUD
    assert winner(late, early, two_way=True) is Origin.CRM
    assert winner(early, early, two_way=True) is Origin.CRM
    assert winner(early, late, two_way=False) is Origin.CRM
    assert edited_at(event("DTSTAMP:20270102T000000Z")).day == 2  # DTSTAMP stands in for LAST-MODIFIED
    assert winner(event("X-NONE:1"), late, two_way=True) is Origin.CRM  # unknown time: the CRM keeps its edit


def test_backoff_grows_with_jitter_and_never_undercuts_retry_after():
    backoff = Backoff(2.0, 60.0)
    delays = [backoff.next_delay(None, lambda: 0.0) for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # half of each step is fixed, capped at max
    assert Backoff(2.0, 60.0).next_delay(None, lambda: 0.999) < 2.0
    assert Backoff(2.0, 60.0).next_delay(10.0, lambda: 0.5) == 20.0  # Retry-After longer: outlasted twice
    assert Backoff(2.0, 60.0, failures=5).next_delay(1.0, lambda: 0.5) == 45.0  # shorter: our back-off
    backoff.succeeded()
    assert backoff.failures == 0
