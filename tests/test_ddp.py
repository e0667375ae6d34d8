"""DDP on the CPU (gloo, 2 processes): the same losses and weights as one process with the same global batch,
with the step eager (through train()) and compiled (model and loss together, as train() compiles it on GPUs)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import socket
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from minidit.blocks import set_recompute_gelu
from minidit.diffusion import create_diffusion
from minidit.model import create_model
from minidit.tools.bench import synthetic_data
from minidit.train import FastStep, TrainConfig, draw_batch, make_optimizer, train

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available"
)


def _cfg(out_dir) -> TrainConfig:
    return TrainConfig(
        model="DiT-T/4",
        global_batch_size=8,
        steps=4,
        log_every=1,
        ckpt_every=0,
        sample_every=0,
        precision="fp32",
        compile=False,
        ema_warmup="ema_warmup",
        device="cpu",
        progress=False,
        out_dir=str(out_dir),
    )


def _data():
    return synthetic_data(n=64, size=16, seed=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, traced: bool) -> None:
    """What torchrun sets up for each process, then the ordinary train() call.

    traced: train() takes its GPU path, torch.compile of the step, with dynamo's "eager" backend (the
    step is traced into graphs as on a GPU, but nothing is compiled to kernels: seconds, not minutes).
    """
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size)
    )
    torch.set_num_threads(1)
    cfg = _cfg(pathlib.Path(out_dir) / f"rank{rank}")
    with contextlib.ExitStack() as stack:
        if traced:
            real_compile = torch.compile
            stack.enter_context(mock.patch("minidit.train.resolve_precision", lambda cfg, device: (None, True, None)))
            stack.enter_context(
                mock.patch.object(torch, "compile", lambda fn, mode: real_compile(fn, mode=None, backend="eager"))
            )
        history = train(dataclasses.replace(cfg, compile=traced), data=_data())
    (pathlib.Path(out_dir) / f"history{rank}.json").write_text(json.dumps(history))


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "compiled-step-traced"])
def test_two_gloo_processes_match_one_process(traced, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    single = train(_cfg(tmp_path / "single"), data=_data())  # eager: the oracle for both

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), traced), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "history0.json").read_text())
    other = json.loads((tmp_path / "history1.json").read_text())
    assert (ddp["compiled"], ddp["compile_scope"]) == ((True, "loss") if traced else (False, None)), (
        "under DDP train() compiles model and loss together, as on one process"
    )
    assert ddp["world_size"] == 2 and ddp["step"] == single["step"] == [1, 2, 3, 4]
    torch.testing.assert_close(
        torch.tensor(ddp["loss"]),
        torch.tensor(single["loss"]),
        rtol=1e-5,
        atol=1e-6,
        msg="the DDP loss curve differs from one process with the same global batch",
    )
    assert other["loss"] == ddp["loss"], "every rank logs the loss of the whole global batch"
    # rank 0 alone writes checkpoints; its weights match the single process
    assert not (tmp_path / "rank1" / "state.pt").exists()
    state_ddp = torch.load(tmp_path / "rank0" / "state.pt", weights_only=True)
    state_one = torch.load(tmp_path / "single" / "state.pt", weights_only=True)
    for part in ("model", "ema"):
        for key, value in state_one[part].items():
            torch.testing.assert_close(
                state_ddp[part][key],
                value,
                rtol=1e-5,
                atol=1e-6,
                msg=f"{part}.{key}: DDP and single-process weights differ",
            )


# ----------------------------------------------------------------------------- the compiled step under DDP
#
# On GPUs train() compiles one function, loss_fn (model + diffusion loss), with or without DDP. These
# tests build what train() builds and run FastStep directly, since train() compiles on CUDA only.

DDP = torch.nn.parallel.DistributedDataParallel
STEPS, GLOBAL_BATCH = 3, 8


def _rank_setup(rank: int, world_size: int):
    """What train() builds for one rank: DiT-T/4 at 16x16 with GELU recomputation (its default), the
    diffusion, AdamW, and (world_size > 1) the DDP wrapper, whose gradient buckets are 1 MB here so
    that DiT-T/4's 5 MB of weights fill several, as DiT-S/2's 130 MB do at DDP's default 25 MB."""
    torch.manual_seed(0)
    model = create_model("DiT-T/4", input_size=16, in_channels=1, num_classes=10)
    set_recompute_gelu(model, True)
    train_model = DDP(model, bucket_cap_mb=1) if world_size > 1 else model
    return model, train_model, create_diffusion(), make_optimizer(model)


def _batches(rank: int, world_size: int, diffusion):
    g = torch.Generator().manual_seed(0)
    data = _data()
    return [
        draw_batch(
            data, g, GLOBAL_BATCH, diffusion, flip=True, class_dropout_prob=0.1, rank=rank, world_size=world_size
        )
        for _ in range(STEPS)
    ]


def _graph_ops(rank: int, world_size: int) -> list[int]:
    """The number of operations in each graph torch.compile makes of loss_fn's first call (forward and
    backward run as traced; nothing is compiled by inductor)."""
    model, train_model, diffusion, optimizer = _rank_setup(rank, world_size)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(sum(node.op in ("call_function", "call_method", "call_module") for node in gm.graph.nodes))
        return gm.forward

    loss_fn = torch.compile(FastStep(train_model, diffusion, optimizer).loss_fn, backend=counting_backend)
    loss_fn(*_batches(rank, world_size, diffusion)[0]).mean().backward()
    torch._dynamo.reset()
    return graphs


def _trajectory(rank: int, world_size: int, compile: bool, backend=None) -> dict:
    """STEPS optimiser steps of FastStep (compiled when asked; backend: torch.compile's, None = inductor)
    -> the loss of each step over the global batch, the weights after them, what FastStep logged."""
    model, train_model, diffusion, optimizer = _rank_setup(rank, world_size)
    messages, losses = [], []
    real_compile = torch.compile
    with (
        contextlib.nullcontext()
        if backend is None
        else mock.patch.object(torch, "compile", lambda fn, mode: real_compile(fn, backend=backend))
    ):
        stepper = FastStep(train_model, diffusion, optimizer, compile=compile, log=messages.append)
        for batch in _batches(rank, world_size, diffusion):
            loss = stepper(batch)  # (GLOBAL_BATCH / world_size,)
            if world_size > 1:
                parts = [torch.empty_like(loss) for _ in range(world_size)]
                dist.all_gather(parts, loss)
                loss = torch.cat(parts)
            losses.append(loss.mean().item())
    torch._dynamo.reset()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"loss": losses, "weights": weights, "messages": messages, "compiled": stepper.compiled}


def _fails_after_the_model():
    """A compiler backend that fails on every graph after the model's (those compiled inside DDP's
    forward): a failure at the worst moment, when DDP has run its forward and waits for a backward pass."""
    model_seen = False

    def backend(gm, example_inputs):
        nonlocal model_seen
        inside = DDP._get_active_ddp_module() is not None
        model_seen |= inside
        if model_seen and not inside:
            raise RuntimeError("a compiler failure after the model")
        return gm.forward

    return backend


def _compiled_worker(rank: int, world_size: int, port: int, out_dir: str, what: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        if what == "inductor":
            result = {"inductor": _trajectory(rank, world_size, compile=True)}
        else:
            result = {
                "graph_ops": _graph_ops(rank, world_size),
                "fallback": _trajectory(rank, world_size, compile=True, backend=_fails_after_the_model()),
            }
    finally:
        dist.destroy_process_group()
    torch.save(result, pathlib.Path(out_dir) / f"{what}{rank}.pt")


def _two_ranks(tmp_path, what: str) -> list[dict]:
    mp.spawn(_compiled_worker, args=(2, _free_port(), str(tmp_path), what), nprocs=2, join=True)
    return [torch.load(tmp_path / f"{what}{rank}.pt", weights_only=False) for rank in range(2)]


def _check_same_training(ranks: list[dict], single: dict) -> None:
    """Both ranks hold the same weights (the gradients were all-reduced: each rank saw other images), and
    train what one process does with the same global batch."""
    torch.testing.assert_close(
        torch.tensor(ranks[0]["loss"]),
        torch.tensor(single["loss"]),
        rtol=1e-5,
        atol=1e-6,
        msg="the 2-process loss curve differs from one process with the same global batch",
    )
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"]), "the ranks' weights differ: no all-reduce?"
    torch.testing.assert_close(
        ranks[0]["weights"],
        single["weights"],
        rtol=1e-5,
        atol=1e-6,
        msg="the 2-process weights differ from those of one process",
    )


@pytest.mark.slow
def test_under_ddp_the_compiled_loss_holds_every_op_and_a_failed_compile_falls_back(tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = _two_ranks(tmp_path, "graphs")
    one_process = _graph_ops(0, 1)
    assert len(one_process) == 1, f"on one process model and loss are one graph, got {one_process}"
    ops = ranks[0]["graph_ops"]
    assert sum(ops) == one_process[0], (
        f"under DDP the graphs hold {sum(ops)} ops ({ops}), one process's graph "
        f"{one_process[0]}: some of the model or the loss runs eagerly"
    )
    assert len(ops) > 3, f"expected the part before the model, the model split at DDP's buckets, the loss: {ops}"
    # A compiler failure after DDP's forward: FastStep says so and trains on, eagerly, as one process does
    fallback = [r["fallback"] for r in ranks]
    assert not fallback[0]["compiled"] and len(fallback[0]["messages"]) == 1, fallback[0]["messages"]
    assert (
        "torch.compile failed" in fallback[0]["messages"][0]
        and "continuing without compile" in fallback[0]["messages"][0]
    )
    _check_same_training(fallback, _trajectory(0, 1, compile=False))


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("MINIDIT_TEST_COMPILE") != "1",
    reason="compiling takes minutes on a CPU; set MINIDIT_TEST_COMPILE=1 to run it",
)
def test_the_compiled_step_under_ddp_trains_as_one_eager_process(tmp_path, monkeypatch):
    """inductor under DDP, as on GPUs (there with bf16): the same loss curve and weights as one eager process."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = [r["inductor"] for r in _two_ranks(tmp_path, "inductor")]
    for rank in ranks:
        assert rank["compiled"] and not rank["messages"], f"torch.compile fell back to eager: {rank['messages']}"
    _check_same_training(ranks, _trajectory(0, 1, compile=False))
