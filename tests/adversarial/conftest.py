"""Shared by the adversarial tests: a real server on a loopback port, in its own event loop
thread (as `tests.conftest.ServerThread`), so that what a test measures from its own loop is
the server's latency and not the test client's work; and the fuzzer's fixed profile."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from freeavatar_server.transport.limits import rejected_rate
from tests.conftest import ServerThread, loopback_config

# Fixed and small: the same examples on every run (derandomize, no example database), quick
# enough to run in CI by default.
settings.register_profile(
    "adversarial",
    derandomize=True,
    database=None,
    max_examples=12,
    deadline=None,
    print_blob=False,
    # one server serves every example of a test: that is the point, not an accident
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROFILE = settings.get_profile("adversarial")


@pytest.fixture(autouse=True)
def quiet_rejection_log() -> None:
    """The rejection log's rate limit is the process's: each test starts a fresh window."""
    rejected_rate.reset()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(loopback_config(tmp_path_factory.mktemp("adversarial") / "data"))
    yield running
    running.stop()
