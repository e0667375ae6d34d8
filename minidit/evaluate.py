"""Score generated images: python -m minidit.evaluate --ckpt CKPT | --samples FILE_OR_FOLDER --out scores.json

With --ckpt it first draws class-balanced samples from a checkpoint through `minidit.sample` (several
--cfg-scale values give a guidance sweep, one report per scale, from the same starting noise); with
--samples it reads them from a .npy/.npz array (uint8 in [0, 255] or float in [-1, 1]; an .npz may hold
`labels`, as `python -m minidit.sample --npz` writes) or a folder of PNGs (sub-folders named 0..9 give the
labels). Every metric of `minidit.metrics` is computed for the samples and, beside them, for the
real-vs-real floor (test split against the same train reference); the JSON is written atomically.

    python -m minidit.evaluate --ckpt runs/s2 --num-samples 10000 --cfg-scale 1 1.5 2 3 4 --sampler ddim --steps 50 \
        --out notebooks/results/07_evaluation/guidance_sweep.json
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np
import torch

IMAGE_KEYS, LABEL_KEYS = ("samples", "images", "x", "arr_0"), ("labels", "y", "arr_1")


def to_images(array, source: str = "samples") -> torch.Tensor:
    """array: (N, 32, 32), (N, 1, 32, 32) or (N, 32, 32, 1), uint8 [0, 255] or float [-1, 1] -> (N, 1, 32, 32) float32.

    Float values are not checked here; `minidit.metrics.check_images` rejects any outside [-1, 1].
    """
    x = torch.as_tensor(np.asarray(array))
    if x.dim() == 3:
        x = x[:, None]  # (N, 1, H, W)
    elif x.dim() == 4 and x.shape[-1] == 1 and x.shape[1] != 1:
        x = x.permute(0, 3, 1, 2)  # (N, 1, H, W) from channels-last
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 32, 32):
        raise ValueError(f"{source}: expected images of shape (N, 32, 32), (N, 1, 32, 32) or (N, 32, 32, 1), "
                         f"got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    if not x.dtype.is_floating_point:
        raise ValueError(f"{source}: expected uint8 pixels or floats in [-1, 1], got dtype {x.dtype}")
    return x.float()


def _read_png(path: pathlib.Path) -> np.ndarray:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)  # float32 in [0, 1] for PNG; (H, W), (H, W, 3) or (H, W, 4)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)  # grayscale saved as RGB has three equal channels
    return np.round(img * 255).astype(np.uint8)


def load_samples(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A .npy/.npz file or a folder of PNGs -> (images (N, 1, 32, 32) float32, labels (N,) int64 or None)."""
    path = pathlib.Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.png"))
        if not files:
            raise ValueError(f"{path}: no .png files found")
        parents = {f.parent.relative_to(path).as_posix() for f in files}
        labels = None
        if all(p.isdigit() for p in parents):  # ImageFolder layout: 0/xxx.png, 1/yyy.png, ...
            labels = torch.tensor([int(f.parent.name) for f in files])
        return to_images(np.stack([_read_png(f) for f in files]), str(path)), labels
    if path.suffix == ".npy":
        return to_images(np.load(path), str(path)), None
    if path.suffix == ".npz":
        with np.load(path) as data:
            key = next((k for k in IMAGE_KEYS if k in data), None)
            if key is None:
                raise ValueError(f"{path}: no array named one of {IMAGE_KEYS} (found {list(data)})")
            label_key = next((k for k in LABEL_KEYS if k in data), None)
            labels = torch.as_tensor(data[label_key]).long() if label_key else None
            return to_images(data[key], str(path)), labels
    raise ValueError(f"{path}: expected a .npy or .npz file or a folder of PNGs")


def draw_samples(model, diffusion, num_samples: int, cfg_scale: float = 1.0, sampler: str = "ddpm", steps: int = 250,
                 batch_size: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced samples (labels 0, 1, ..., 9, 0, ...) -> (images (N, 1, 32, 32) on the CPU, labels (N,)).

    The same seed gives the same starting noise for every cfg_scale, so a guidance sweep compares like with like.
    """
    from minidit.sample import sample

    device = next(model.parameters()).device
    labels = torch.arange(num_samples) % model.num_classes  # (N,)
    generator = torch.Generator(device=device).manual_seed(seed)
    images = [sample(model, diffusion, labels[i : i + batch_size].to(device), cfg_scale=cfg_scale, sampler=sampler,
                     steps=steps, generator=generator).float().cpu() for i in range(0, num_samples, batch_size)]
    return torch.cat(images), labels


def format_report(report: dict) -> str:
    """A two-column text table: the samples' numbers beside the real-vs-real floor."""
    rows = [f"{'metric':<20}{'samples':>12}{'real floor':>12}"]
    for key, value in report["samples"].items():
        if isinstance(value, float):
            rows.append(f"{key:<20}{value:>12.4f}{report['real_floor'].get(key, float('nan')):>12.4f}")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidit.evaluate", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help="a checkpoint to sample from (minidit.sample)")
    source.add_argument("--samples", help=".npy / .npz file or folder of PNGs")
    parser.add_argument("--out", default=None, help="JSON to write (default: scores.json beside the input)")
    parser.add_argument("--num-samples", type=int, default=10_000, help="with --ckpt: how many to draw")
    parser.add_argument("--cfg-scale", type=float, nargs="+", default=[1.0],
                        help="guidance scale; several values -> a sweep, one report per scale")
    parser.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"))
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--save-samples", default=None, help="with --ckpt: also save the samples (.npz, uint8)")
    parser.add_argument("--num-reference", type=int, default=None, help="real train images (default: as many)")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    from minidit.checkpoint import atomic_write_json
    from minidit.metrics import evaluation_report

    common = dict(num_reference=args.num_reference, seed=args.seed, device=args.device, data_dir=args.data_dir,
                  kid_subsets=args.kid_subsets)
    command = "python -m minidit.evaluate " + " ".join(sys.argv[1:] if argv is None else argv)
    source_path = pathlib.Path(args.ckpt or args.samples)
    default_out = source_path / "scores.json" if source_path.is_dir() else source_path.with_name("scores.json")
    out = pathlib.Path(args.out) if args.out else default_out
    if args.samples:
        start = time.perf_counter()
        report = evaluation_report(*load_samples(args.samples), **common)
        report.update(samples_path=str(args.samples), eval_time_s=round(time.perf_counter() - start, 2),
                      command=command)
        atomic_write_json(out, report)
        print(format_report(report))
        print(f"wrote {out}")
        return 0

    from minidit import course
    from minidit.sample import load_model_for_sampling, save_npz

    course.apply_env()  # $MINIDIT_IMPL=student samples with the student's own diffusion code
    model, diffusion = load_model_for_sampling(args.ckpt, use_ema=True, device=args.device)
    reports = []
    for scale in args.cfg_scale:
        start = time.perf_counter()
        images, labels = draw_samples(model, diffusion, args.num_samples, scale, args.sampler, args.steps,
                                      args.batch_size, args.seed)
        sample_time = time.perf_counter() - start
        if args.save_samples:
            path = pathlib.Path(args.save_samples)
            if len(args.cfg_scale) > 1:
                path = path.with_name(f"{path.stem}_cfg{scale:g}.npz")
            save_npz(images, labels, path)
        report = evaluation_report(images, labels, **common)
        report.update(ckpt=str(args.ckpt), cfg_scale=scale, sampler=args.sampler, steps=args.steps,
                      sample_time_s=round(sample_time, 2),
                      eval_time_s=round(time.perf_counter() - start - sample_time, 2), command=command)
        print(f"cfg scale {scale:g}\n{format_report(report)}")
        reports.append(report)
    atomic_write_json(out, reports[0] if len(reports) == 1 else {"cfg_scales": args.cfg_scale, "reports": reports,
                                                                  "command": command})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
