"""Notebook 10's GPU experiment: DiT in a frozen autoencoder's latent space against DiT on pixels, at equal compute.

    python -m minidit.tools.latent_experiment --out notebooks/results/10_latent_diffusion --minutes 8
    python -m minidit.tools.latent_experiment --quick --out /tmp/latent     # CPU, seconds: the same code path

Within the budget (everything included: compiling, sampling, scoring, figures) it
  1. trains the KL autoencoder of `minidit.latent` (32x32x1 -> 8x8x4) and freezes it;
  2. measures its reconstructions of the test split: PSNR, SSIM, and FID / precision / recall / class
     accuracy in the course's evaluator, beside the real-vs-real floor;
  3. precomputes the latents of the training split (and of its mirror images) once, on the device, and
     their scale factor 1 / std (DiT §3.1; the SD VAE's 0.18215);
  4. trains DiT on the latents, then DiT on pixels for the same training compute: Gflops per image x
     images seen (= Gflops x steps at the same batch), with minidit.train (bf16 + torch.compile on CUDA);
  5. samples both (class-balanced, DDIM, guidance 1 and 1.5), decodes the latent samples, scores them;
and writes results.json (after every phase, atomically) and the figures to --out. Large files (the DiT
checkpoints) go to --work-dir. Each phase gets what the budget leaves; a phase cut short says so in the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pathlib
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch

from minidit import latent as _latent
from minidit.checkpoint import atomic_write, atomic_write_json
from minidit.cli import use_course_env
from minidit.data import CLASS_NAMES, FashionMNIST, find_data_dir, load_fashion_mnist, to_model_range
from minidit.device import get_device
from minidit.evaluation.metrics import evaluation_report
from minidit.flops import dit_gflops
from minidit.sample import load_model_for_sampling, make_grid, sample
from minidit.superres.distortion import psnr, ssim
from minidit.train import TrainConfig, train

SD_VAE_SCALE_FACTOR = 0.18215  # Stable Diffusion's VAE (the one DiT uses): 1 / std of its latents


@dataclass(frozen=True)
class LatentRunConfig:
    """Everything the experiment does; `PRESETS` holds the GPU run and the CPU quick mode."""

    ae: _latent.AEConfig = field(default_factory=_latent.AEConfig)
    num_train: int | None = None  # training images used (None: all 60,000); the quick mode takes a few
    ae_share: float = 0.17  # of the budget, for training the autoencoder
    ae_max_steps: int = 100_000
    ae_batch_size: int = 256
    ae_lr: float = 5e-4
    model: str = "DiT-S/2"  # both DiTs: 16 latent tokens (8x8, p = 2) or 256 pixel tokens (32x32, p = 2)
    batch_size: int = 256
    lr: float = 3e-4  # both DiTs; notebook 08's short-run rate (§A.0: at 4,000 steps FID 1.77 against 5.57 at 1e-4)
    max_pixel_steps: int = 4000  # the latent DiT aims at this much compute; the pixel DiT then matches it
    latent_share: float = 0.55  # of the DiT training time, for the latent DiT (it goes first)
    num_recon: int = 5000  # test images reconstructed and scored (FID against the samples' reference)
    num_samples: int = 5000  # per model and guidance scale
    cfg_scales: tuple[float, ...] = (1.0, 1.5)
    sample_steps: int = 50  # DDIM
    sample_batch: int = 1000
    eval_reserve_s: float = 110.0  # kept for sampling, scoring and figures
    end_margin_s: float = 10.0  # the run ends this long before the budget
    precision: str = "bf16"
    compile: bool = True
    log_every: int = 100
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        if self.num_train is not None and self.num_train < 1:
            raise ValueError(f"num_train must be >= 1 (or None for all), got {self.num_train}")
        for name in (
            "ae_max_steps",
            "ae_batch_size",
            "batch_size",
            "max_pixel_steps",
            "num_recon",
            "num_samples",
            "sample_steps",
            "sample_batch",
            "log_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0 < self.ae_share < 1 and 0 < self.latent_share < 1):
            raise ValueError(f"ae_share and latent_share must be in (0, 1), got {self.ae_share}, {self.latent_share}")
        if self.num_samples < len(CLASS_NAMES):
            raise ValueError(f"num_samples must be >= {len(CLASS_NAMES)} (class-balanced), got {self.num_samples}")
        if not self.cfg_scales or min(self.cfg_scales) < 1:
            raise ValueError(f"cfg_scales must be >= 1, got {self.cfg_scales}")


PRESETS = {
    "gpu": LatentRunConfig(),
    "quick": LatentRunConfig(
        ae=_latent.AEConfig(widths=(8, 16, 16)),
        num_train=500,
        ae_max_steps=10,
        ae_batch_size=16,
        ae_lr=2e-3,
        model="DiT-T/2",
        batch_size=8,
        lr=1e-3,
        max_pixel_steps=2,
        num_recon=100,
        num_samples=40,
        sample_steps=4,
        sample_batch=20,
        eval_reserve_s=60.0,
        end_margin_s=2.0,
        precision="fp32",
        compile=False,
        log_every=10,
    ),
}


# ----------------------------------------------------------------------------- helpers


def _ae_gflops(ae: _latent.AutoencoderKL, device) -> dict:
    """Encoder and decoder multiply-accumulates per image, /1e9 (the paper's "Gflops"), counted by torch; {} if
    this torch cannot count them (a number we do not have is left out, not guessed)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode  # only the Gflops count needs it

        x = torch.zeros(1, ae.cfg.in_channels, 32, 32, device=device)
        z = torch.zeros(1, ae.cfg.latent_channels, 32 // ae.cfg.factor, 32 // ae.cfg.factor, device=device)
        out = {}
        with torch.no_grad():
            for name, fn in (("encoder", lambda: ae.encoder(x)), ("decoder", lambda: ae.decoder(z))):
                with FlopCounterMode(display=False) as counter:
                    fn()
                out[name] = counter.get_total_flops() / 2e9  # FLOPs = 2 MACs
        return out
    except Exception:  # noqa: BLE001
        return {}


def _median_img_per_s(history: dict) -> float | None:
    rates = history.get("img_per_s", [])[1:] or history.get("img_per_s", [])  # the first includes compiling
    return statistics.median(rates) if rates else None


def _scores(report: dict) -> dict:
    keys = ("fid", "precision", "recall", "class_accuracy", "kid", "sfid", "inception_score", "density", "coverage")
    return {
        "num_samples": report["num_samples"],
        **{k: report["samples"].get(k) for k in keys},
        "floor": {k: report["real_floor"].get(k) for k in keys},
    }


def _grid(images: torch.Tensor, per_class: int) -> torch.Tensor:
    """Class-balanced images (labels 0..9, 0..9, ...) -> per_class of each class, one row per class."""
    n = len(CLASS_NAMES)
    take = torch.stack([images[c::n][:per_class] for c in range(n)])  # (10, k, 1, 32, 32)
    return take.flatten(0, 1)


def _save_figure(fig, path: pathlib.Path) -> None:
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)


def _figures(out_dir: pathlib.Path, summary: dict, pictures: dict) -> list[str]:
    """reconstructions.png, samples.png, training.png; returns the names written."""
    import matplotlib  # heavy: only the figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only the figures need it

    written = []
    if "reconstructions" in pictures:
        real, rec = pictures["reconstructions"]
        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        for ax, imgs, title in zip(axes, (real, rec), ("test images", "their reconstructions (8x8x4 latents)")):
            ax.imshow(make_grid(imgs, nrow=8), cmap="gray", vmin=0, vmax=255)
            ax.set_title(title)
            ax.axis("off")
        _save_figure(fig, out_dir / "reconstructions.png")
        written.append("reconstructions.png")
    grids = pictures.get("samples", {})
    if grids:
        per_class = max(len(imgs) for imgs in grids.values()) // len(CLASS_NAMES)
        fig, axes = plt.subplots(
            1, len(grids), figsize=(len(grids) * (0.55 * per_class + 0.4), 6), squeeze=False, layout="constrained"
        )
        for ax, (title, imgs) in zip(axes[0], grids.items()):
            ax.imshow(make_grid(imgs, nrow=per_class), cmap="gray", vmin=0, vmax=255)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.suptitle(f"EMA samples, {per_class} per class; rows, top to bottom: {', '.join(CLASS_NAMES)}", fontsize=9)
        _save_figure(fig, out_dir / "samples.png")
        written.append("samples.png")
    models = summary.get("models", {})
    if any("history" in m for m in models.values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        for name, m in models.items():
            h = m.get("history")
            if not h or not h["step"]:
                continue
            compute = [s * m["gflops"] * m["batch_size"] / 1e6 for s in h["step"]]  # forward Gflops x images / 1e6
            label = f"{name}: {m['model']}, {m['tokens_per_image']} tokens"
            axes[0].plot(compute, h["loss"], ".-", label=label)
            axes[1].plot(h["wall_time"], h["loss"], ".-", label=label)
        axes[0].set_xlabel("training compute: forward Gflops x images seen / 1e6")
        axes[1].set_xlabel("wall-clock seconds (torch.compile included)")
        for ax in axes:
            ax.set_ylabel("training loss (L_simple + L_vlb)")
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        fig.suptitle("losses of different data (latents vs pixels): compare the shapes, not the levels", fontsize=9)
        _save_figure(fig, out_dir / "training.png")
        written.append("training.png")
    return written


def _sample_and_score(model, diffusion, cfg: LatentRunConfig, cfg_scale: float, decode, left, data_dir, device):
    """Class-balanced DDIM samples (decoded when `decode` is given), in chunks while time is `left()` -> scored.

    Returns (images (n, 1, 32, 32) on the CPU, the scores with n, the real floor and the sampling time).
    """

    labels = torch.arange(cfg.num_samples) % len(CLASS_NAMES)  # (N,) 0, 1, ..., 9, 0, ...
    generator = torch.Generator(device=device).manual_seed(cfg.seed)  # the same noise for every scale
    images, chunk_s, start = [], 0.0, time.monotonic()
    for i in range(0, cfg.num_samples, cfg.sample_batch):
        if images and left() < 1.5 * chunk_s + 10:  # keep time to score and to write
            break
        t0 = time.monotonic()
        # compile=False: two models x (guided, unguided) would be four cold compiles, more than they save here
        x = sample(
            model,
            diffusion,
            labels[i : i + cfg.sample_batch].to(device),
            cfg_scale=cfg_scale,
            sampler="ddim",
            steps=cfg.sample_steps,
            generator=generator,
            clip_denoised=decode is None,  # latents: no clip
            compile=False,
        )
        images.append((x if decode is None else decode(x)).float().cpu())  # (n, 1, 32, 32)
        chunk_s = time.monotonic() - t0
    images = torch.cat(images)
    sample_s = time.monotonic() - start
    report = evaluation_report(
        images, labels[: len(images)], num_reference=cfg.num_samples, seed=cfg.seed, device=device, data_dir=data_dir
    )
    return images, {
        **_scores(report),
        "cfg_scale": cfg_scale,
        "sample_seconds": round(sample_s, 2),
        "complete": len(images) == cfg.num_samples,
    }


# ----------------------------------------------------------------------------- the experiment


def run(
    cfg: LatentRunConfig,
    out_dir,
    minutes: float = 8.0,
    work_dir="runs/10_latent_diffusion",
    command: str | None = None,
    data_dir=None,
    log=print,
) -> dict:
    """Run the five phases within `minutes`; returns the summary that results.json holds."""

    start = time.monotonic()
    budget = 60.0 * minutes
    end = start + budget - cfg.end_margin_s

    def left() -> float:
        return end - time.monotonic()

    device = get_device(cfg.device)
    out_dir, work_dir = pathlib.Path(out_dir), pathlib.Path(work_dir)
    summary = {
        "command": command or "minidit.tools.latent_experiment.run",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_version": torch.__version__,
        "minutes_budget": minutes,
        "config": dataclasses.asdict(cfg),
        "status": "autoencoder",
        "wall_seconds": {},
        "notes": "Gflops are the paper's: multiply-accumulates of one forward pass per image (minidit.flops); "
        "training compute = Gflops x images seen = Gflops x steps x batch size",
    }
    pictures: dict = {}

    def save(status: str) -> None:
        summary["status"] = status
        summary["wall_seconds"]["total"] = round(time.monotonic() - start, 1)
        atomic_write_json(out_dir / "results.json", summary)

    def phase_done(name: str, since: float) -> None:
        summary["wall_seconds"][name] = round(time.monotonic() - since, 1)

    try:
        train_data = load_fashion_mnist("train", root=data_dir)
        if cfg.num_train is not None:
            train_data = FashionMNIST(train_data.images[: cfg.num_train], train_data.labels[: cfg.num_train], "train")
        train_data = train_data.to(device)
        test_data = load_fashion_mnist("test", root=data_dir)

        # 1. the autoencoder
        t0 = time.monotonic()
        log(f"minidit.tools.latent_experiment: training the autoencoder for up to {cfg.ae_share * budget:.0f} s")
        ae, ae_hist = _latent.train_autoencoder(
            train_data.images,
            cfg.ae,
            steps=cfg.ae_max_steps,
            max_seconds=min(cfg.ae_share * budget, max(left(), 1.0)),
            batch_size=cfg.ae_batch_size,
            lr=cfg.ae_lr,
            seed=cfg.seed,
            log_every=10 * cfg.log_every,
            log=log,
        )
        ae_gflops = _ae_gflops(ae, device)
        summary["autoencoder"] = {
            "config": dataclasses.asdict(cfg.ae),
            "factor": cfg.ae.factor,
            **ae_hist,
            **{f"{k}_gflops": v for k, v in ae_gflops.items()},
        }
        if ae_gflops:  # in the DiTs' unit: forward Gflops x images seen
            summary["autoencoder"]["training_compute"] = (
                ae_hist["steps"] * cfg.ae_batch_size * (ae_gflops["encoder"] + ae_gflops["decoder"])
            )
        phase_done("autoencoder_train", t0)

        # 2. its reconstructions, in the course's evaluator
        t0 = time.monotonic()
        n_rec = min(cfg.num_recon, len(test_data))
        real = to_model_range(test_data.images[:n_rec]).to(device)  # (n, 1, 32, 32)
        rec = _latent.decode_latents(ae, _latent.encode_images(ae, real, sample=False), 1.0).float()
        report = evaluation_report(
            rec.cpu(),
            test_data.labels[:n_rec],
            num_reference=cfg.num_samples,
            seed=cfg.seed,
            device=device,
            data_dir=data_dir,
        )  # the samples' reference
        summary["autoencoder"]["reconstruction"] = {
            "latent": "posterior mean",
            "psnr": psnr(rec, real).mean().item(),
            "ssim": ssim(rec, real).mean().item(),
            **_scores(report),
        }
        pictures["reconstructions"] = (real[:32].cpu(), rec[:32].cpu())
        phase_done("autoencoder_eval", t0)
        r = summary["autoencoder"]["reconstruction"]
        log(
            f"minidit.tools.latent_experiment: reconstructions PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f}, "
            f"FID {r['fid']:.2f} (real floor {r['floor']['fid']:.2f})"
        )
        save("latents")

        # 3. the latents, once, on the device
        t0 = time.monotonic()
        latents, scale = _latent.encode_dataset(ae, train_data.images, train_data.labels, seed=cfg.seed)
        raw = latents.images / scale  # (2N, 4, 8, 8) the encoder's own scale
        posterior = ae.encode(to_model_range(train_data.images[:2048]))
        summary["latents"] = {
            "shape": list(latents.images.shape[1:]),
            "num": len(latents),
            "scale_factor": scale,
            "sd_vae_scale_factor": SD_VAE_SCALE_FACTOR,
            "raw_mean": raw.mean().item(),
            "raw_std": raw.std().item(),
            "raw_channel_std": raw.std(dim=(0, 2, 3)).tolist(),
            "raw_abs_max": raw.abs().max().item(),
            "scaled_std": latents.images.std().item(),
            "posterior_std_mean": posterior.logvar.mul(0.5).exp().mean().item(),
            "posterior_mean_std": posterior.mean.std().item(),
        }
        del raw
        phase_done("latents", t0)
        log(
            f"minidit.tools.latent_experiment: {len(latents)} latents {tuple(latents.images.shape[1:])}, raw std "
            f"{summary['latents']['raw_std']:.3f}: scale factor {scale:.4f} (SD VAE: {SD_VAE_SCALE_FACTOR})"
        )
        save("training")

        # 4. the two DiTs, at equal training compute
        spaces = {
            "latent": dict(
                data=latents, input_size=32 // cfg.ae.factor, in_channels=cfg.ae.latent_channels, flip=False
            ),
            "pixel": dict(data=train_data, input_size=32, in_channels=1, flip=True),
        }
        models = summary["models"] = {}
        for name, s in spaces.items():
            p = int(cfg.model.split("/")[1])
            models[name] = {
                "model": cfg.model,
                "input_size": s["input_size"],
                "in_channels": s["in_channels"],
                "tokens_per_image": (s["input_size"] // p) ** 2,
                "batch_size": cfg.batch_size,
                "gflops": dit_gflops(cfg.model, input_size=s["input_size"], in_channels=s["in_channels"]),
            }
        ratio = models["pixel"]["gflops"] / models["latent"]["gflops"]
        target_latent_steps = math.ceil(cfg.max_pixel_steps * ratio)
        window = left() - cfg.eval_reserve_s
        for name in ("latent", "pixel"):
            t0 = time.monotonic()
            m, s = models[name], spaces[name]
            if name == "latent":
                steps, seconds = target_latent_steps, cfg.latent_share * window
            else:  # the latent DiT's compute, in pixel steps
                steps = max(1, round(models["latent"]["steps"] * models["latent"]["gflops"] / m["gflops"]))
                seconds = left() - cfg.eval_reserve_s
            if name == "pixel" and not models["latent"]["steps"]:
                m.update(steps=0, status="skipped: the latent DiT did not train, so there is no compute to match")
                continue
            if seconds < 1:
                log(f"minidit.tools.latent_experiment: no time left to train the {name} DiT")
                m.update(steps=0, status="skipped: no time left")
                continue
            log(
                f"minidit.tools.latent_experiment: training the {name} DiT ({cfg.model}, "
                f"{m['tokens_per_image']} tokens, "
                f"{m['gflops']:.3f} Gflops) for {steps} steps or {seconds:.0f} s"
            )
            tcfg = TrainConfig(
                model=cfg.model,
                global_batch_size=cfg.batch_size,
                steps=steps,
                lr=cfg.lr,
                ema_warmup="ema_warmup",
                seed=cfg.seed,
                flip=s["flip"],
                precision=cfg.precision,
                compile=cfg.compile,
                out_dir=str(work_dir / name),
                log_every=cfg.log_every,
                ckpt_every=0,
                sample_every=0,
                max_minutes=seconds / 60,
                device=cfg.device,
                progress=False,
                overwrite=True,  # the work dir is this experiment's scratch: a re-run starts afresh
                data_dir=None if data_dir is None else str(data_dir),
            )
            history = train(tcfg, s["data"])
            m.update(
                steps=history["final_step"],
                stopped_by_budget=history["stopped_by_budget"],
                compiled=history.get("compiled"),
                precision=history.get("precision"),
                num_params=history.get("num_params"),
                img_per_s=_median_img_per_s(history),
                # achieved training throughput: forward + backward ~ 3 forwards, 2 FLOPs per multiply-accumulate
                tflops_per_s=(_median_img_per_s(history) or 0.0) * m["gflops"] * 6 / 1e3,
                train_seconds=history["wall_time"][-1] if history["wall_time"] else None,
                seconds_to_first_log=history["wall_time"][0] if history["wall_time"] else None,  # compile
                training_compute=history["final_step"] * cfg.batch_size * m["gflops"],
                checkpoint=history["checkpoints"][-1],
                status="trained",
                history={k: history[k] for k in ("step", "loss", "img_per_s", "wall_time")},
            )
            phase_done(f"train_{name}", t0)
            save("training")
        lat, pix = models["latent"], models["pixel"]
        if lat.get("steps") and pix.get("steps"):
            summary["equal_compute"] = {
                "gflops_ratio": ratio,
                "compute_ratio_pixel_to_latent": pix["training_compute"] / lat["training_compute"],
            }

        # 5. samples, decoded, scored
        t0 = time.monotonic()
        summary["samples"] = {name: {} for name in models}
        pictures["samples"] = {}
        loaded = {}
        for cfg_scale in cfg.cfg_scales:
            for name in (n for n in models if models[n].get("steps")):
                key = f"{cfg_scale:g}"
                if left() < 5:
                    log(f"minidit.tools.latent_experiment: no time left to sample the {name} DiT at guidance {key}")
                    continue
                try:
                    if name not in loaded:
                        loaded[name] = load_model_for_sampling(models[name]["checkpoint"], use_ema=True, device=device)
                    decode = (lambda z: _latent.decode_latents(ae, z, scale)) if name == "latent" else None
                    images, result = _sample_and_score(*loaded[name], cfg, cfg_scale, decode, left, data_dir, device)
                except Exception as err:  # one failed job (e.g. a diverged model's NaNs) must not stop the others
                    summary["samples"][name][key] = {"error": f"{type(err).__name__}: {err}"}
                    log(f"minidit.tools.latent_experiment: {name} DiT, guidance {key}: {type(err).__name__}: {err}")
                    continue
                summary["samples"][name][key] = result
                pictures["samples"][f"{name} DiT, guidance {key}"] = _grid(images, 8)
                log(
                    f"minidit.tools.latent_experiment: {name} DiT, guidance {key}, {result['num_samples']} "
                    f"samples: FID "
                    f"{result['fid']:.2f}, class accuracy {result['class_accuracy']:.3f}, precision "
                    f"{result['precision']:.3f}, recall {result['recall']:.3f}"
                )
                save("sampling")
        phase_done("sample_and_score", t0)
    except Exception as err:  # keep what was measured: results.json says where and why the run stopped
        summary["error"] = f"{type(err).__name__}: {err} (in phase {summary['status']!r})"
        summary["traceback"] = traceback.format_exc()[-4000:]
        log(
            f"minidit.tools.latent_experiment: stopped by an error in phase {summary['status']!r}:\n"
            f"{summary['traceback']}"
        )

    # figures: never lose the numbers to a plot
    try:
        summary["figures"] = _figures(out_dir, summary, pictures)
    except Exception as err:  # noqa: BLE001
        summary["figures"] = []
        log(f"minidit.tools.latent_experiment: figures failed ({type(err).__name__}: {err})")
    save("failed" if "error" in summary else "done")
    log(
        f"minidit.tools.latent_experiment: wrote {out_dir / 'results.json'} and {', '.join(summary['figures'])} "
        f"in {summary['wall_seconds']['total']:.0f} s on {summary['device_name']}"
    )
    return summary


def format_table(summary: dict) -> str:
    """The comparison as aligned text."""
    lines = [
        f"{'model':<8}{'tokens':>7}{'Gflops':>8}{'steps':>8}{'img/s':>9}{'cfg':>5}{'FID':>8}{'acc':>7}"
        f"{'prec':>7}{'recall':>7}"
    ]
    for name, m in summary.get("models", {}).items():
        for scale, r in summary.get("samples", {}).get(name, {}).items():
            if "error" in r:
                lines.append(f"{name:<8} guidance {scale}: {r['error']}")
                continue
            lines.append(
                f"{name:<8}{m['tokens_per_image']:>7}{m['gflops']:>8.3f}{m.get('steps', 0):>8}"
                f"{m.get('img_per_s') or 0:>9.0f}{scale:>5}{r['fid']:>8.2f}{r['class_accuracy']:>7.3f}"
                f"{r['precision']:>7.3f}{r['recall']:>7.3f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """python -m minidit.tools.latent_experiment --out DIR [--minutes 8] [--quick] [--work-dir DIR] [--device D]."""
    parser = argparse.ArgumentParser(
        prog="python -m minidit.tools.latent_experiment", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder for results.json and the figures")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget of the whole run (default 8)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: tiny models, a few steps, 40 samples per model (default budget 3 min)",
    )
    parser.add_argument("--work-dir", default=None, help="DiT checkpoints (default runs/10_latent_diffusion)")
    parser.add_argument("--num-samples", type=int, default=None, help="per model and guidance scale (default 5000)")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (default: minidit.data.find_data_dir)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    use_course_env()  # MINIDIT_IMPL=student runs your ex17 (and the other exercises) here
    minutes = args.minutes if args.minutes is not None else (3.0 if args.quick else 8.0)
    try:
        if minutes <= 0:
            raise ValueError(f"--minutes must be > 0, got {minutes}")
        values = {"seed": args.seed, "device": args.device}
        if args.num_samples is not None:
            values["num_samples"] = args.num_samples
        cfg = dataclasses.replace(PRESETS["quick" if args.quick else "gpu"], **values)
        find_data_dir(args.data_dir)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    command = "python -m minidit.tools.latent_experiment " + " ".join(sys.argv[1:] if argv is None else argv)
    work_dir = args.work_dir or ("runs/10_latent_diffusion" + ("_quick" if args.quick else ""))
    summary = run(cfg, args.out, minutes, work_dir, command, args.data_dir)
    print(format_table(summary))
    return 1 if "error" in summary else 0


if __name__ == "__main__":
    sys.exit(main())
