from __future__ import annotations

import numpy as np
from PIL import Image

from freeavatar_server.encoder import data as D
from freeavatar_server.synth import triplets as T


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


def test_pool_sampler_labels_follow_ground_truth():
    pool = D.render_pool(6, 8, size=32, seed=0)
    ts = D.PoolTripletSampler(pool, neighbours=4).sample(40, np.random.default_rng(0))
    e = pool.expressions[ts.index]
    d = np.stack([np.linalg.norm(e[:, 1] - e[:, 2], axis=1), np.linalg.norm(e[:, 0] - e[:, 2], axis=1),
                  np.linalg.norm(e[:, 0] - e[:, 1], axis=1)], axis=1)
    assert (d.argmin(1) == ts.odd).all()
    assert set(np.unique(ts.kind)) <= {1, 2, 3}
