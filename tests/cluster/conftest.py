"""Real NATS and PostgreSQL on loopback, started as this test run's own processes.

Without them (or without the [cluster] extra's nats-py and psycopg) the cluster tests are
skipped, naming what is missing, except in CI (`CI` set, as .ci/run does), where they must run.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator

import pytest

from freeavatar_server.tools.cluster_services import LocalNats, LocalPostgres, missing_services

MISSING_LIBRARIES = [name for name in ("nats", "psycopg") if importlib.util.find_spec(name) is None]
if MISSING_LIBRARIES and not os.environ.get("CI"):
    # the modules under test import them: test_services_are_here says why nothing else runs
    collect_ignore_glob = ["test_[!s]*.py"]


def _require_services() -> None:
    missing = missing_services()
    if MISSING_LIBRARIES:
        missing.append(f"pip install -e '.[cluster]' ({', '.join(MISSING_LIBRARIES)})")
    if not missing:
        return
    message = f"cluster tests need {' and '.join(missing)} (apt-get install nats-server postgresql)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must run them (.ci/run installs both)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    _require_services()
    running = LocalPostgres().start()
    yield running
    running.stop()


@pytest.fixture
def store_url(postgres: LocalPostgres) -> str:
    """A fresh, empty database for each test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def nats() -> Iterator[LocalNats]:
    _require_services()
    running = LocalNats().start()
    yield running
    running.stop()
