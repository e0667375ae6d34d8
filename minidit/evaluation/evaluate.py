"""Score generated images: python -m minidit.evaluate --ckpt CKPT | --samples FILE_OR_FOLDER --out scores.json

With --ckpt it first draws class-balanced samples from a checkpoint through `minidit.sample` (several
--cfg-scale values give a guidance sweep, one report per scale, from the same starting noise); with
--samples it reads them from a .npy/.npz array (uint8 in [0, 255] or float in [-1, 1]; an .npz may hold
`labels`, as `python -m minidit.sample --npz` writes) or a folder of PNGs (sub-folders named 0..9 give the
labels). Every metric of `minidit.evaluation.metrics` is computed for the samples and, beside them, for the
real-vs-real floor (test split against the same train reference); the JSON is written atomically.

    python -m minidit.evaluate --ckpt runs/s2 --num-samples 10000 --cfg-scale 1 1.5 2 3 4 --sampler ddim --steps 50 \
        --out notebooks/results/07_evaluation/guidance_sweep.json
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import numpy as np
import torch

from minidit.checkpoint import atomic_write_json, writable_target
from minidit.cli import ArgumentParser, use_course_env
from minidit.data import CLASS_NAMES, load_fashion_mnist
from minidit.evaluation.metrics import check_images, check_labels, evaluation_report
from minidit.sample import DEFAULT_BATCH_SIZE, check_sampling_args, load_for_cli, sample, save_npz

IMAGE_KEYS, LABEL_KEYS = ("samples", "images", "x", "arr_0"), ("labels", "y", "arr_1")


def to_images(array, source: str = "samples") -> torch.Tensor:
    """array: (N, 32, 32), (N, 1, 32, 32) or (N, 32, 32, 1), uint8 [0, 255] or float [-1, 1] -> (N, 1, 32, 32) float32.

    The values are checked by `minidit.evaluation.metrics.check_images` (floats in [0, 1] or [0, 255] are refused
    with the conversion they need).
    """

    x = torch.as_tensor(np.asarray(array))
    if x.dim() == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.dim() == 4 and x.shape[-1] == 1 and x.shape[1] != 1:
        x = x.permute(0, 3, 1, 2)  # (N, 1, H, W) from channels-last
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32):
        raise ValueError(
            f"{source}: expected images of shape (N, 32, 32), (N, 1, 32, 32) or (N, 32, 32, 1), got {tuple(x.shape)}"
        )
    try:
        return check_images(x, "images")
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _read_png(path: pathlib.Path) -> np.ndarray:
    import matplotlib.image as mpimg  # heavy: only a folder of PNGs needs it

    img = mpimg.imread(path)  # float32 in [0, 1] for PNG; (H, W), (H, W, 3) or (H, W, 4)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)  # grayscale saved as RGB has three equal channels
    return np.round(img * 255).astype(np.uint8)


def load_samples(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A .npy/.npz file or a folder of PNGs -> (images (N, 1, 32, 32) float32, labels (N,) int64 or None).

    Labels must be integers in [0, 10), one per image (`minidit.evaluation.metrics.check_labels`).
    """

    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.png"))
        if not files:
            raise ValueError(f"{path}: no .png files found")
        parents = {f.parent.relative_to(path).as_posix() for f in files}
        labels = None
        if all(p.isdigit() for p in parents):  # ImageFolder layout: 0/xxx.png, 1/yyy.png, ...
            labels = check_labels(
                torch.tensor([int(f.parent.name) for f in files]),
                len(files),
                len(CLASS_NAMES),
                f"{path}: the class folders",
            )
        return to_images(np.stack([_read_png(f) for f in files]), str(path)), labels
    if path.suffix in (".npy", ".npz") and not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".npy":
        return to_images(np.load(path), str(path)), None
    if path.suffix == ".npz":
        with np.load(path) as data:
            key = next((k for k in IMAGE_KEYS if k in data), None)
            if key is None:
                raise ValueError(f"{path}: no array named one of {IMAGE_KEYS} (found {list(data)})")
            label_key = next((k for k in LABEL_KEYS if k in data), None)
            images = to_images(data[key], str(path))
            labels = None
            if label_key:
                labels = check_labels(data[label_key], len(images), len(CLASS_NAMES), f"{path}: {label_key!r}")
            return images, labels
    raise ValueError(f"{path}: expected a .npy or .npz file or a folder of PNGs")


def draw_samples(
    model,
    diffusion,
    num_samples: int,
    cfg_scale: float = 1.0,
    sampler: str = "ddpm",
    steps: int = 250,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced samples (labels 0, 1, ..., 9, 0, ...) -> (images (N, 1, 32, 32) on the CPU, labels (N,)).

    The same seed gives the same starting noise for every cfg_scale, so a guidance sweep compares like with like.
    """

    device = next(model.parameters()).device
    labels = torch.arange(num_samples) % model.num_classes  # (N,)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = [
        sample(
            model,
            diffusion,
            labels[i : i + batch_size].to(device),
            cfg_scale=cfg_scale,
            sampler=sampler,
            steps=steps,
            generator=generator,
        )
        .float()
        .cpu()
        for i in range(0, num_samples, batch_size)
    ]
    return torch.cat(images), labels


def _check_reference(data_dir, num_reference: int | None) -> None:
    """Both Fashion-MNIST splits load (ValueError / OSError naming the problem) and hold num_reference train images."""

    train = load_fashion_mnist("train", root=data_dir)
    load_fashion_mnist("test", root=data_dir)
    if num_reference is not None and num_reference > len(train):
        raise ValueError(f"--num-reference {num_reference} is more than the {len(train)} train images")


def format_report(report: dict) -> str:
    """A two-column text table: the samples' numbers beside the real-vs-real floor."""
    rows = [f"{'metric':<20}{'samples':>12}{'real floor':>12}"]
    for key, value in report["samples"].items():
        if isinstance(value, float):
            rows.append(f"{key:<20}{value:>12.4f}{report['real_floor'].get(key, float('nan')):>12.4f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = ArgumentParser(prog="python -m minidit.evaluate", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint to sample from (minidit.sample)")
    source.add_argument("--samples", help=".npy / .npz file or folder of PNGs")
    parser.add_argument("--out", default=None, help="JSON to write (default: scores.json beside the input)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="with --ckpt: how many to draw")
    parser.add_argument(
        "--cfg-scale",
        type=float,
        nargs="+",
        default=[1.0],
        help="guidance scale; several values -> a sweep, one report per scale",
    )
    parser.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per sample() call")
    parser.add_argument("--save-samples", default=None, help="with --ckpt: also save the samples (.npz, uint8)")
    parser.add_argument("--num-reference", type=int, default=None, help="real train images (default: as many)")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    check_sampling_args(args, parser)
    if args.kid_subsets < 1 or (args.num_reference is not None and args.num_reference < 2):
        parser.error(f"need --kid-subsets >= 1 and --num-reference >= 2, got {args.kid_subsets}, {args.num_reference}")

    common = dict(
        num_reference=args.num_reference,
        seed=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        kid_subsets=args.kid_subsets,
    )
    command = "python -m minidit.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    source_path = pathlib.Path(args.ckpt or args.samples)
    default_out = source_path / "scores.json" if source_path.is_dir() else source_path.with_name("scores.json")
    out = pathlib.Path(args.out) if args.out else default_out
    try:  # outputs, inputs and the reference data, before any sampling or scoring
        writable_target(out, "--out")
        if args.save_samples:
            writable_target(args.save_samples, "--save-samples")
        samples = load_samples(args.samples) if args.samples else None
        _check_reference(args.data_dir, args.num_reference or args.num_samples if args.ckpt else args.num_reference)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    if args.samples:
        start = time.perf_counter()
        try:
            report = evaluation_report(*samples, **common)
        except ValueError as err:  # e.g. more reference images asked for than the split holds
            parser.error(str(err))
        report.update(
            samples_path=str(args.samples), eval_time_s=round(time.perf_counter() - start, 2), command=command
        )
        atomic_write_json(out, report)
        print(format_report(report))
        print(f"wrote {out}")
        return 0

    use_course_env()  # $MINIDIT_IMPL=student samples with the student's own diffusion code
    model, diffusion = load_for_cli(args, parser, use_ema=True)
    reports = []
    for scale in args.cfg_scale:
        start = time.perf_counter()
        images, labels = draw_samples(
            model, diffusion, args.num_samples, scale, args.sampler, args.steps, args.batch_size, args.seed
        )
        sample_time = time.perf_counter() - start
        if args.save_samples:
            path = pathlib.Path(args.save_samples)
            if len(args.cfg_scale) > 1:
                path = path.with_name(f"{path.stem}_cfg{scale:g}.npz")
            save_npz(images, labels, path)
        report = evaluation_report(images, labels, **common)
        report.update(
            ckpt=str(args.ckpt),
            cfg_scale=scale,
            sampler=args.sampler,
            steps=args.steps,
            sample_time_s=round(sample_time, 2),
            eval_time_s=round(time.perf_counter() - start - sample_time, 2),
            command=command,
        )
        print(f"cfg scale {scale:g}\n{format_report(report)}")
        reports.append(report)
    atomic_write_json(
        out, reports[0] if len(reports) == 1 else {"cfg_scales": args.cfg_scale, "reports": reports, "command": command}
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
