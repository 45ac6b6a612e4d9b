from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from freeavatar_server.synth import triplets as T
from freeavatar_server.training.encoder import data as D


def test_fec_csv_round_trip_matches_labels(tmp_path):
    trips = T.make_triplets(6, seed=3, identity_ids=range(10), n_annotators=3)
    csv_path = T.export_triplets(trips, tmp_path, size=48)
    ts = D.load_fec_csv(csv_path, 32)
    assert ts.index.shape == (6, 3) and ts.pool.images.shape[1:] == (32, 32, 3)
    assert list(ts.odd) == [t.odd_one for t in trips]
    assert list(ts.kind) == [D.KIND_NAMES[t.kind] for t in trips]


def test_folder_pool_reads_images_and_video(tmp_path):
    import av

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"f{i}.png")
    with av.open(str(tmp_path / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    pool = D.load_folder_pool(tmp_path, 32, video_every=5)
    assert pool.images.shape == (5, 32, 32, 3)  # 3 images + frames 0 and 5
    assert pool.expressions is None


def test_stream_batches_pair_expressions_and_identities():
    spec = D.StreamSpec(size=32, n_expressions=6, seed=3, steps=10, clean_start=1.0, clean_end=0.0)
    images, expr, classes = D.render_stream_batch(spec, 0)
    assert images.shape == (12, 32, 32, 3) and expr.shape == (12, 25) and classes.shape == (12,)
    assert np.array_equal(expr[:6], expr[6:])  # every expression on two faces...
    assert not np.array_equal(images[:6], images[6:])  # ...of different people and scenes
    again = D.render_stream_batch(spec, 0)
    assert np.array_equal(again[0], images)  # a pure function of (seed, rank, step)
    other_rank = D.render_stream_batch(D.StreamSpec(**{**spec.__dict__, "rank": 1}), 0)
    assert not np.array_equal(other_rank[1], expr)
    # the curriculum: step 0 is all clean (grey background), the last step has nuisance
    clean_corner = images[:, :3, :3].reshape(12, -1).std(1)
    assert (clean_corner < 2).all()
    noisy = D.render_stream_batch(spec, 9)[0][:, :3, :3].reshape(12, -1).std(1)
    assert (noisy > 2).any()


def test_stream_draws_a_share_of_stylised_characters():
    from freeavatar_server.synth.actors import STYLISED_OFFSET

    people = D.StreamSpec(size=32, n_expressions=6, seed=3, steps=10)
    everyone = D.StreamSpec(**{**people.__dict__, "stylised": 1.0})
    a, b = D.render_stream_batch(people, 4), D.render_stream_batch(everyone, 4)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[0], b[0])  # same expressions, other faces
    assert STYLISED_OFFSET > 10**18  # far above every id people are drawn from
    partial = D.StreamSpec(**{**people.__dict__, "stylised": 0.5})
    assert np.array_equal(D.render_stream_batch(partial, 4)[1], a[1])


def test_stream_renders_ahead_in_step_order():
    spec = D.StreamSpec(size=32, n_expressions=2, seed=1, steps=5)
    with D.SyntheticStream(spec, start=2) as stream:
        images, expr, _ = stream.get(2)
        assert np.array_equal(images, D.render_stream_batch(spec, 2)[0])
        with pytest.raises(ValueError, match="at step 3"):
            stream.get(4)
        assert np.array_equal(stream.get(3)[1], D.render_stream_batch(spec, 3)[1])


def test_stream_renderer_exits_when_its_trainer_is_killed(tmp_path):
    # A trainer SIGKILLed (or os._exit) runs no clean-up; its renderer must not live on, even
    # with batches waiting that are larger than a pipe holds (96 px faces, as in training).
    import os
    import subprocess
    import sys
    import time

    script = (
        "import os\n"
        "from freeavatar_server.training.encoder import data as D\n"
        "s = D.SyntheticStream(D.StreamSpec(size=96, n_expressions=8), ahead=1)\n"
        "s.get(0)\n"
        "print(s._process.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    child = int(out.stdout.strip())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(child, 9)
    raise AssertionError("the renderer outlived its trainer")


def test_stream_draws_a_share_of_mascots():
    from freeavatar_server.synth.actors import MASCOT_OFFSET

    spec = D.StreamSpec(size=32, n_expressions=6, seed=3, steps=10, stylised=0.5)
    with_mascots = D.StreamSpec(**{**spec.__dict__, "mascots": 0.5})
    a, b = D.render_stream_batch(spec, 4), D.render_stream_batch(with_mascots, 4)
    assert np.array_equal(a[1], b[1]) and not np.array_equal(a[0], b[0])  # same expressions, other faces
    assert MASCOT_OFFSET > 10**18
