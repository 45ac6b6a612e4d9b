"""The stream benchmark's search for the largest load held."""

from __future__ import annotations

import pytest
from PIL import Image

from freeavatar._proto import stream_pb2
from freeavatar_server.tools.bench import LoadResult, actor_clip, find_capacity, stage_means
from freeavatar_server.tools.bench_picture import draw_ladder


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


def test_each_rung_says_where_an_analysed_frame_went_and_draws_it(tmp_path) -> None:
    def stats(frames: int, decode_ms: float, mesh_runs: int, mesh_ms: float) -> stream_pb2.PipelineStats:
        return stream_pb2.PipelineStats(stages=[
            stream_pb2.StageStats(name="decode", processed=frames, total_ms=decode_ms),
            stream_pb2.StageStats(name="mesh", processed=mesh_runs, total_ms=mesh_ms),
        ])  # fmt: skip

    means = stage_means(stats(100, 50.0, 50, 400.0), stats(300, 170.0, 100, 800.0))
    assert means == {"decode": 0.6, "mesh": 2.0}  # the mesh's 400 ms over 200 frames, amortised
    ladder = [
        {"actors": n, "delivered": 1.0, "latency_ms": {"p99": 20.0 * n}, "stage_ms": {"decode": 0.6, "mesh": 2.0 * n}}
        for n in (1, 2, 4)
    ]
    picture = draw_ladder({"ladder": ladder}, tmp_path / "ladder.png")
    with Image.open(picture) as image:
        assert image.size == (900, 520)
        assert len(image.getcolors(1 << 16)) > 8  # bars, legend and labels, not a blank canvas


def test_each_actor_sends_the_whole_clip_from_its_own_point_without_jumps() -> None:
    clip = [bytes([i]) for i in range(6)]
    sent = [actor_clip(clip, a, 3) for a in range(3)]
    for frames in sent:
        order = [f[0] for f in frames]
        assert sorted(set(order)) == list(range(6))  # every frame of the clip
        steps = [abs(b - a) for a, b in zip(order, order[1:] + order[:1], strict=True)]
        assert max(steps) <= 1  # there and back: never more than one frame's motion
    assert len({frames[0] for frames in sent}) == 3  # each from its own point
