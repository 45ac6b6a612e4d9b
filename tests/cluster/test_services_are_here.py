"""Says why the cluster tests are skipped (outside CI) or fails CI if they cannot run."""

from __future__ import annotations

from tests.cluster.conftest import _require_services


def test_nats_and_postgres_are_installed() -> None:
    _require_services()
