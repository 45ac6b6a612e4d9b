"""The training loop's use of the synthetic stream: which rendered batch each step trains on."""

from __future__ import annotations

import numpy as np
import torch

from freeavatar_server.training.encoder import data as D
from freeavatar_server.training.encoder.train import Dist, StageSpec, run_stage, stream_spec
from tests.encoder.conftest import tiny_train_config


def _recording_stage(steps: int, stream: D.StreamSpec, seen: list) -> StageSpec:
    def batch_loss(m, step, rng, gen, batch):
        seen.append((step, batch[1].copy()))  # the batch's action units tell it apart
        return (m.weight**2).sum(), {}

    return StageSpec("triplet", torch.nn.Linear(1, 1), steps, 1e-3, batch_loss, stream=stream)


def test_reuse_trains_each_rendered_batch_that_many_steps_and_resumes_mid_batch(tmp_path):
    cfg = tiny_train_config(str(tmp_path), reuse=2)
    stream = stream_spec(cfg, Dist(), "triplet", batch=4, steps=5)
    assert stream.steps == 3  # 5 steps, 2 a batch: 3 batches, over which the curriculum runs
    rendered = [D.render_stream_batch(stream, k)[1] for k in range(3)]
    assert not np.array_equal(rendered[0], rendered[1])

    seen: list = []
    run_stage(cfg, _recording_stage(3, stream, seen), Dist(), resume=False)
    assert [step for step, _ in seen] == [0, 1, 2]
    for step, units in seen:
        np.testing.assert_array_equal(units, rendered[step // 2])

    # a longer budget resumes at step 3, half way through batch 1: it trains on batch 1 once
    # more, then on batch 2
    seen.clear()
    run_stage(cfg, _recording_stage(5, stream, seen), Dist(), resume=True)
    assert [step for step, _ in seen] == [3, 4]
    np.testing.assert_array_equal(seen[0][1], rendered[1])
    np.testing.assert_array_equal(seen[1][1], rendered[2])
