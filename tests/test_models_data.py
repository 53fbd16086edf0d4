"""Dataset readers on tiny generated files and broken ones; augmentation; the real data if present."""

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from models.data import (FASHION_MNIST_DIR, Augment, DatasetError, batches, load_cifar,
                         load_dataset, load_fashion_mnist)




def write_idx(path, arr, magic_dtype=0x08):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, magic_dtype, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.tobytes())


def make_fmnist(root, n=6, split="train"):
    names = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
             "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}[split]
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 28, 28))
    labels = np.arange(n) % 10
    write_idx(root / names[0], imgs)
    write_idx(root / names[1], labels)
    return imgs, labels


def test_fashion_mnist_reader(tmp_path):
    imgs, labels = make_fmnist(tmp_path, 6, "test")
    ds = load_fashion_mnist(tmp_path, "test")
    assert ds.images.shape == (6, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert np.array_equal(ds.images[:, 0].numpy(), imgs)
    assert ds.labels.tolist() == labels.tolist()


def test_fashion_mnist_missing_names_expected_files(tmp_path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*train-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path, "train")


def test_fashion_mnist_broken_files(tmp_path):
    make_fmnist(tmp_path, 4)
    img = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(img.read_bytes())
    with gzip.open(img, "wb") as f:
        f.write(raw[:-5])
    with pytest.raises(DatasetError, match="field 'data'"):
        load_fashion_mnist(tmp_path)
    write_idx(img, np.zeros((4, 28, 28)), magic_dtype=0x0D)
    with pytest.raises(DatasetError, match="field 'magic'"):
        load_fashion_mnist(tmp_path)
    img.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read"):
        load_fashion_mnist(tmp_path)
    write_idx(img, np.zeros((3, 28, 28)))
    with pytest.raises(DatasetError, match="3 images"):
        load_fashion_mnist(tmp_path)


def write_cifar_batch(path, n, label_key="labels", seed=0, classes=10):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key.encode(): list(rng.integers(0, classes, n).tolist())}
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_cifar10_reader(tmp_path):
    parts = [write_cifar_batch(tmp_path / f"data_batch_{i}", 3, seed=i) for i in range(1, 6)]
    write_cifar_batch(tmp_path / "test_batch", 2, seed=9)
    ds = load_cifar(tmp_path, "train", 10)
    assert ds.images.shape == (15, 3, 32, 32)
    assert np.array_equal(ds.images[3].numpy().reshape(-1), parts[1][b"data"][0])
    assert ds.labels[:3].tolist() == parts[0][b"labels"]
    assert len(load_cifar(tmp_path, "test", 10)) == 2


def test_cifar100_reader(tmp_path):
    write_cifar_batch(tmp_path / "train", 4, "fine_labels", classes=100)
    ds = load_dataset("cifar100", tmp_path, "train")
    assert ds.classes == 100 and ds.images.shape == (4, 3, 32, 32)


def test_cifar_broken(tmp_path):
    with pytest.raises(DatasetError, match="data_batch_1.*test_batch|data_batch_1"):
        load_cifar(tmp_path, "train", 10)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a CIFAR python batch"):
        load_cifar(tmp_path, "test", 10)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="field 'data'"):
        load_cifar(tmp_path, "test", 10)
    with pytest.raises(DatasetError, match="needs a directory"):
        load_dataset("cifar10", None)


class Evil:
    def __reduce__(self):
        return (os.system, ("touch evil_was_here",))


def test_cifar_reader_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(DatasetError, match="not allowed"):
        load_cifar(tmp_path, "test", 10)
    assert not (tmp_path / "evil_was_here").exists()


def test_augment_crop_flip_cutout():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6) + 1
    y = Augment(pad=2)(x, gen)
    assert y.shape == x.shape
    # every crop is a shifted window of the zero-padded image: its non-zero values are contiguous
    for b in range(2):
        nz = y[b, 0][y[b, 0] != 0]
        assert set(nz.tolist()) <= set(x[b, 0].flatten().tolist())
    f = Augment(flip=True)(x.repeat(16, 1, 1, 1), gen)
    flipped = [(torch.equal(f[i], x[i % 2].flip(-1))) for i in range(32)]
    assert 0 < sum(flipped) < 32
    c = Augment(cutout=2)(x, gen)
    assert ((c == 0).sum(dim=(1, 2, 3)) <= 4).all() and ((c == 0).sum() > 0)
    assert ((c == x) | (c == 0)).all()


def test_batches_are_deterministic_per_seed(tmp_path):
    make_fmnist(tmp_path, 10)
    ds = load_fashion_mnist(tmp_path)
    a = [y.tolist() for _, y in batches(ds, 4, shuffle=True, seed=3)]
    b = [y.tolist() for _, y in batches(ds, 4, shuffle=True, seed=3)]
    assert a == b and sorted(sum(a, [])) == sorted(ds.labels.tolist())


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                    reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (dataset-fashion-mnist)")
def test_real_fashion_mnist():
    test = load_fashion_mnist(None, "test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
