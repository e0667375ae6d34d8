"""The evaluator: its three feature views, the sha256 check at load time, the training record."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from minidit.evaluation import evaluator as ev


def test_feature_views_have_the_documented_shapes():
    model = ev.Evaluator().eval()
    feats = model.features(torch.rand(3, 1, 32, 32) * 2 - 1)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"pool": (3, 256), "spatial": (3, 512), "logits": (3, 10)}
    assert (feats["pool"] >= 0).all(), "pooled features come after a ReLU, like Inception's pool_3"
    torch.testing.assert_close(model(torch.zeros(2, 1, 32, 32)), model.features(torch.zeros(2, 1, 32, 32))["logits"])


def test_augment_moves_but_never_loses_content():
    # Fashion-MNIST's 2-pixel padding means a shift of <= 2 px (and a flip) keeps every pixel of the garment.
    x = torch.full((8, 1, 32, 32), -1.0)
    x[:, :, 2:30, 2:30] = torch.rand(8, 1, 28, 28)
    y = ev.augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    torch.testing.assert_close(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(x, y)


def test_committed_weights_match_their_record():
    info = ev.evaluator_info()
    assert ev.sha256_file(ev.EVALUATOR_PATH) == info["sha256"]
    assert ev.EVALUATOR_PATH.stat().st_size <= 5_000_000, "the evaluator must stay <= 5 MB"
    for key in ("test_accuracy", "device", "torch", "epochs", "wall_time_s", "seed", "command"):
        assert key in info, f"the training record lacks {key!r}"
    model = ev.load_evaluator("cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_recorded_test_accuracy_is_at_least_93_percent():
    info = ev.evaluator_info()
    if info.get("provisional"):
        pytest.xfail(
            f"provisional weights ({info['epochs']} epochs on {info['device']}, test accuracy "
            f"{info['test_accuracy']:.4f}); train the real ones with `{ev.TRAIN_COMMAND}` on a GPU"
        )
    assert info["test_accuracy"] >= 0.93, f"evaluator test accuracy {info['test_accuracy']:.4f} < 0.93"


def test_recorded_accuracy_is_what_the_weights_give(fashion_mnist_dir):
    from minidit.data import load_fashion_mnist, to_model_range

    test = load_fashion_mnist("test", fashion_mnist_dir)
    acc = ev.accuracy(ev.load_evaluator("cpu"), to_model_range(test.images[:2000]), test.labels[:2000])
    assert acc == pytest.approx(ev.evaluator_info()["test_accuracy"], abs=0.03)


def test_corrupt_or_missing_weights_give_clear_errors(tmp_path):
    path = tmp_path / "evaluator.safetensors"
    with pytest.raises(FileNotFoundError, match="minidit.evaluation.evaluator train"):
        ev.load_evaluator("cpu", path)
    shutil.copy(ev.EVALUATOR_PATH, path)
    with pytest.raises(FileNotFoundError, match="no evaluator record"):
        ev.load_evaluator("cpu", path)
    shutil.copy(ev.EVALUATOR_PATH.with_suffix(".json"), path.with_suffix(".json"))
    ev.load_evaluator("cpu", path)  # an intact copy loads
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip one byte of the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        ev.load_evaluator("cpu", path)


def test_training_entry_point_writes_weights_and_record(fashion_mnist_dir, tmp_path, monkeypatch):
    import minidit.data

    load = minidit.data.load_fashion_mnist

    def small_split(split, root=None, download=False):  # 512 images per split keep this a smoke test
        data = load(split, root)
        return minidit.data.FashionMNIST(data.images[:512], data.labels[:512], split)

    monkeypatch.setattr(ev, "load_fashion_mnist", small_split)  # what the evaluator's training loads
    out = tmp_path / "ev.safetensors"
    assert (
        ev.main(
            [
                "train",
                "--out",
                str(out),
                "--epochs",
                "1",
                "--max-train",
                "256",
                "--batch-size",
                "128",
                "--device",
                "cpu",
                "--data-dir",
                str(fashion_mnist_dir),
            ]
        )
        == 0
    )
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["sha256"] == ev.sha256_file(out) and info["provisional"] is True and info["num_train"] == 256
    assert info["device"] == "cpu" and info["torch"] == torch.__version__ and 0 <= info["test_accuracy"] <= 1
    ev.load_evaluator("cpu", out)
