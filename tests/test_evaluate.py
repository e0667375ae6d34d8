"""python -m minidit.evaluate: reading samples (npy, npz, PNG folders), scoring a checkpoint, the JSON it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from minidit.evaluation import evaluate


def _pixels(n=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32), dtype=np.uint8)


def test_to_images_accepts_the_usual_layouts():
    px = _pixels()
    expected = torch.from_numpy(px).float()[:, None] / 127.5 - 1
    for array in (px, px[:, None], px[..., None]):
        torch.testing.assert_close(evaluate.to_images(array), expected)
    floats = expected.numpy()
    torch.testing.assert_close(evaluate.to_images(floats), expected)
    with pytest.raises(ValueError, match="shape"):
        evaluate.to_images(np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        evaluate.to_images(px.astype(np.int32))


def test_load_samples_from_npy_npz_and_png_folders(tmp_path):
    from minidit.sample import write_png

    px, labels = _pixels(), np.arange(12) % 10
    expected = torch.from_numpy(px).float()[:, None] / 127.5 - 1
    np.save(tmp_path / "s.npy", px)
    images, got_labels = evaluate.load_samples(tmp_path / "s.npy")
    torch.testing.assert_close(images, expected)
    assert got_labels is None
    np.savez(tmp_path / "s.npz", images=px[:, None], labels=labels)  # the layout minidit.sample --npz writes
    images, got_labels = evaluate.load_samples(tmp_path / "s.npz")
    torch.testing.assert_close(images, expected)
    assert got_labels.tolist() == labels.tolist()
    for i, (p, y) in enumerate(zip(px, labels)):  # ImageFolder layout: the sub-folder is the class
        (tmp_path / "png" / str(y)).mkdir(parents=True, exist_ok=True)
        write_png(tmp_path / "png" / str(y) / f"{i:03d}.png", p)
    images, got_labels = evaluate.load_samples(tmp_path / "png")
    order = sorted(range(12), key=lambda i: (str(labels[i]), f"{i:03d}"))  # rglob + sort: by folder, then file
    torch.testing.assert_close(images, expected[order])
    assert got_labels.tolist() == labels[order].tolist()
    np.savez(tmp_path / "bad.npz", pictures=px)
    with pytest.raises(ValueError, match="no array named"):
        evaluate.load_samples(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="expected a .npy"):
        evaluate.load_samples(tmp_path / "s.txt")


def test_cli_scores_real_images_and_writes_json(fashion_mnist_dir, tmp_path):
    from minidit.data import load_fashion_mnist

    test = load_fashion_mnist("test", fashion_mnist_dir)
    np.savez(tmp_path / "real.npz", images=test.images[-300:].numpy(), labels=test.labels[-300:].numpy())
    out = tmp_path / "scores.json"
    assert (
        evaluate.main(
            [
                "--samples",
                str(tmp_path / "real.npz"),
                "--out",
                str(out),
                "--kid-subsets",
                "3",
                "--device",
                "cpu",
                "--data-dir",
                str(fashion_mnist_dir),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["num_samples"] == report["num_reference"] == report["num_floor"] == 300
    for part in ("samples", "real_floor"):
        assert set(report[part]) >= {
            "fid",
            "sfid",
            "inception_score",
            "kid",
            "precision",
            "recall",
            "density",
            "coverage",
            "class_accuracy",
            "per_class_fid",
        }
    # real test images are as good as the floor (which is other real test images)
    assert report["samples"]["fid"] < 3 * report["real_floor"]["fid"] + 2
    assert report["samples"]["class_accuracy"] > 0.8
    assert report["evaluator"]["sha256"] and report["device"] == "cpu"
    assert not list(tmp_path.glob(".*.tmp")), "the JSON is written through a temporary file"


def test_cli_samples_a_checkpoint(fashion_mnist_dir, tmp_path, capsys):
    from minidit import checkpoint
    from minidit.model import create_model

    torch.manual_seed(0)
    model = create_model("DiT-T/4", input_size=32, in_channels=1, num_classes=10)
    ckpt = checkpoint.save_weights(tmp_path / "tiny.safetensors", model, model, {"step": 7})
    out = tmp_path / "scores.json"
    assert (
        evaluate.main(
            [
                "--ckpt",
                str(ckpt),
                "--num-samples",
                "20",
                "--sampler",
                "ddim",
                "--steps",
                "2",
                "--cfg-scale",
                "1.5",
                "--kid-subsets",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--save-samples",
                str(tmp_path / "s.npz"),
                "--data-dir",
                str(fashion_mnist_dir),
            ]
        )
        == 0
    )
    assert f"loaded {ckpt} (step 7, EMA weights)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["ckpt"] == str(ckpt) and report["cfg_scale"] == 1.5 and report["num_samples"] == 20
    assert report["samples"]["fid"] > report["real_floor"]["fid"], "an untrained model is worse than real data"
    images, labels = evaluate.load_samples(tmp_path / "s.npz")
    assert images.shape == (20, 1, 32, 32) and labels.tolist() == [i % 10 for i in range(20)]


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        evaluate.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    return err


def test_cli_refuses_wrong_ranges_labels_and_outputs(tmp_path, capsys):
    """Checked when the samples are read, before the reference data or the evaluator is touched."""
    px = _pixels(n=10)
    floats01 = px.astype(np.float32) / 255  # [0, 1]: scored as is, it would give a meaningless FID
    cases = {
        "unit.npz": (dict(images=floats01), r"x \* 2 - 1"),
        "255.npz": (dict(images=px.astype(np.float32)), "uint8"),
        "far.npz": (dict(images=px, labels=np.arange(20, 30)), r"\[0, 9\].*\[20, 29\]"),
        "floaty.npz": (dict(images=px, labels=np.arange(10) + 0.5), "integer class indices"),
        "short.npz": (dict(images=px, labels=np.arange(9)), r"shape \(10,\)"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        err = _cli_error(capsys, ["--samples", str(tmp_path / name), "--out", str(tmp_path / "s.json")])
        assert name in err and __import__("re").search(message, err), err
    np.savez(tmp_path / "ok.npz", images=px)
    ok = str(tmp_path / "ok.npz")
    assert "is an existing folder" in _cli_error(capsys, ["--samples", ok, "--out", str(tmp_path)])
    assert "does not exist" in _cli_error(capsys, ["--samples", str(tmp_path / "missing.npz")])
    assert "--num-samples must be >= 1" in _cli_error(capsys, ["--ckpt", "x", "--num-samples", "0"])
    assert "--kid-subsets" in _cli_error(capsys, ["--samples", str(tmp_path / "ok.npz"), "--kid-subsets", "0"])
    assert not (tmp_path / "s.json").exists()


def test_png_folders_with_foreign_class_names_are_refused(tmp_path):
    from minidit.sample import write_png

    (tmp_path / "png" / "12").mkdir(parents=True)
    write_png(tmp_path / "png" / "12" / "a.png", _pixels(n=1)[0])
    with pytest.raises(ValueError, match=r"class folders.*\[0, 9\]"):
        evaluate.load_samples(tmp_path / "png")
