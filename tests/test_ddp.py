"""DDP on the CPU (gloo, 2 processes): the same losses and weights as one process with the same global batch."""

from __future__ import annotations

import json
import os
import pathlib
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minidit.bench import synthetic_data
from minidit.train import TrainConfig, train

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def _cfg(out_dir) -> TrainConfig:
    return TrainConfig(model="DiT-T/4", global_batch_size=8, steps=4, log_every=1, ckpt_every=0, sample_every=0,
                       precision="fp32", compile=False, ema_warmup="ema_warmup", device="cpu", progress=False,
                       out_dir=str(out_dir))  # fmt: skip


def _data():
    return synthetic_data(n=64, size=16, seed=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    """What torchrun sets up for each process, then the ordinary train() call."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    history = train(_cfg(pathlib.Path(out_dir) / f"rank{rank}"), data=_data())
    (pathlib.Path(out_dir) / f"history{rank}.json").write_text(json.dumps(history))


def test_two_gloo_processes_match_one_process(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    single = train(_cfg(tmp_path / "single"), data=_data())

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "history0.json").read_text())
    other = json.loads((tmp_path / "history1.json").read_text())
    assert ddp["world_size"] == 2 and ddp["step"] == single["step"] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(ddp["loss"]), torch.tensor(single["loss"]), rtol=1e-5, atol=1e-6,
                               msg="the DDP loss curve differs from one process with the same global batch")
    assert other["loss"] == ddp["loss"], "every rank logs the loss of the whole global batch"
    # rank 0 alone writes checkpoints; its weights match the single process
    assert not (tmp_path / "rank1" / "state.pt").exists()
    state_ddp = torch.load(tmp_path / "rank0" / "state.pt", weights_only=True)
    state_one = torch.load(tmp_path / "single" / "state.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, value in state_one[part].items():
            torch.testing.assert_close(state_ddp[part][key], value, rtol=1e-5, atol=1e-6,
                                       msg=f"{part}.{key}: DDP and single-process weights differ")
