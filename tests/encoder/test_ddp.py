"""Two gloo processes train a few steps under DistributedDataParallel; their weights must stay
identical (gradients are all-reduced), while each rank saw different batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.encoder.conftest import tiny_train_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from freeavatar_server.training.encoder.train import train

    result = train(tiny_train_config(out_dir), ("mae", "triplet"))
    for stage, model in result.models.items():
        torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}_{stage}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for stage in ("mae", "triplet"):
        a = torch.load(tmp_path / f"rank0_{stage}.pt")
        b = torch.load(tmp_path / f"rank1_{stage}.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{stage}: {k} diverged between ranks"
    # training moved the weights (a no-op would trivially keep them identical)
    ck = torch.load(tmp_path / "triplet.pt", weights_only=False)
    assert ck["step"] == 3 and ck["done"]
    assert (tmp_path / "config.json").exists()
