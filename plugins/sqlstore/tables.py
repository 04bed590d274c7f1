"""The tables of the SQL storage, declared on calrelay's one :data:`proxy.database.metadata`.

A design in the spirit of CalendarServer and SabreDAV: one row per collection (its props as JSON and a
revision counter), one row per calendar object (its raw text plus what queries need without parsing it), a
change log with one row per href (its last revision; deletions stay as tombstones) for RFC 6578 sync, and an
index of each event's expanded instances for time-range queries and availability.
"""

from __future__ import annotations

import sqlalchemy as sa

from proxy.database import metadata

#: Instants are seconds since the epoch (UTC), as Radicale's ``Item.time_range``.
collections = sa.Table(
    "dav_collections",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("path", sa.String(1024), nullable=False, unique=True),  # sanitized, no slashes around
    sa.Column("parent", sa.String(1024), nullable=False, index=True),
    sa.Column("owner", sa.String(256), nullable=False, index=True),
    sa.Column("props", sa.Text, nullable=False, default="{}"),  # JSON, as .Radicale.props
    sa.Column("revision", sa.BigInteger, nullable=False, default=0),  # bumped by every change
    # Changes at or below this revision have been forgotten: older sync tokens are expired.
    sa.Column("sync_floor", sa.BigInteger, nullable=False, default=0),
    sa.Column("modified", sa.Float, nullable=False),
)

items = sa.Table(
    "dav_items",
    metadata,
    sa.Column("collection_id", sa.Integer, sa.ForeignKey("dav_collections.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("href", sa.String(1024), primary_key=True),
    sa.Column("uid", sa.String(1024), nullable=False),
    sa.Column("etag", sa.String(80), nullable=False),
    sa.Column("name", sa.String(32), nullable=False),  # VCALENDAR / VCARD
    sa.Column("component", sa.String(32), nullable=False),  # VEVENT / VTODO / VJOURNAL / VCARD
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("first_start", sa.BigInteger, nullable=False),  # bounds of all instances (far bound if open)
    sa.Column("last_end", sa.BigInteger, nullable=False),
    sa.Column("recurring", sa.Boolean, nullable=False),
    # The instance index lists every instance that starts before this instant (horizon or per-event cap).
    sa.Column("indexed_until", sa.BigInteger, nullable=False),
    sa.Column("modified", sa.Float, nullable=False),
    sa.Index("dav_items_uid", "uid", "collection_id"),
    sa.Index("dav_items_range", "collection_id", "last_end", "first_start"),
)

changes = sa.Table(
    "dav_changes",
    metadata,
    sa.Column("collection_id", sa.Integer, sa.ForeignKey("dav_collections.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("href", sa.String(1024), primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),  # a tombstone
    sa.Column("changed", sa.Float, nullable=False),
    sa.Index("dav_changes_revision", "collection_id", "revision"),
)

instances = sa.Table(
    "dav_instances",
    metadata,
    sa.Column("collection_id", sa.Integer, nullable=False),
    sa.Column("href", sa.String(1024), nullable=False),
    sa.Column("start", sa.BigInteger, nullable=False),
    sa.Column("end", sa.BigInteger, nullable=False),
    sa.Column("floating", sa.Boolean, nullable=False),  # all-day or floating: the bounds are UTC readings
    sa.Column("transparent", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    # What availability needs (plugins.sqlstore.busy): the instance's busy time, exactly (``start`` and
    # ``end`` above are widened for Radicale's test); floating ones as UTC readings of the wall clock.
    sa.Column("busy_start", sa.BigInteger, nullable=False),  # DTSTART minus the travel time
    sa.Column("busy_end", sa.BigInteger, nullable=False),
    sa.Column("long_busy", sa.Boolean, nullable=False),  # longer than instances.LONG_BUSY: found without a look-back
    sa.Column("travel", sa.Integer, nullable=False),
    sa.Column("all_day", sa.Boolean, nullable=False),
    sa.Column("recurrence_id", sa.BigInteger),  # an occurrence of a series: its original start
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("policy", sa.Text),  # X-CALRELAY-POLICY of a mirrored iCloud event
    sa.Column("declined", sa.Text),  # normalized addresses of attendees who declined, one per line
    sa.ForeignKeyConstraint(["collection_id", "href"], ["dav_items.collection_id", "dav_items.href"],
                            ondelete="CASCADE"),
    sa.Index("dav_instances_range", "collection_id", "start", "end"),
    sa.Index("dav_instances_item", "collection_id", "href"),
    sa.Index("dav_instances_busy", "collection_id", "long_busy", "busy_start"),
)
