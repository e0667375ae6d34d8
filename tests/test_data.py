"""Tests of minidit.data on small IDX files written here, on broken files, on a download served from a local
folder (these tests can never reach the network), and on the real Fashion-MNIST files when installed."""

from __future__ import annotations

import gzip
import hashlib
import pathlib
import struct

import numpy as np
import pytest
import torch

import minidit.data as data


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Only file:// URLs may be opened, and nothing is found outside tmp_path unless a test says so."""
    real_urlopen = data._urlopen

    def local_only(url, *args, **kwargs):
        if not url.startswith("file://"):
            raise AssertionError(f"a test tried to reach the network: {url}")
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(data, "_urlopen", local_only)
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX format, written from its description: big-endian int32 magic, int32 sizes, then uint8 data."""
    return struct.pack(">i", magic) + b"".join(struct.pack(">i", n) for n in array.shape) + array.tobytes()


def write_split(folder: pathlib.Path, split: str, n: int, seed: int = 0, gz: bool = True):
    """Write n random images (28x28) and labels for a split; return them."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    image_name, label_name = data.FILES[split]
    for name, array, magic in ((image_name, images, 2051), (label_name, labels, 2049)):
        raw = idx_bytes(array, magic)
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return images, labels


@pytest.fixture
def tiny_dir(tmp_path):
    folder = tmp_path / "fmnist"
    folder.mkdir()
    write_split(folder, "train", 7, seed=1)
    write_split(folder, "test", 5, seed=2)
    return folder


# ----------------------------------------------------------------------------- readers and loader


def test_readers_return_what_was_written(tiny_dir):
    images, labels = write_split(tiny_dir, "test", 5, seed=2)
    np.testing.assert_array_equal(data.read_idx_images(tiny_dir / "t10k-images-idx3-ubyte.gz"), images)
    np.testing.assert_array_equal(data.read_idx_labels(tiny_dir / "t10k-labels-idx1-ubyte.gz"), labels)
    raw_dir = tiny_dir / "raw"
    raw_dir.mkdir()
    write_split(raw_dir, "test", 5, seed=2, gz=False)  # plain, uncompressed IDX files work too
    np.testing.assert_array_equal(data.read_idx_images(raw_dir / "t10k-images-idx3-ubyte.gz"), images)


def test_load_pads_to_32_and_keeps_labels(tiny_dir):
    images, labels = write_split(tiny_dir, "train", 7, seed=1)
    ds = data.load_fashion_mnist("train", root=tiny_dir)
    assert ds.split == "train" and len(ds) == 7
    assert ds.images.shape == (7, 1, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (7,) and ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images[:, 0, 2:30, 2:30].numpy(), images)
    border = ds.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0, "padding must be 2 zero pixels on every side"
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert len(data.load_fashion_mnist("test", root=tiny_dir)) == 5
    with pytest.raises(ValueError, match="split"):
        data.load_fashion_mnist("validation", root=tiny_dir)


def test_class_names():
    assert data.CLASS_NAMES == (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


def test_truncated_gzip_names_the_file(tiny_dir):
    path = tiny_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*truncated or corrupt"):
        data.read_idx_images(path)


def test_corrupt_gzip_names_the_file(tiny_dir):
    path = tiny_dir / "train-images-idx3-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[40:60] = bytes(20)  # damage the compressed stream; the gzip header stays valid
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*corrupt"):
        data.load_fashion_mnist("train", root=tiny_dir)


def test_wrong_magic_names_the_file(tiny_dir):
    # A labels file where the images should be: magic 2049 instead of 2051.
    path = tiny_dir / "train-images-idx3-ubyte.gz"
    path.write_bytes((tiny_dir / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz.*magic"):
        data.read_idx_images(path)


def test_payload_shorter_than_header_promises(tiny_dir):
    path = tiny_dir / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">ii", 2049, 10) + bytes(9)))  # promises 10 labels, holds 9
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*truncated"):
        data.read_idx_labels(path)
    path.write_bytes(gzip.compress(b"\x00\x00"))  # not even a header
    with pytest.raises(ValueError, match="header"):
        data.read_idx_labels(path)


def test_image_label_count_mismatch_names_both_files(tiny_dir):
    write_split(tiny_dir, "test", 6, seed=3)
    labels = np.zeros(4, dtype=np.uint8)
    (tiny_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(ValueError, match=r"t10k-images.*6 images.*t10k-labels.*4 labels"):
        data.load_fashion_mnist("test", root=tiny_dir)


def test_label_out_of_range(tiny_dir):
    labels = np.array([0, 1, 2, 3, 10], dtype=np.uint8)
    (tiny_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049)))
    with pytest.raises(ValueError, match="label 10"):
        data.load_fashion_mnist("test", root=tiny_dir)


# ----------------------------------------------------------------------------- where the data is looked for


def test_lookup_order(tiny_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    write_split(other, "train", 3)
    write_split(other, "test", 3)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", other)
    assert data.find_data_dir() == other  # the system folder
    monkeypatch.setenv(data.ENV_VAR, str(tiny_dir))
    assert data.find_data_dir() == tiny_dir  # $MINIDIT_DATA_DIR beats it
    assert data.find_data_dir(other) == other  # an explicit root beats both
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="MINIDIT_DATA_DIR"):
        data.find_data_dir()  # a wrong explicit choice is reported, not silently replaced


def test_cache_dir_is_used_after_a_download(tiny_dir, monkeypatch):
    cache = data.default_cache_dir()
    cache.mkdir(parents=True)
    for path in tiny_dir.iterdir():
        (cache / path.name).write_bytes(path.read_bytes())
    assert data.find_data_dir() == cache


def test_nothing_found_says_how_to_get_the_data():
    with pytest.raises(FileNotFoundError) as info:
        data.find_data_dir()
    message = str(info.value)
    for hint in ("apt-get install dataset-fashion-mnist", "MINIDIT_DATA_DIR", "download=True"):
        assert hint in message
    with pytest.raises(FileNotFoundError):
        data.load_fashion_mnist("test")  # download=False never downloads


# ----------------------------------------------------------------------------- download from a local "server"


@pytest.fixture
def local_server(tiny_dir, monkeypatch):
    """Serve tiny_dir's files through file:// URLs, with their md5 sums as the published checksums."""
    monkeypatch.setattr(data, "BASE_URL", tiny_dir.as_uri() + "/")
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in tiny_dir.iterdir()}
    monkeypatch.setattr(data, "MD5", sums)
    return tiny_dir


def test_download_verifies_and_loads(local_server, tmp_path):
    ds = data.load_fashion_mnist("test", download=True)
    cache = data.default_cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(data.MD5)  # no temporary files left
    assert str(cache).startswith(str(tmp_path)) and len(ds) == 5
    dest = data.download_fashion_mnist(tmp_path / "elsewhere")
    assert data.find_data_dir(dest) == dest


def test_download_with_bad_checksum_leaves_nothing(local_server, monkeypatch, tmp_path):
    monkeypatch.setitem(data.MD5, "train-labels-idx1-ubyte.gz", "0" * 32)
    dest = tmp_path / "dl"
    with pytest.raises(ValueError, match="md5"):
        data.download_fashion_mnist(dest)
    assert not (dest / "train-labels-idx1-ubyte.gz").exists()
    assert not any(p.name.endswith(".part") for p in dest.iterdir())


def test_failed_download_leaves_no_partial_file(local_server, monkeypatch, tmp_path):
    class Broken:
        """A response that delivers one chunk and then fails, like a dropped connection."""

        def __init__(self):
            self.calls = 0

        def read(self, size):
            self.calls += 1
            if self.calls > 1:
                raise ConnectionResetError("connection dropped")
            return b"partial data"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(data, "_urlopen", lambda url, timeout=None: Broken())
    dest = tmp_path / "dl"
    with pytest.raises(OSError, match="could not download .*gz .connection dropped") as info:
        data.download_fashion_mnist(dest)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert list(dest.iterdir()) == []


def test_download_offline_names_the_url_and_the_fix(monkeypatch):
    """No network: the error says which URL failed and how to get the files without one."""
    import urllib.error

    def offline(url, timeout=None):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(data, "_urlopen", offline)
    with pytest.raises(OSError) as info:
        data.load_fashion_mnist("train", download=True)
    message = str(info.value)
    assert data.BASE_URL + "train-images-idx3-ubyte.gz" in message and "name resolution" in message
    assert "apt-get install dataset-fashion-mnist" in message and data.ENV_VAR in message


# ----------------------------------------------------------------------------- ranges, flips and batches


def test_model_range_round_trip():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = data.to_model_range(x)
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    torch.testing.assert_close(y, x.float() / 127.5 - 1)
    assert torch.equal(data.from_model_range(y), x)
    assert torch.equal(data.from_model_range(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        data.to_model_range(y)


def test_random_hflip_flips_whole_images_about_half_the_time():
    x = torch.rand(400, 1, 4, 4)
    out = data.random_hflip(x, generator=torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ flipped), "each image must be either untouched or mirrored left-right"
    assert 150 < flipped.sum() < 250
    with pytest.raises(ValueError):
        data.random_hflip(x[0])


def test_sample_batch_pairs_images_with_their_labels():
    # Each image is filled with 20 * its label, so the pairing can be checked after shuffling.
    labels = torch.arange(10).repeat(3)
    images = (labels * 20).to(torch.uint8).reshape(-1, 1, 1, 1).expand(-1, 1, 32, 32).clone()
    ds = data.FashionMNIST(images, labels, "train")
    x, y = data.sample_batch(ds, 64, generator=torch.Generator().manual_seed(0), flip=True)
    assert x.shape == (64, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0, 0, 0], (y * 20).float() / 127.5 - 1)
    assert ds.to("cpu").images.device.type == "cpu"
    with pytest.raises(ValueError):
        data.sample_batch(ds, 0)


def test_dataset_checks_its_tensors():
    with pytest.raises(ValueError):
        data.FashionMNIST(torch.zeros(3, 1, 32, 32), torch.zeros(3, dtype=torch.long), "train")  # not uint8
    with pytest.raises(ValueError):
        data.FashionMNIST(torch.zeros(3, 1, 32, 32, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), "train")


# ----------------------------------------------------------------------------- the real files


@pytest.mark.data
def test_real_fashion_mnist(fashion_mnist_dir):
    test = data.load_fashion_mnist("test", root=fashion_mnist_dir)
    assert test.images.shape == (10_000, 1, 32, 32)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert test.images[:, :, :2].sum() == 0 and test.images[:, :, :, -2:].sum() == 0
    assert 70 < test.images[:, :, 2:30, 2:30].float().mean() < 76  # Fashion-MNIST's mean pixel is about 73
    train = data.load_fashion_mnist("train", root=fashion_mnist_dir)
    assert len(train) == 60_000 and torch.bincount(train.labels).tolist() == [6000] * 10
