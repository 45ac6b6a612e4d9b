"""The stream benchmark's search for the largest load held."""

from __future__ import annotations

import pytest

from freeavatar_server.tools.bench import LoadResult, find_capacity


@pytest.mark.parametrize(("limit", "max_actors", "tried"), [
    (6, 16, [1, 2, 4, 6, 7, 8]),
    (8, 16, [1, 2, 4, 8, 12, 9, 10, 16]),
    (0, 16, [1]),
    (16, 16, [1, 2, 4, 8, 16]),
    (5, 5, [1, 2, 4, 5]),
])  # fmt: skip
async def test_capacity_search_finds_the_largest_load_held(limit: int, max_actors: int, tried: list[int]) -> None:
    runs: list[int] = []

    async def run(actors: int) -> LoadResult:
        runs.append(actors)
        delivered = 1.0 if actors <= limit else 0.8
        return LoadResult(actors, 4, 30.0, delivered, {"p99": 20.0})

    ladder = await find_capacity(run, max_actors)
    assert sorted(runs) == sorted(set(runs)), "a load was run twice"
    assert set(runs) == set(tried)
    assert [r.actors for r in ladder] == sorted(runs)
    assert max((r.actors for r in ladder if r.held), default=0) == limit
