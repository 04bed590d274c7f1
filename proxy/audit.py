"""The audit trail: every relay decision, with its time, UID, calendars and reason.

It answers "why is this appointment not on my iPhone?": each thing the relay did or chose not to do for an
item is one row of ``audit_log`` (declared on :data:`proxy.database.metadata`). The interface is narrow on
purpose, so that the relay records a decision in one line wherever it is made:

- :meth:`AuditLog.record` never blocks the event loop: rows are written, in the order recorded, by one
  background thread;
- :meth:`AuditLog.query` pages newest first (``before`` is the id of the last entry of the previous page);
- :meth:`AuditLog.prune` drops entries older than ``[audit] retention_days``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import sqlalchemy as sa

from proxy.database import create_engine, metadata, reading, writing

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Decision(StrEnum):
    """What the relay decided for one item."""

    CREATED = "created"  # a CRM appointment created on iCloud
    UPDATED = "updated"  # a change sent to iCloud
    DELETED = "deleted"  # deleted from iCloud
    IMPORTED = "imported"  # an iCloud event imported as a blocked slot
    REFRESHED = "refreshed"  # a blocked slot updated after an iCloud edit
    APPLIED = "applied"  # an iCloud edit applied to the CRM appointment (two-way)
    MIRROR_REMOVED = "mirror-removed"  # a blocked slot removed after its iCloud deletion (propagate)
    KEPT_DELETION = "kept-icloud-deletion"  # deleted in iCloud, kept in calrelay by rule
    NOT_APPLIED = "not-applied"  # an iCloud edit of a CRM appointment, not applied (one-way link)
    SKIPPED_BLOCKED = "skipped-blocked"  # a blocked slot: never leaves calrelay
    SKIPPED_SIMPLE = "skipped-simple"  # in a calendar that does not sync
    SKIPPED_DUPLICATE = "skipped-duplicate"  # its UID is also in another booking calendar, whose copy is sent
    SKIPPED_ICLOUD_UID = "skipped-icloud-uid"  # its UID is an iCloud event's, which a CRM copy never overwrites
    SKIPPED_WINDOW = "skipped-outside-window"  # a new iCloud event outside the sync window: not imported yet
    NOT_IMPORTED = "not-imported"  # an iCloud object calrelay cannot mirror (the reason says what is wrong)
    NOTED = "noted"  # a change that needs nothing done on the other side (housekeeping, a move)
    FORGOTTEN = "forgotten"  # gone on both sides: the relay forgets it
    CONFLICT = "conflict"  # changed on both sides; ``winner`` says whose edit was kept
    WAITING = "waiting"  # not done yet; the reason says why and what happens next


#: What reached iCloud (the last of these is the "last push" of the status page).
PUSHED = frozenset({Decision.CREATED, Decision.UPDATED, Decision.DELETED})
#: States rather than events: noted again only when they change, not on every relay pass.
COLLAPSED = frozenset({
    Decision.WAITING, Decision.SKIPPED_BLOCKED, Decision.SKIPPED_SIMPLE, Decision.SKIPPED_DUPLICATE,
    Decision.SKIPPED_ICLOUD_UID, Decision.SKIPPED_WINDOW, Decision.NOT_IMPORTED, Decision.NOTED,
})
#: After these the item is gone from the relay: nothing about it needs remembering.
FINAL = frozenset({Decision.DELETED, Decision.MIRROR_REMOVED, Decision.FORGOTTEN})


audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user", sa.String(255), nullable=False),
    sa.Column("uid", sa.Text, nullable=False),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("calendar", sa.Text),  # the calrelay collection
    sa.Column("icloud_calendar", sa.Text),  # the iCloud calendar's name
    sa.Column("winner", sa.String(16)),  # conflicts only: crm | icloud
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("audit_log_by_user", "user", "id"),
    sa.Index("audit_log_by_uid", "user", "uid", "id"),
    sa.Index("audit_log_by_time", "at"),
)


@dataclass(frozen=True)
class Entry:
    id: int
    at: float
    user: str
    uid: str
    decision: Decision
    calendar: str | None
    icloud_calendar: str | None
    winner: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")
        data["decision"] = self.decision.value
        return data


class AuditLog:
    def __init__(
        self,
        engine: sa.Engine,
        retention_days: float = 0.0,
        on_record: Callable[[Decision, str | None], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.retention_days = retention_days
        self._on_record = on_record
        self._clock = clock
        # One thread: rows land in the order they were recorded, and a query sees every earlier record.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="audit")
        self._last: dict[tuple[str, str], tuple[Decision, str]] = {}  # (user, uid) -> what was last noted
        # Rows recorded and not yet written: the audit thread writes all it finds in one transaction, so an
        # import of thousands of events costs a few transactions, not one per event.
        self._queue: list[dict[str, Any]] = []
        self._queue_lock = threading.Lock()
        metadata.create_all(engine, tables=[audit_log])

    @classmethod
    def open(cls, url: str, retention_days: float = 0.0, **kwargs: Any) -> AuditLog:
        return cls(create_engine(url), retention_days, **kwargs)

    def record(
        self,
        decision: Decision,
        user: str,
        uid: str,
        reason: str,
        *,
        calendar: str | None = None,
        icloud_calendar: str | None = None,
        winner: str | None = None,
        state: bool | None = None,
    ) -> None:
        """Note one decision (returns at once; the row is written in the background).

        A *state* (``state``, by default the decisions of :data:`COLLAPSED`) is not noted again while it is
        what was last noted for the item: a relay pass that finds the same thing again adds nothing.
        """
        key = (user, uid)
        if (decision in COLLAPSED if state is None else state) and self._last.get(key) == (decision, reason):
            return
        if decision in FINAL:
            self._last.pop(key, None)
        else:
            self._last[key] = (decision, reason)
        row = {
            "at": self._clock(), "user": user, "uid": uid, "decision": decision.value, "calendar": calendar,
            "icloud_calendar": icloud_calendar, "winner": winner, "reason": reason,
        }
        if self._on_record is not None:
            self._on_record(decision, winner)
        with self._queue_lock:
            self._queue.append(row)
            first = len(self._queue) == 1  # else a write already queued will take this row too
        if first:
            self._executor.submit(self._write_queued).add_done_callback(_log_failure)

    def _write_queued(self) -> None:
        with self._queue_lock:
            rows, self._queue = self._queue, []
        if rows:
            with writing(self.engine) as connection:
                connection.execute(audit_log.insert(), rows)

    def query(
        self,
        user: str,
        uid: str | None = None,
        before: int | None = None,
        limit: int = DEFAULT_LIMIT,
        decisions: Collection[Decision] | None = None,
    ) -> list[Entry]:
        """The user's entries, newest first; ``before`` pages on (an entry id), ``uid`` and ``decisions`` filter."""
        statement = sa.select(audit_log).where(audit_log.c.user == user)
        if decisions is not None:
            statement = statement.where(audit_log.c.decision.in_([d.value for d in decisions]))
        if uid is not None:
            statement = statement.where(audit_log.c.uid == uid)
        if before is not None:
            statement = statement.where(audit_log.c.id < before)
        statement = statement.order_by(audit_log.c.id.desc()).limit(max(1, min(limit, MAX_LIMIT)))
        with reading(self.engine) as connection:
            rows = connection.execute(statement).mappings().all()
        return [Entry(**{**row, "decision": Decision(row["decision"])}) for row in rows]

    def prune(self) -> int:
        """Drop entries older than the retention period; returns how many."""
        if not self.retention_days:
            return 0
        cutoff = self._clock() - self.retention_days * 86400
        with writing(self.engine) as connection:
            return connection.execute(audit_log.delete().where(audit_log.c.at < cutoff)).rowcount

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``query`` or ``prune`` on the audit thread, after every record made before."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def flush(self) -> None:
        """Wait until every record made so far is written."""
        self._executor.submit(lambda: None).result()

    def close(self) -> None:
        """Write what is queued and stop the audit thread (the engine belongs to the caller)."""
        self._executor.shutdown(wait=True)


def _log_failure(future: Future[None]) -> None:
    if (error := future.exception()) is not None:
        logger.error("audit entry not written: %s", error)
