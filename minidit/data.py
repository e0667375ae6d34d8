"""Fashion-MNIST as one uint8 tensor, zero-padded from 28x28 to 32x32.

DiT trains on 32x32x4 latents of 256x256 images (DiT §3, §5); padding Fashion-MNIST to 32x32 gives
DiT-S/2 the same 256-token sequence. The whole split is kept as a single uint8 tensor (61 MB for the
60k training images) so a GPU run can hold it on the device and draw batches without a DataLoader.

Where the four IDX .gz files are looked for, in order (`find_data_dir`):
    1. an explicit `root` argument,
    2. the folder in $MINIDIT_DATA_DIR,
    3. /usr/share/datasets/fashion-mnist (Debian/Ubuntu package `dataset-fashion-mnist`),
    4. ~/.cache/minidit/fashion-mnist (filled by `download_fashion_mnist`; only with download=True).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from minidit.device import draw

CLASS_NAMES: tuple[str, ...] = (
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
FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The dataset's public location and the md5 sums its authors publish (zalandoresearch/fashion-mnist).
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SYSTEM_DATA_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "MINIDIT_DATA_DIR"
IMAGE_SIZE = 32  # after padding
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # IDX: 0x0803 = uint8 with 3 dims, 0x0801 = uint8 with 1 dim
_urlopen = urllib.request.urlopen  # tests replace this so that they can never reach the network


def default_cache_dir() -> pathlib.Path:
    """~/.cache/minidit/fashion-mnist (or $XDG_CACHE_HOME/minidit/fashion-mnist): where downloads go."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "minidit" / "fashion-mnist"


def _has_files(folder: pathlib.Path) -> bool:
    return all((folder / name).is_file() for pair in FILES.values() for name in pair)


def _missing(folder: pathlib.Path) -> list[str]:
    return [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def find_data_dir(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder holding the four Fashion-MNIST .gz files. Never downloads.

    Args:
        root: a folder to use instead of searching; it must hold the files.
    Raises:
        FileNotFoundError: the files are nowhere; the message says how to get them.
    """
    for folder, origin in (
        (root, "the data folder given (--data-dir / root)"),
        (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"),
    ):
        if folder is not None:  # an explicit choice that is wrong is an error, not a reason to look elsewhere
            folder = pathlib.Path(folder).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{origin} points to {folder}, which is not a folder; give the folder holding {', '.join(MD5)}"
                )
            if not _has_files(folder):
                raise FileNotFoundError(f"{origin} points to {folder}, which lacks {', '.join(_missing(folder))}")
            return folder
    for folder in (SYSTEM_DATA_DIR, default_cache_dir()):
        if _has_files(folder):
            return folder
    raise FileNotFoundError(
        f"Fashion-MNIST not found (looked in {SYSTEM_DATA_DIR} and {default_cache_dir()}). Get it one of three ways:\n"
        f"  1. Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist   (installs into {SYSTEM_DATA_DIR})\n"
        f"  2. put {', '.join(MD5)} in a folder and `export {ENV_VAR}=/that/folder`\n"
        f"  3. load_fashion_mnist(..., download=True) downloads them (30 MB) into {default_cache_dir()}"
    )


def _md5(path: pathlib.Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_fashion_mnist(dest: str | os.PathLike | None = None) -> pathlib.Path:
    """Download the four .gz files from BASE_URL into `dest` (default `default_cache_dir()`), verifying md5.

    Each file is written to a temporary file in `dest` and renamed only once its checksum matches, so a
    failed or interrupted download leaves no partial file behind. Files already present and correct are kept.
    Raises:
        ValueError: a downloaded file does not match its published md5.
        OSError: the download itself failed (no network, HTTP error); the message names the URL and
            the ways to get the files without a network.
    """
    dest = pathlib.Path(dest).expanduser() if dest is not None else default_cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    for name, expected in MD5.items():
        target = dest / name
        if target.is_file() and _md5(target) == expected:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=name + ".", suffix=".part")
        try:
            digest = hashlib.md5()
            with os.fdopen(fd, "wb") as out:
                try:
                    with _urlopen(BASE_URL + name, timeout=60) as response:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            digest.update(chunk)
                            out.write(chunk)
                except OSError as err:  # URLError, HTTPError, timeouts, resets are all OSErrors
                    raise OSError(
                        f"could not download {BASE_URL + name} ({getattr(err, 'reason', err)}). Without a network: "
                        f"sudo apt-get install dataset-fashion-mnist (into {SYSTEM_DATA_DIR}), or put the four "
                        f".gz files in a folder and `export {ENV_VAR}=/that/folder`"
                    ) from err
            if digest.hexdigest() != expected:
                raise ValueError(f"{BASE_URL + name}: md5 {digest.hexdigest()} where {expected} was expected")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a data file may be shared
            os.replace(tmp, target)
        except BaseException:
            pathlib.Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def _read_idx(path: str | os.PathLike, magic: int, ndim: int) -> np.ndarray:
    """Read a (gzipped) IDX file of uint8 with `ndim` dimensions; errors name the file and the problem."""
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # the gzip magic number; plain IDX files are read as they are
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise ValueError(f"{path}: truncated or corrupt gzip file ({e}); delete it and get it again") from e
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and found != magic:
        kind = "images" if magic == _IMAGES_MAGIC else "labels"
        raise ValueError(f"{path}: IDX magic number {found:#010x} where {magic:#010x} ({kind}) was expected")
    if len(raw) < header:
        raise ValueError(f"{path}: only {len(raw)} bytes, shorter than the {header}-byte IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(
            f"{path}: header promises shape {shape} = {int(np.prod(shape))} bytes but the file "
            f"holds {len(raw) - header}; it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Images of an IDX3 file (gzipped or not) -> (N, 28, 28) uint8. Bad file -> ValueError naming it."""
    return _read_idx(path, _IMAGES_MAGIC, 3)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Labels of an IDX1 file (gzipped or not) -> (N,) uint8. Bad file -> ValueError naming it."""
    return _read_idx(path, _LABELS_MAGIC, 1)


@dataclass
class FashionMNIST:
    """One split held as tensors: images (N, 1, 32, 32) uint8, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be (N, 1, H, W) uint8, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> FashionMNIST:
        """A copy on `device` (61 MB for the training split): GPU-resident training draws batches there."""
        return FashionMNIST(self.images.to(device), self.labels.to(device), self.split)


@dataclass
class LatentDataset:
    """Precomputed float inputs already in the model's space, e.g. autoencoder latents (notebook 10).

    images: (N, C, H, W) float32 (the name FashionMNIST uses, so that `sample_batch` and `train` take
    either); labels: (N,) int64. Latents are not images: a horizontal flip of a latent is not the latent
    of the flipped image, so flips are precomputed (`minidit.latent.encode_dataset`), not drawn.
    """

    images: torch.Tensor
    labels: torch.Tensor
    split: str

    def __post_init__(self):
        if not self.images.dtype.is_floating_point or self.images.ndim != 4:
            raise ValueError(f"latents must be (N, C, H, W) float, got {tuple(self.images.shape)} {self.images.dtype}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"{len(self.images)} latents but labels of shape {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: str | torch.device) -> LatentDataset:
        """A copy on `device`."""
        return LatentDataset(self.images.to(device), self.labels.to(device), self.split)


def load_fashion_mnist(
    split: str = "train", root: str | os.PathLike | None = None, download: bool = False
) -> FashionMNIST:
    """Load a split as images (N, 1, 32, 32) uint8, zero-padded 2 px on each side, and labels (N,) int64.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: a folder with the .gz files; None searches as `find_data_dir` does.
        download: if nothing is found, download into `default_cache_dir()` (never happens otherwise).
    """
    if split not in FILES:
        raise ValueError(f"split must be one of {tuple(FILES)}, got {split!r}")
    try:
        folder = find_data_dir(root)
    except FileNotFoundError:
        if not download or root is not None or os.environ.get(ENV_VAR):
            raise
        folder = download_fashion_mnist(default_cache_dir())
    image_file, label_file = (folder / name for name in FILES[split])
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if len(images) != len(labels):
        raise ValueError(f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} labels")
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_file}: images are {images.shape[1:]}, Fashion-MNIST's are (28, 28)")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{label_file}: label {labels.max()} is not a class index 0..{len(CLASS_NAMES) - 1}")
    pad = (IMAGE_SIZE - 28) // 2
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad)))  # (N, 32, 32)
    return FashionMNIST(torch.from_numpy(padded).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), split)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """x: (N, 1, 32, 32) uint8 in [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1), the range DDPM §3.3 assumes."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model_range expects uint8 pixels, got {x.dtype}")
    return x.float() / 127.5 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """x: (N, C, H, W) float in [-1, 1] -> uint8 in [0, 255], clamped and rounded (inverse of `to_model_range`)."""
    return ((x.float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)


def random_hflip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (N, C, H, W) -> same shape, each image mirrored left-right with probability 0.5 (DiT §4 augmentation)."""
    if x.ndim != 4:
        raise ValueError(f"random_hflip expects (N, C, H, W), got shape {tuple(x.shape)}")
    flip = draw(torch.rand, x.shape[0], generator=generator, device=x.device) < 0.5  # (N,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def sample_batch(
    data: FashionMNIST | LatentDataset, batch_size: int, generator: torch.Generator | None = None, flip: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch (drawn with replacement) on whatever device `data` lives on.

    Returns:
        x: (batch_size, C, H, W) float32: pixels in [-1, 1] (FashionMNIST, (N, 1, 32, 32)) or the latents
        as they are (LatentDataset); y: (batch_size,) int64 class labels.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = data.images.device
    idx = draw(torch.randint, len(data), (batch_size,), generator=generator, device=device)  # (N,)
    x = data.images[idx]  # (N, C, H, W)
    x = to_model_range(x) if x.dtype == torch.uint8 else x.float()
    if flip:
        x = random_hflip(x, generator)
    return x, data.labels[idx]
