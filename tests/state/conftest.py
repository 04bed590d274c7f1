from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.state.postgres import PostgresCluster

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    yield cluster
    cluster.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calrelay.db'}"
    return request.getfixturevalue("postgres").fresh_database(f"t{next(_names)}")
