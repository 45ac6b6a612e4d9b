"""Synth tests render small images on one torch thread: faster, and immune to a busy machine.
The previous setting is restored after each test so other suites keep theirs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
