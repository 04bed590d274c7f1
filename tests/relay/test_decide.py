"""Unit tests of the relay's decisions after unexpected answers (proxy.relay.decide)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.model import Origin
from proxy.relay.decide import (
    AfterMissingUpdate,
    AfterRefusedCreate,
    AfterRefusedDelete,
    AfterRefusedUpdate,
    Delta,
    IcloudBornEdit,
    PullCursor,
    TokenState,
    after_missing_update,
    after_refused_create,
    after_refused_delete,
    after_refused_update,
    delta_from_changes,
    delta_from_listing,
    icloud_born_edit,
    next_cursor,
    pull_unchanged,
    remirror_delta,
)
from proxy.relay.plan import RefreshMirror, RemoteItem, plan_pull
from proxy.state import ItemStatus

CAL = "https://p1.example/1/calendars/work/"


def status(uid: str = "u", origin: str = Origin.CRM, remote_hash: str = "r1", href: str | None = "/w/u.ics",
           etag: str = '"e1"') -> ItemStatus:
    return ItemStatus("alice", CAL, uid, origin, "/alice/sales/", f"{uid}.ics", '"l"', "h", href, etag, remote_hash)


def test_refused_create_adopts_our_own_copy_overwrites_an_old_one_and_refuses_a_uid_elsewhere():
    assert after_refused_create("ours", "ours") is AfterRefusedCreate.ADOPT
    assert after_refused_create("older", "ours") is AfterRefusedCreate.OVERWRITE
    assert after_refused_create(None, "ours") is AfterRefusedCreate.UID_ELSEWHERE


def test_refused_update_adopts_overwrites_churn_and_resolves_real_conflicts_by_the_winner():
    row = status(remote_hash="known")
    assert after_refused_update("ours", "ours", row, icloud_wins=True) is AfterRefusedUpdate.ADOPT
    # Only the ETag moved (housekeeping): no conflict, whoever would win.
    assert after_refused_update("known", "ours", row, icloud_wins=True) is AfterRefusedUpdate.OVERWRITE
    assert after_refused_update("theirs", "ours", row, icloud_wins=True) is AfterRefusedUpdate.KEEP_ICLOUD
    assert after_refused_update("theirs", "ours", row, icloud_wins=False) is AfterRefusedUpdate.OVERWRITE_CONFLICT


def test_an_update_of_something_deleted_in_icloud_recreates_it():
    assert after_missing_update(Origin.CRM) is AfterMissingUpdate.RECREATE


def test_crm_edit_of_an_icloud_born_event_merges_unless_icloud_changed_it_too():
    row = status(origin=Origin.ICLOUD, remote_hash="known")
    assert icloud_born_edit("known", row) is IcloudBornEdit.MERGE
    assert icloud_born_edit("edited", row) is IcloudBornEdit.KEEP_ICLOUD


def test_refused_delete_keeps_an_icloud_born_event_edited_in_icloud_and_deletes_otherwise():
    assert after_refused_delete("edited", status(origin=Origin.ICLOUD, remote_hash="k")) is AfterRefusedDelete.KEEP
    assert after_refused_delete("k", status(origin=Origin.ICLOUD, remote_hash="k")) is AfterRefusedDelete.DELETE_AGAIN
    # A CRM appointment cancelled in the CRM goes, whatever iCloud did to it meanwhile.
    assert after_refused_delete("edited", status(remote_hash="k")) is AfterRefusedDelete.DELETE_AGAIN


def test_complete_changes_treat_unlisted_known_hrefs_as_deleted_and_fetch_only_new_etags():
    rows = [status("a", href="/w/a.ics", etag='"1"'), status("b", href="/w/b.ics", etag='"1"')]
    delta = delta_from_changes({"/w/a.ics": '"1"', "/w/c.ics": '"1"'}, [], True, rows)
    assert delta == Delta(wanted=["/w/c.ics"], deleted=["/w/b.ics"])


def test_incremental_changes_report_deletions_themselves():
    rows = [status("a", href="/w/a.ics", etag='"1"'), status("b", href="/w/b.ics", etag='"1"')]
    delta = delta_from_changes({"/w/a.ics": '"2"'}, ["/w/x.ics", "/w/x.ics"], False, rows)
    assert delta == Delta(wanted=["/w/a.ics"], deleted=["/w/x.ics"])


def test_a_refused_token_gives_the_same_delta_from_a_full_listing():
    rows = [status("a", href="/w/a.ics", etag='"1"'), status("b", href="/w/b.ics", etag='"1"')]
    listing = {"/w/a.ics": '"2"', "/w/c.ics": '"1"'}
    assert delta_from_listing(listing, rows) == delta_from_changes(listing, [], True, rows)


def test_an_incomplete_fetch_keeps_the_old_cursor_so_the_server_reports_the_rest_again():
    old = PullCursor("ctag1", "tok1", TokenState.VALID)
    assert next_cursor(old, "ctag2", "tok2", False, wanted=10, fetched=9) == PullCursor("ctag1", "tok1",
                                                                                        TokenState.VALID)
    assert next_cursor(old, "ctag2", "tok2", False, 10, 10) == PullCursor("ctag2", "tok2", TokenState.VALID)
    assert next_cursor(old, "ctag2", "tok2", True, 0, 0).token_state is TokenState.REFUSED


def test_an_unchanged_ctag_skips_the_pull_only_after_a_first_pull():
    assert pull_unchanged("c", PullCursor("c", "t", TokenState.VALID))
    assert pull_unchanged("c", PullCursor("c", None, TokenState.REFUSED))
    assert not pull_unchanged("c", PullCursor("c", None, TokenState.NONE))
    assert not pull_unchanged(None, PullCursor(None, "t", TokenState.VALID))
    assert not pull_unchanged("d", PullCursor("c", "t", TokenState.VALID))


@given(st.integers(0, 50), st.integers(0, 50), st.booleans())
def test_the_cursor_advances_exactly_when_everything_wanted_was_fetched(wanted, fetched, refused):
    fetched = min(fetched, wanted)
    old = PullCursor("c1", "t1", TokenState.VALID)
    cursor = next_cursor(old, "c2", "t2", refused, wanted, fetched)
    assert (cursor.token == "t2") == (fetched == wanted)
    assert cursor.token_state is (TokenState.REFUSED if refused else TokenState.VALID)


def test_hrefs_are_compared_percent_decoded():
    rows = [status("a", href="/w/booking@crm.ics", etag='"1"'), status("b", href="/w/b%20c.ics", etag='"1"')]
    listing = {"/w/booking%40crm.ics": '"1"', "/w/b c.ics": '"1"'}
    # The same two objects, spelled as iCloud spells them: nothing to fetch, nothing gone.
    assert delta_from_listing(listing, rows) == Delta(wanted=[], deleted=[])
    assert delta_from_changes(listing, [], False, rows) == Delta(wanted=[], deleted=[])
    assert delta_from_changes({"/w/booking%40crm.ics": '"2"'}, [], False, rows).wanted == ["/w/booking%40crm.ics"]


def test_a_remirror_reads_every_mirrored_event_again_and_is_asked_again_until_complete():
    rows = [status("a", Origin.ICLOUD, href="/w/a.ics"), status("b", Origin.CRM, href="/w/b.ics"),
            status("c", Origin.ICLOUD, href="/w/c%40x.ics")]
    listing = {"/w/a.ics": '"e1"', "/w/b.ics": '"e1"', "/w/c@x.ics": '"e1"', "/w/new.ics": '"1"'}
    delta = remirror_delta(delta_from_listing(listing, rows), listing, rows)
    assert delta == Delta(wanted=["/w/a.ics", "/w/c@x.ics", "/w/new.ics"], deleted=[])  # not the CRM's own
    old = PullCursor("ctag1", "tok1", TokenState.REMIRROR)
    assert not pull_unchanged("ctag1", old)  # an unchanged calendar is re-mirrored all the same
    assert next_cursor(old, "ctag2", "tok2", False, wanted=3, fetched=2).token_state is TokenState.REMIRROR
    assert next_cursor(old, "ctag2", "tok2", False, wanted=3, fetched=3) == PullCursor("ctag2", "tok2",
                                                                                       TokenState.VALID)


def test_plan_refreshes_unchanged_mirrors_only_when_re_mirroring():
    row = status("a", Origin.ICLOUD, href="/w/a.ics")
    same = RemoteItem("a", "/w/a.ics", '"e1"', "text", "r1")
    assert plan_pull([same], [], [row], False, False) == []
    assert plan_pull([same], [], [row], False, False, remirror=True) == [RefreshMirror(same, row)]
    crm = status("b", Origin.CRM, href="/w/b.ics")
    assert plan_pull([RemoteItem("b", "/w/b.ics", '"e1"', "t", "r1")], [], [crm], True, False, remirror=True) == []
