"""A real `vidgate serve` for the client tests, one per test module (starting one takes seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Shared by a module's tests: each test works on its own jobs, and makes its own account when the balance
    matters (the first account, whose key the server printed, has $100)."""
    env = dict(os.environ, VIDGATE_X264_PRESET="ultrafast", VIDGATE_LEASE_SECONDS="2",
               VIDGATE_IDLE_POLL_SECONDS="0.2", VIDGATE_RATE_LIMIT_QUEUE_PER_MIN="0",
               VIDGATE_RATE_LIMIT_RETRIEVE_PER_MIN="0", PYTHONUNBUFFERED="1")
    live = LiveServer(data_dir=tmp_path_factory.mktemp("client") / "data", port=free_port(), env=env)
    live.start()
    yield live
    live.stop()
