"""Datasets without torchvision: Fashion-MNIST (IDX ``.gz``) and CIFAR-10/100 (python pickle batches),
a batch iterator with seeded shuffling, and batch-wise augmentation (random crop with padding,
horizontal flip, Cutout).

Images are kept as uint8 ``[N, C, H, W]`` tensors and normalised per batch, so a whole dataset costs
its raw size in memory (Fashion-MNIST 47 MB, CIFAR-10 150 MB).
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sim.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: per-channel mean and std of the training sets (spec/snn.md section 5 for CIFAR).
NORMALISATION = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4913, 0.4821, 0.4465), (0.2470, 0.2434, 0.2615)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2673, 0.2564, 0.2762)),
}


#: Largest IDX file read (uncompressed).
MAX_IDX_BYTES = 256 * 2**20


class DatasetError(UserError):
    """A dataset file is missing or malformed. The message names the file and the expected files."""


@dataclass
class Dataset:
    """An in-memory image dataset.

    Attributes
    ----------
    images : torch.Tensor
        uint8 ``[N, C, H, W]``.
    labels : torch.Tensor
        int64 ``[N]``.
    name : str
        Key of :data:`NORMALISATION`.
    classes : int
    """

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all if ``n`` is None or larger than the set)."""
        if n is None or n >= len(self):
            return self
        return Dataset(self.images[:n], self.labels[:n], self.name, self.classes)


def _read_idx(path: Path, expect_dims: int, expected: str) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) of unsigned bytes."""
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected {expected})")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read(MAX_IDX_BYTES + 1)  # bounded: a small .gz may inflate without end
        if len(raw) > MAX_IDX_BYTES:
            raise DatasetError(f"{path}: field 'data': more than {MAX_IDX_BYTES} bytes (Fashion-MNIST's "
                               f"largest file has 47 040 016)")
    except (OSError, EOFError, zlib.error) as exc:  # missing, truncated or corrupted gzip stream
        raise DatasetError(f"{path}: cannot read ({type(exc).__name__}: {exc}); expected {expected}") from None
    if len(raw) < 4:
        raise DatasetError(f"{path}: field 'magic': file too short ({len(raw)} bytes)")
    zero, dtype, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype != 0x08 or ndim != expect_dims:
        raise DatasetError(
            f"{path}: field 'magic': 0x{raw[:4].hex()} is not an IDX uint8 file with {expect_dims} dims"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: field 'dims': header truncated")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    size = int(np.prod(dims))
    if len(raw) - header != size:
        raise DatasetError(
            f"{path}: field 'data': {len(raw) - header} bytes, dims {dims} need {size}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(root=None, split: str = "train") -> Dataset:
    """Fashion-MNIST from the four IDX ``.gz`` files in ``root`` (default: the Debian package's dir).

    Raises
    ------
    DatasetError
        If a file is missing, truncated or not IDX, or images and labels disagree in count.
    """
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    img_name, lbl_name = FASHION_MNIST_FILES[split]
    expected = f"{img_name} and {lbl_name} in {root} (Debian package dataset-fashion-mnist)"
    images = _read_idx(root / img_name, 3, expected)
    if images.shape[1:] != (28, 28):  # the networks are built for the format's 28 x 28 images
        raise DatasetError(f"{root / img_name}: field 'dims': images are {images.shape[1]} x {images.shape[2]}, "
                           f"Fashion-MNIST images are 28 x 28")
    labels = _read_idx(root / lbl_name, 1, expected)
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{root / lbl_name}: field 'count': {labels.shape[0]} labels for {images.shape[0]} images"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{root / lbl_name}: field 'label': value {labels.max()} > 9")
    imgs = torch.from_numpy(images.copy()).unsqueeze(1)
    return Dataset(imgs, torch.from_numpy(labels.astype(np.int64)), "fashion-mnist", 10)


class _NoCodeUnpickler(pickle.Unpickler):
    """CIFAR batches are plain dicts of bytes, lists and numpy arrays; nothing else may be built."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def _load_cifar_batch(path: Path, label_key: str, expected: str):
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected {expected})")
    try:
        with open(path, "rb") as f:
            d = _NoCodeUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # any unpickling failure is a malformed file
        raise DatasetError(f"{path}: not a CIFAR python batch ({exc})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: field 'root': expected a dict, got {type(d).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
    for key in ("data", label_key):
        if key not in d:
            raise DatasetError(f"{path}: field '{key}': missing (keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(
            f"{path}: field 'data': expected uint8 [N, 3072], got {data.dtype} {list(data.shape)}"
        )
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"{path}: field '{label_key}': {labels.shape[0]} labels for {data.shape[0]} images"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(root, split: str = "train", classes: int = 10) -> Dataset:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) python batches.

    ``root`` is the directory holding the batch files (e.g. ``cifar-10-batches-py``).

    Raises
    ------
    DatasetError
        If a file is missing or malformed (the message names it and the expected files).
    """
    root = Path(root)
    if classes == 10:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, name = "labels", "cifar10"
    elif classes == 100:
        files, label_key, name = [split], "fine_labels", "cifar100"
    else:
        raise ValueError(f"classes must be 10 or 100, got {classes!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    expected = f"{', '.join(files)} in {root} (CIFAR-{classes} python version)"
    parts = [_load_cifar_batch(root / f, label_key, expected) for f in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetError(f"{root}: field '{label_key}': label out of range 0..{classes - 1}")
    return Dataset(torch.from_numpy(data.copy()), torch.from_numpy(labels), name, classes)


def load_dataset(name: str, root=None, split: str = "train") -> Dataset:
    """Load ``fashion-mnist``, ``cifar10`` or ``cifar100`` (CIFAR needs ``root``)."""
    if name == "fashion-mnist":
        return load_fashion_mnist(root, split)
    if name in ("cifar10", "cifar100"):
        if root is None:
            raise DatasetError(f"--data: dataset {name} needs a directory with the python batches")
        return load_cifar(root, split, 10 if name == "cifar10" else 100)
    raise DatasetError(f"--dataset: unknown dataset {name!r} (fashion-mnist, cifar10, cifar100)")


@dataclass(frozen=True)
class Augment:
    """Batch augmentation applied to uint8 images before normalisation.

    Parameters
    ----------
    pad : int
        Random crop back to the original size after zero padding by ``pad`` (0 = off).
    flip : bool
        Random horizontal flip with probability 0.5.
    cutout : int
        Side of a zeroed square at a random centre (0 = off); the square may leave the image.
    """

    pad: int = 0
    flip: bool = False
    cutout: int = 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        B, C, H, W = x.shape
        if self.pad:
            p = self.pad
            xp = torch.nn.functional.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (B,), generator=gen)
            ox = torch.randint(0, 2 * p + 1, (B,), generator=gen)
            rows = (oy[:, None] + torch.arange(H))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(W))[:, None, None, :]
            b = torch.arange(B)[:, None, None, None]
            c = torch.arange(C)[None, :, None, None]
            x = xp[b, c, rows, cols]
        if self.flip:
            f = torch.rand(B, generator=gen) < 0.5
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
        if self.cutout:
            cy = torch.randint(0, H, (B,), generator=gen)[:, None, None]
            cx = torch.randint(0, W, (B,), generator=gen)[:, None, None]
            h = self.cutout // 2
            ys = torch.arange(H)[None, :, None]
            xs = torch.arange(W)[None, None, :]
            hole = (ys >= cy - h) & (ys < cy - h + self.cutout) & (xs >= cx - h) & (xs < cx - h + self.cutout)
            x = x * (~hole).unsqueeze(1).to(x.dtype)
        return x


def normalise(x: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float, scaled to [0, 1] and standardised per channel."""
    mean, std = NORMALISATION[name]
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def batches(ds: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            augment: Augment | None = None):
    """Yield normalised ``(images, labels)`` batches; the order depends only on ``seed``.

    Training passes ``seed = base_seed * 1000 + epoch`` so an epoch resumed after an interruption
    sees the same order and augmentation as the one that was interrupted.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(ds)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        idx = order[i : i + batch_size]
        x = ds.images[idx]
        if augment is not None:
            x = augment(x, gen)
        yield normalise(x, ds.name), ds.labels[idx]
