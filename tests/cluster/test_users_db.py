"""Users in the database behave as the users file does, on both backends, and changes reach other instances."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from sqlalchemy.engine import Engine

from proxy.auth import Authenticator, UserExists, UserRecord, UsersFile
from proxy.cluster.users_db import UsersTable
from proxy.config import AuthSettings
from proxy.database import create_engine


@pytest.fixture(autouse=True)
def fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bcrypt.gensalt
    monkeypatch.setattr(bcrypt, "gensalt", lambda rounds=4, prefix=b"2b": real(4, prefix))


@pytest.fixture
def other_instance(db_url: str, engine: Engine) -> Iterator[UsersTable]:
    other = create_engine(db_url)
    yield UsersTable(other, refresh_seconds=0)  # looks at the generation on every call
    other.dispose()


def test_add_check_passwd_remove(engine: Engine, other_instance: UsersTable) -> None:
    table = UsersTable(engine)
    assert table.records() == {}
    table.add("alice", "alice-secret", False)
    table.add("crm", "crm-secret", True)
    auth = Authenticator(other_instance, AuthSettings())
    principal = auth.check("alice", "alice-secret")
    assert principal is not None and not principal.is_service
    crm = auth.check("crm", "crm-secret")
    assert crm is not None and crm.is_service
    assert auth.check("alice", "wrong") is None
    table.set_password("alice", "new-secret")  # on one instance, seen by the other's next check
    assert auth.check("alice", "alice-secret") is None
    assert auth.check("alice", "new-secret") is not None
    assert other_instance.records()["crm"].is_service  # the role stays
    assert table.remove("alice") and not table.remove("alice")
    assert auth.check("alice", "new-secret") is None


def test_add_refuses_a_taken_name_unless_replacing(engine: Engine) -> None:
    table = UsersTable(engine)
    table.add("crm", "one", True)
    with pytest.raises(UserExists) as caught:
        table.add("crm", "two", False)
    assert caught.value.record.is_service
    table.add("crm", "two", True, replace=True)
    assert bcrypt.checkpw(b"two", table.records()["crm"].password_hash)


def test_bad_input_is_refused(engine: Engine) -> None:
    table = UsersTable(engine)
    with pytest.raises(ValueError, match="invalid user name"):
        table.add(".hidden", "x", False)
    with pytest.raises(ValueError, match="must not be empty"):
        table.add("alice", "", False)
    with pytest.raises(KeyError):
        table.set_password("nobody", "x")


def test_racing_adds_of_one_name_exactly_one_wins(engine: Engine, other_instance: UsersTable) -> None:
    tables = [UsersTable(engine), other_instance]
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def add(n: int) -> None:
        barrier.wait()
        try:
            tables[n % 2].add("alice", f"pw-{n}", False)
            outcomes.append("added")
        except UserExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["added"] + ["exists"] * 7


def test_import_users_file(engine: Engine, tmp_path: Path) -> None:
    users_file = UsersFile(tmp_path / "users")
    users_file.write({"bob": UserRecord("bob", bcrypt.hashpw(b"bob-secret", bcrypt.gensalt()), False)})
    table = UsersTable(engine)
    table.add("alice", "alice-secret", False)
    assert table.import_file(users_file) == 1
    assert sorted(table.records()) == ["alice", "bob"]
    assert Authenticator(table, AuthSettings()).check("bob", "bob-secret") is not None


def test_records_trust_their_copy_for_the_refresh_interval(engine: Engine, db_url: str) -> None:
    """A change made elsewhere is seen once the copy is older than ``refresh_seconds``; one's own at once."""
    table = UsersTable(engine, refresh_seconds=2.0)
    table.add("alice", "alice-secret", False)
    assert "alice" in table.records()  # its own change: at once
    other = create_engine(db_url)
    try:
        UsersTable(other).remove("alice")
        started = time.monotonic()
        assert "alice" in table.records()  # the copy, not yet looked at again
        while "alice" in table.records():
            assert time.monotonic() - started < 4.0, "the removal was not seen"
            time.sleep(0.02)
    finally:
        other.dispose()
