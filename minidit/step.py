"""One training step of minidit's fast path (DiT §4 "Training"): a batch, forward + loss, backward, AdamW, EMA.

`draw_batch` draws all the randomness of a step from one generator on the device; `FastStep` runs the
model under bf16 autocast, compiles model and loss together (`compile_scope="loss"`, also under DDP),
takes the fused AdamW step and the one-call foreach EMA update, with no host sync. minidit.train's loop
calls it; `python -m minidit.tools.bench` measures each of these choices against the official recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from minidit import ema as _ema
from minidit.data import FashionMNIST, sample_batch
from minidit.device import autocast, draw
from minidit.flops import dit_macs

# compile_mode "auto": CUDA graphs ("reduce-overhead") when one process's step is small enough to leave the GPU
# waiting for kernel launches. H200, batch 256 (notebooks/results/bench/bench_h200_small.json, bench_h200_run1.json):
# with graphs DiT-S/8 (90 forward GMACs a step) trains 3.5x faster, DiT-S/4 (361) 1.9x, DiT-S/2 (1,549) 1.01x.
# Under DDP the graphs would have to hold the all-reduce, so DDP keeps "default".
AUTO_GRAPHS_MAX_GMACS = 1000.0


def draw_batch(
    data: FashionMNIST,
    generator: torch.Generator,
    global_batch_size: int,
    diffusion,
    *,
    flip: bool,
    class_dropout_prob: float,
    rank: int = 0,
    world_size: int = 1,
):
    """All the randomness of one step, from one generator: (x, y, t, noise, drop) for this rank.

    Every rank draws the same global batch and keeps rows [rank * n, (rank + 1) * n), n = global / world,
    so a DDP run sees exactly the batches of a single process. Returns x: (n, C, H, W) in [-1, 1],
    y: (n,) labels, t: (n,) timesteps, noise: (n, C, H, W), drop: (n,) 1 = use the null label
    (classifier-free guidance training, DiT §3.1) or None when class_dropout_prob is 0.
    """
    x, y = sample_batch(data, global_batch_size, generator, flip)  # (B, C, H, W), (B,)
    t = diffusion.sample_timesteps(global_batch_size, x.device, generator)  # (B,)
    noise = draw(torch.randn, x.shape, generator=generator, device=x.device)  # (B, C, H, W)
    drop = None
    if class_dropout_prob > 0:
        u = draw(torch.rand, global_batch_size, generator=generator, device=x.device)  # (B,)
        drop = (u < class_dropout_prob).long()  # (B,)
    batch = (x, y, t, noise, drop)
    if world_size > 1:
        n = global_batch_size // world_size
        batch = tuple(None if v is None else v[rank * n : (rank + 1) * n] for v in batch)  # (n, ...)
    return batch


def dit_loss(model_fn: Callable, diffusion, x, y, t, noise, drop) -> torch.Tensor:
    """DiT's objective on one `draw_batch` batch: L_simple (+ L_vlb with learned sigma), (N,) per example."""
    kwargs = {"y": y} if drop is None else {"y": y, "force_drop_ids": drop}
    return diffusion.training_losses(model_fn, x, t, model_kwargs=kwargs, noise=noise)["loss"]  # (N,)


class FastStep:
    """One optimiser step of minidit's fast path: forward + hybrid loss, backward, AdamW, EMA.

    model: the DiT (or its DDP wrapper); optimizer: e.g. `make_optimizer(model)`; amp_dtype:
    torch.bfloat16 for autocast, None for fp32; ema: the EMA copy (None: no EMA, e.g. DDP ranks > 0).
    The first call compiles; if torch.compile fails, it says why and continues without it.

    compile_scope "loss" compiles the whole forward, model and diffusion loss, as one function; "model"
    compiles the model only and runs the loss eagerly (dozens of small kernels: slower). Under DDP,
    "loss" works as well: the compiled function calls the DDP module, dynamo stops tracing only at
    DDP's own bookkeeping before the model (a few eager Python calls), compiles the model with its
    DDPOptimizer -- one graph per gradient bucket, so that each bucket's all-reduce starts while the
    backward of the layers before it still runs -- and compiles the loss after it as one more graph
    (tests/test_ddp.py counts the operations: all of them are in compiled graphs).

    skip_nonfinite: a step whose loss or gradients are NaN/inf changes nothing (no optimiser or EMA
    update) and returns NaN losses; this costs one host sync per step. `skipped` counts such steps.
    objective(model_fn, diffusion, *batch) -> (N,) losses: `dit_loss` (the default) for `draw_batch`'s
    batches; super-resolution passes its own (minidit.superres.experiment).
    """

    def __init__(
        self,
        model,
        diffusion,
        optimizer,
        *,
        amp_dtype=None,
        compile: bool = False,
        compile_mode: str = "default",
        compile_scope: str = "loss",
        ema=None,
        log: Callable = print,
        skip_nonfinite: bool = False,
        objective: Callable = None,
    ):
        self.objective = dit_loss if objective is None else objective
        self.skip_nonfinite, self.skipped = skip_nonfinite, 0
        self.model, self.raw = model, _ema.unwrap_model(model)
        self.diffusion, self.optimizer, self.ema, self.log = diffusion, optimizer, ema, log
        self.amp_dtype, self.compile_mode, self.compile_scope = amp_dtype, compile_mode, compile_scope
        self.device_type = next(self.raw.parameters()).device.type
        self.compiled = compile
        self.loss_fn = self._build(compile)
        self._first_call = True

    def _build(self, compile: bool) -> Callable:
        model = self.model
        if compile and self.compile_scope == "model":
            model = torch.compile(model, mode=self.compile_mode)
        amp_dtype, device_type = self.amp_dtype, self.device_type

        def model_fn(x, t, **kwargs):
            with autocast(device_type, amp_dtype):
                out = model(x, t, **kwargs)
            return out.float()  # the diffusion maths (log-likelihoods, KL) stays in fp32

        def loss_fn(*batch):
            return self.objective(model_fn, self.diffusion, *batch)  # (N,)

        if compile and self.compile_scope == "loss":
            return torch.compile(loss_fn, mode=self.compile_mode)
        return loss_fn

    def forward_backward(self, batch) -> torch.Tensor:
        graphs = self.compiled and self.compile_mode == "reduce-overhead"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new step: the last replay's outputs may be reused
        loss = self.loss_fn(*batch)  # (N,)
        loss.mean().backward()
        return loss.detach().clone() if graphs else loss.detach()  # the next replay overwrites the graph's output

    def __call__(self, batch, ema_decay: float | None = None) -> torch.Tensor:
        """batch: (x, y, t, noise, drop) as `draw_batch` returns -> (N,) loss per example (on the device)."""
        if self._first_call and self.compiled:
            try:
                loss = self.forward_backward(batch)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # a compiler failure must not end the run
                self.log(f"torch.compile failed ({type(err).__name__}: {str(err)[:300]}); continuing without compile")
                self.optimizer.zero_grad(set_to_none=True)
                torch._dynamo.reset()
                self.compiled, self.loss_fn = False, self._build(False)
                loss = self.forward_backward(batch)
        else:
            loss = self.forward_backward(batch)
        self._first_call = False
        if self.skip_nonfinite and not self._finite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            return torch.full_like(loss, math.nan)  # a skipped step counts as non-finite wherever it is logged
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and ema_decay is not None:
            _ema.update_ema(self.ema, self.raw, ema_decay)
        return loss

    def _finite(self, loss: torch.Tensor) -> bool:
        """Are the loss and every gradient finite? One host sync; under DDP the gradients are all-reduced, so
        every rank gets the same answer."""
        grads = [p.grad for p in self.raw.parameters() if p.grad is not None]
        flags = [torch.isfinite(loss).all()] + [torch.isfinite(g).all() for g in grads]
        return bool(torch.stack(flags).all())


def make_optimizer(model: torch.nn.Module, lr: float = 1e-4, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW as DiT (lr 1e-4, no weight decay); the fused kernel on CUDA."""
    params = [p for p in _ema.unwrap_model(model).parameters() if p.requires_grad]
    fused = params[0].device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def resolve_compile_mode(mode: str, model, batch_per_process: int, world_size: int, device: torch.device) -> str:
    """The torch.compile mode a run uses: `mode` itself, or for "auto" "reduce-overhead" (CUDA graphs) on one
    CUDA process whose forward pass is below AUTO_GRAPHS_MAX_GMACS per step, else "default"."""
    if mode != "auto":
        return mode
    if device.type != "cuda" or world_size > 1:
        return "default"
    try:
        gmacs = dit_macs(model) * batch_per_process / 1e9
    except (TypeError, ValueError, KeyError):  # not a DiT flops knows: no guess
        return "default"
    return "reduce-overhead" if gmacs < AUTO_GRAPHS_MAX_GMACS else "default"


def resolve_precision(cfg, device: torch.device) -> tuple[torch.dtype | None, bool, str | None]:
    """cfg.precision / cfg.compile on `device` -> (autocast dtype or None, compile?, a message when the device
    forces a fallback)."""
    if device.type == "cuda":
        return (torch.bfloat16 if cfg.precision == "bf16" else None), cfg.compile, None
    message = None
    if cfg.precision == "bf16" or cfg.compile:
        message = (
            f"running on {device.type}: bf16 autocast and torch.compile are used on CUDA only, so this run "
            "uses fp32 without compile (pick a tiny config, e.g. --preset cpu)"
        )
    return None, False, message
