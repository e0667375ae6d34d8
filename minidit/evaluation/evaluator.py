"""The evaluator: a small Fashion-MNIST classifier whose features replace Inception-v3 in FID and friends.

DiT (§4) scores samples with ADM's evaluator: Inception-v3 pool features (2048-d) for FID, precision and
recall, the first 7 channels of the intermediate `mixed_6/conv` map (17x17) for sFID, and its ImageNet
logits for the Inception Score. An ImageNet network says little about 32x32 grayscale clothing and is not
available offline, so the course trains its own: a VGG-style CNN (≈ 0.58 M parameters) that reaches
>= 93% test accuracy. It exposes the same three views:

    pool     (N, 256)       global-average-pooled last conv features      -> FID, KID, precision/recall, ...
    spatial  (N, 8*8*8)     first 8 channels of the 8x8 map of block 2    -> sFID analogue
    logits   (N, 10)                                                       -> IS analogue, class accuracy

Train it (seeded; 15 epochs take about 30 s on one H100, about 15 minutes on a laptop CPU):

    python -m minidit.evaluation.evaluator train --out minidit/assets/evaluator.safetensors

The script writes the weights and, beside them, a JSON with the test accuracy, device, torch version and
the weights' sha256, which `load_evaluator` checks before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from minidit.checkpoint import atomic_write, atomic_write_json, writable_target
from minidit.cli import ArgumentParser
from minidit.data import load_fashion_mnist, to_model_range
from minidit.device import get_device

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets"
EVALUATOR_PATH = ASSETS / "evaluator.safetensors"
TRAIN_COMMAND = "python -m minidit.evaluation.evaluator train --out minidit/assets/evaluator.safetensors"
DEFAULT_EPOCHS = 15

# ----------------------------------------------------------------------------- the network


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Evaluator(nn.Module):
    """VGG-style CNN for (N, 1, 32, 32) images in [-1, 1]: pooled, spatial and logit views for the metrics."""

    def __init__(self, widths=(32, 64, 128, 256), num_classes: int = 10, spatial_channels: int = 8, dropout=0.2):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.config = dict(
            widths=list(widths), num_classes=num_classes, spatial_channels=spatial_channels, dropout=dropout
        )  # stored in the weights file, to rebuild the network
        self.spatial_channels = spatial_channels
        self.stem = conv_bn_relu(1, w0)  # 32x32
        self.block1 = nn.Sequential(conv_bn_relu(w0, w1), conv_bn_relu(w1, w1))  # 16x16
        self.block2 = nn.Sequential(conv_bn_relu(w1, w2), conv_bn_relu(w2, w2))  # 8x8, the sFID tap
        self.block3 = conv_bn_relu(w2, w3)  # 4x4
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(w3, num_classes)
        self.feature_dim, self.spatial_dim = w3, spatial_channels * 8 * 8

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 1, 32, 32) in [-1, 1] -> {"pool": (N, 256), "spatial": (N, 512), "logits": (N, 10)}."""
        h = F.max_pool2d(self.stem(x), 2)  # (N, 32, 16, 16)
        h = F.max_pool2d(self.block1(h), 2)  # (N, 64, 8, 8)
        s = self.block2(h)  # (N, 128, 8, 8)
        spatial = rearrange(s[:, : self.spatial_channels], "n c h w -> n (c h w)")  # (N, 512)
        h = self.block3(F.max_pool2d(s, 2))  # (N, 256, 4, 4)
        pool = h.mean(dim=(2, 3))  # (N, 256)
        return {"pool": pool, "spatial": spatial, "logits": self.head(self.dropout(pool))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 1, 32, 32) -> logits (N, 10)."""
        return self.features(x)["logits"]


# ----------------------------------------------------------------------------- loading with a checksum


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluator_info(path: str | os.PathLike = EVALUATOR_PATH) -> dict:
    """The JSON the training script wrote beside the weights (test accuracy, device, sha256, ...)."""
    info_path = pathlib.Path(path).with_suffix(".json")
    if not info_path.is_file():
        raise FileNotFoundError(f"no evaluator record at {info_path}; it is written by `{TRAIN_COMMAND}`")
    return json.loads(info_path.read_text())


def load_evaluator(device=None, path: str | os.PathLike = EVALUATOR_PATH) -> Evaluator:
    """Load the trained evaluator in eval mode on `device` (default: get_device()), after checking its sha256."""

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluator weights not found at {path}; train them with `{TRAIN_COMMAND}`")
    expected = evaluator_info(path)["sha256"]
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(
            f"evaluator weights at {path} have sha256 {actual[:16]}..., but {path.with_suffix('.json').name} "
            f"records {expected[:16]}...: the file is corrupt or was replaced. Restore it from git or retrain "
            f"with `{TRAIN_COMMAND}` (which rewrites both files)."
        )
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    model = Evaluator(**config)
    model.load_state_dict(load_file(str(path)))
    return model.to(get_device(device)).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- training


def augment(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """x: (N, 1, 32, 32) -> random translation by up to `shift` px (background fill) and horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4, value=-1.0)  # (N, 1, H + 2s, W + 2s); -1 is the black background
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n, 1), device=x.device, generator=generator)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    out = padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols][:, None]  # (N, 1, H, W)
    flip = torch.rand(n, device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """x: (N, 1, 32, 32) in [-1, 1], y: (N,) -> top-1 accuracy of model in eval mode."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / len(x)


def train_evaluator(
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 256,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
    device=None,
    data_dir=None,
    max_train: int | None = None,
    log=print,
):
    """Train the evaluator on the Fashion-MNIST train split -> (model on CPU, info dict with test accuracy).

    SGD + Nesterov momentum with a one-cycle learning rate, random shifts and flips (samples of a DiT trained
    with flips show flipped shoes, so the evaluator must not mind them). Data live on the device; bf16
    autocast on CUDA. max_train: use only the first images (a quick provisional run).
    """

    device = get_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    train, test = load_fashion_mnist("train", root=data_dir), load_fashion_mnist("test", root=data_dir)
    x_train = to_model_range(train.images[:max_train].to(device))  # (N, 1, 32, 32)
    y_train = train.labels[:max_train].to(device)
    x_test, y_test = to_model_range(test.images.to(device)), test.labels.to(device)

    model = Evaluator().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(x_train) // batch_size
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"need epochs >= 1 and at least one batch of {batch_size} images; "
            f"got epochs={epochs} and {len(x_train)} images"
        )
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), device=device, generator=generator)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = augment(x_train[idx], generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        test_acc = accuracy(model, x_test, y_test)
        log(
            f"epoch {epoch + 1}/{epochs}  loss {float(total) / steps_per_epoch:.4f}  "
            f"test acc {test_acc:.4f}  {time.perf_counter() - start:.1f}s"
        )
    wall = time.perf_counter() - start
    info = {
        "test_accuracy": test_acc,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "num_train": len(x_train),
        "wall_time_s": round(wall, 2),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "provisional": epochs < DEFAULT_EPOCHS or len(x_train) < len(train),
    }
    return model.cpu().eval().to(memory_format=torch.contiguous_format), info


def save_evaluator(model: Evaluator, info: dict, out: str | os.PathLike) -> dict:
    """Write weights (safetensors, config in metadata) and the JSON record beside them, both atomically."""

    out = pathlib.Path(out)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}

    def write(tmp: pathlib.Path) -> None:
        save_file(state, str(tmp), metadata={"config": json.dumps(model.config)})
        os.chmod(tmp, 0o644)  # safetensors creates the file owner-only; the weights are meant to be shared

    atomic_write(out, write)
    info = dict(info, file=out.name, sha256=sha256_file(out), size_bytes=out.stat().st_size, config=model.config)
    atomic_write_json(out.with_suffix(".json"), info)
    return info


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m minidit.evaluation.evaluator", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the evaluator and write weights + JSON record")
    p.add_argument("--out", default=str(EVALUATOR_PATH))
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-train", type=int, default=None, help="train on the first N images only (provisional)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    sub.add_parser("check", help="load the committed weights, verify the sha256, print the record")
    args = parser.parse_args(argv)
    if args.command == "check":
        try:
            load_evaluator("cpu")
        except (ValueError, FileNotFoundError) as err:  # missing, or a sha256 that does not match
            parser.fail(str(err))
        print(json.dumps(evaluator_info(), indent=2))
        return 0

    for name in ("epochs", "batch_size", "max_train", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    try:  # before the training: outputs, device, data
        writable_target(args.out, "--out")
        get_device(args.device)
        load_fashion_mnist("train", root=args.data_dir)
        load_fashion_mnist("test", root=args.data_dir)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, info = train_evaluator(
        args.epochs,
        args.batch_size,
        args.lr,
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        max_train=args.max_train,
    )
    info["command"] = "python -m minidit.evaluation.evaluator " + " ".join(sys.argv[1:] if argv is None else argv)
    info = save_evaluator(model, info, args.out)
    print(
        f"test accuracy {info['test_accuracy']:.4f}; wrote {args.out} ({info['size_bytes'] / 1e6:.2f} MB, "
        f"sha256 {info['sha256'][:12]}...) and its .json record"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
