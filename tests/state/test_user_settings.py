"""The user_settings table on both backends: set, change, clear, and writers at once never collide."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from proxy.database import create_engine
from proxy.user_settings import UserSettings


def test_set_change_clear_and_concurrent_writers(database_url):
    engine = create_engine(database_url)
    try:
        store = UserSettings(engine)
        assert store.timezone("alice") is None
        store.set_timezone("alice", "Europe/Berlin")
        store.set_timezone("alice", "Asia/Tokyo")
        assert store.timezone("alice") == "Asia/Tokyo"
        assert store.timezone("bob") is None
        store.set_timezone("alice", None)
        assert store.timezone("alice") is None
        zones = ["UTC", "Europe/Paris", "America/Chicago", "Asia/Kolkata"] * 5
        with ThreadPoolExecutor(4) as pool:  # first writes of a new user, at once: one row, no error
            list(pool.map(lambda zone: store.set_timezone("carol", zone), zones))
        assert store.timezone("carol") in zones
    finally:
        engine.dispose()
