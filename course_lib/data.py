r"""Data for the experiments: scikit-learn's bundled digits (offline default) and an optional MNIST loader.

The default data set is ``sklearn.datasets.load_digits``: 1797 grey-scale 8x8 images of the digits 0-9 with
integer intensities 0..16, shipped inside scikit-learn, so nothing is downloaded. :func:`get_digits` splits it
into train/valid with a fixed seed and normalizes *both* parts with the **training** set's mean and standard
deviation (using the validation statistics would leak information about it):

.. math::  x' = (x - \mu_{train}) / \sigma_{train}

Images come as float32 tensors ``(N, 1, 8, 8)`` (N, channel, height, width), labels as int64 ``(N,)``.
:func:`digits_dataloaders` wraps them into PyTorch ``DataLoader``\ s (taught in Q2-Q5, Q9).

:func:`load_mnist` reads real MNIST / Fashion-MNIST from IDX files for users with internet: it downloads only
when called with ``download=True``, caches the files under ``root``, and checks their MD5 checksums.
The tests and CI never use the network; they exercise :func:`read_idx` and :func:`load_mnist` on small IDX files
they write themselves.
"""
from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .seed import course_seed

__all__ = ["Split", "DataLoaders", "get_digits", "digits_dataloaders", "dataloaders_from_split",
           "read_idx", "write_idx", "load_mnist", "MNIST_FILES"]


@dataclass
class Split:
    """Normalized train/valid tensors and the training statistics that normalized them."""

    x_train: Tensor  # (N_train, 1, H, W) float32
    y_train: Tensor  # (N_train,) int64
    x_valid: Tensor
    y_valid: Tensor
    mean: float  # training-set mean of the raw pixel values
    std: float  # training-set standard deviation of the raw pixel values


@dataclass
class DataLoaders:
    """The two loaders a :class:`course_lib.training.Learner` needs."""

    train: DataLoader
    valid: DataLoader


def _normalized_split(images: np.ndarray, labels: np.ndarray, valid_fraction: float, seed: int) -> Split:
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"expected valid_fraction in (0, 1), got {valid_fraction}")
    n = len(images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_valid = int(round(n * valid_fraction))
    valid_idx, train_idx = order[:n_valid], order[n_valid:]
    x = torch.as_tensor(images, dtype=torch.float32).reshape(n, 1, *images.shape[-2:])
    y = torch.as_tensor(labels, dtype=torch.int64)
    x_train = x[train_idx]
    mean, std = x_train.mean().item(), x_train.std().item()  # training statistics only
    return Split((x_train - mean) / std, y[train_idx], (x[valid_idx] - mean) / std, y[valid_idx], mean, std)


def get_digits(valid_fraction: float = 0.2, seed: int | None = None) -> Split:
    """scikit-learn's 8x8 digits, split with ``seed`` and normalized with the training statistics.

    Returns a :class:`Split` with ``x_train (1438, 1, 8, 8)``, ``x_valid (359, 1, 8, 8)`` for the default
    ``valid_fraction=0.2``; the same seed always gives the same split. The default seed is
    ``course_seed(42)``: ``COURSE_SEED`` (:mod:`course_lib.seed`) draws another split too. After normalization the
    training
    images have mean 0 and std 1 (over all pixels); the validation images only approximately.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    return _normalized_split(digits.images, digits.target, valid_fraction, course_seed(42) if seed is None else seed)


def dataloaders_from_split(split: Split, batch_size: int = 64, drop_last: bool = True,
                           valid_batch_size: int | None = None) -> DataLoaders:
    """Training loader (shuffled, ``drop_last``) and validation loader (in order, every sample) of a split.

    ``drop_last=True`` drops the last, smaller training batch. It matters for BatchNorm: with 1438 images
    and ``batch_size=1437`` the last batch holds one image, and BatchNorm in training mode raises
    ``ValueError: Expected more than 1 value per channel`` on a 1x1 feature map (its variance over one value
    is meaningless, Q4). The validation loader keeps every sample: in ``eval()`` mode BatchNorm uses its
    running statistics, so any batch size is fine.

    Shuffling draws from PyTorch's global random generator, so :func:`course_lib.seed.set_seed` makes
    the batch order reproducible together with the model's initialization.
    """
    if batch_size < 1:
        raise ValueError(f"expected batch_size >= 1, got {batch_size}")
    train = DataLoader(TensorDataset(split.x_train, split.y_train), batch_size=batch_size, shuffle=True,
                       drop_last=drop_last)
    valid = DataLoader(TensorDataset(split.x_valid, split.y_valid), batch_size=valid_batch_size or 2 * batch_size,
                       shuffle=False)
    return DataLoaders(train, valid)


def digits_dataloaders(batch_size: int = 64, drop_last: bool = True, valid_fraction: float = 0.2,
                       seed: int | None = None) -> DataLoaders:
    """:func:`get_digits` wrapped by :func:`dataloaders_from_split` (see there for ``drop_last``)."""
    return dataloaders_from_split(get_digits(valid_fraction, seed), batch_size, drop_last)


# ----------------------------------------------------------------------------------------------------------
# Optional: real MNIST / Fashion-MNIST in the IDX format (needs internet once, then cached)

# IDX header: two zero bytes, a type code, the number of dimensions, then one big-endian int32 per dimension.
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

_MIRRORS = {"mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "fashion": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"}
# MD5 checksums of the published .gz files (the same values torchvision checks)
MNIST_FILES = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}


def read_idx(path: str | Path) -> np.ndarray:
    """Array stored in an IDX file (``.gz`` compressed or not), e.g. ``(60000, 28, 28)`` uint8 images."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise ValueError(f"expected an IDX file (bytes 00 00, a type code in {sorted(_IDX_TYPES)}, ndim), "
                         f"got header {data[:4].hex()} in {path}")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * ndim:]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"expected {expected} data bytes for shape {shape}, got {len(body)} in {path}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an IDX file, gzipped if ``.gz``."""
    path, array = Path(path), np.asarray(array)
    codes = {np.dtype(t).newbyteorder("=").str: code for code, t in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"expected one of the IDX dtypes {sorted(codes)}, got {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.dtype(_IDX_TYPES[code])).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, md5: str) -> None:
    partial = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    got = _md5(partial)
    if got != md5:
        partial.unlink()
        raise ValueError(f"checksum mismatch for {url}: expected MD5 {md5}, got {got}")
    partial.replace(target)


def load_mnist(root: str | Path, kind: str = "mnist", download: bool = False, valid_fraction: float | None = None,
               seed: int = 42, base_url: str | None = None, checksums: dict[str, str] | None = None) -> Split:
    """MNIST (``kind="mnist"``) or Fashion-MNIST (``kind="fashion"``) as a normalized :class:`Split`.

    Looks for the four ``*-idx?-ubyte.gz`` files in ``root/kind/``; missing ones are downloaded from
    ``base_url`` only if ``download=True`` (otherwise ``FileNotFoundError`` says what to do). Every file,
    cached or downloaded, must match its MD5 in ``checksums`` (default: :data:`MNIST_FILES`).
    ``valid_fraction=None`` uses the official 10 000-image test set as validation set; a fraction splits the
    training set instead. Images ``(N, 1, 28, 28)`` float32 normalized with training statistics.
    """
    if kind not in MNIST_FILES:
        raise ValueError(f"expected kind in {sorted(MNIST_FILES)}, got {kind!r}")
    checksums = MNIST_FILES[kind] if checksums is None else checksums
    folder = Path(root) / kind
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in checksums.items():
        target = folder / name
        if not target.exists():
            if not download:
                raise FileNotFoundError(f"expected {target}; call load_mnist(..., download=True) once with internet "
                                        "access to fetch and cache it")
            _fetch((base_url or _MIRRORS[kind]) + name, target, md5)
        elif _md5(target) != md5:
            raise ValueError(f"checksum mismatch for cached {target}: expected MD5 {md5}, got {_md5(target)}; "
                             "delete the file to download it again")
    train_images, train_labels = (read_idx(folder / f"train-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3),
                                                                                                 ("labels", 1)))
    if valid_fraction is not None:
        return _normalized_split(train_images, train_labels, valid_fraction, seed)
    test_images, test_labels = (read_idx(folder / f"t10k-{k}-idx{d}-ubyte.gz") for k, d in (("images", 3),
                                                                                             ("labels", 1)))
    x_train = torch.as_tensor(train_images, dtype=torch.float32).unsqueeze(1)
    mean, std = x_train.mean().item(), x_train.std().item()
    x_valid = torch.as_tensor(test_images, dtype=torch.float32).unsqueeze(1)
    return Split((x_train - mean) / std, torch.as_tensor(train_labels, dtype=torch.int64), (x_valid - mean) / std,
                 torch.as_tensor(test_labels, dtype=torch.int64), mean, std)
