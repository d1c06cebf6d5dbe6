"""course_lib.data: the offline digits split and loaders, and the IDX/MNIST loader tested on files written here."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import course_lib.norms as cn
from course_lib import data
from course_lib.models import get_cnn_model


@pytest.fixture(scope="module")
def split():
    return data.get_digits()


def test_digits_shapes_dtypes_and_complete_disjoint_split(split):
    assert split.x_train.shape[1:] == (1, 8, 8) and split.x_valid.shape[1:] == (1, 8, 8)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert len(split.x_train) + len(split.x_valid) == 1797
    assert len(split.x_valid) == round(1797 * 0.2)
    raw = torch.as_tensor(load_digits().images, dtype=torch.float32).reshape(-1, 64)
    # undo the normalization: every image must be one of the original ones, each used exactly once
    restored = torch.cat([split.x_train, split.x_valid]).reshape(-1, 64) * split.std + split.mean
    assert torch.allclose(restored, restored.round(), atol=1e-4)
    as_rows = {tuple(r) for r in restored.round().int().tolist()}
    assert as_rows == {tuple(r) for r in raw.int().tolist()}


def test_normalized_with_training_statistics_only(split):
    assert split.x_train.mean().abs() < 1e-5 and (split.x_train.std() - 1).abs() < 1e-5
    raw_train = split.x_train * split.std + split.mean
    assert split.mean == pytest.approx(raw_train.mean().item(), rel=1e-5)
    raw_valid = split.x_valid * split.std + split.mean
    # the validation set is *not* normalized with its own statistics
    assert (split.x_valid.mean() - (raw_valid.mean() - split.mean) / split.std).abs() < 1e-5


def test_split_is_fixed_by_its_seed():
    a, b, c = data.get_digits(seed=1), data.get_digits(seed=1), data.get_digits(seed=2)
    assert torch.equal(a.y_valid, b.y_valid) and torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.y_valid, c.y_valid)
    with pytest.raises(ValueError, match=r"expected valid_fraction in \(0, 1\), got 1.5"):
        data.get_digits(valid_fraction=1.5)


def test_loaders_drop_the_last_partial_batch_and_validate_on_everything(split):
    dls = data.dataloaders_from_split(split, batch_size=100)
    assert all(len(xb) == 100 for xb, _ in dls.train)
    assert len(dls.train) == len(split.x_train) // 100
    assert sum(len(yb) for _, yb in dls.valid) == len(split.y_valid)
    torch.testing.assert_close(torch.cat([yb for _, yb in dls.valid]), split.y_valid)  # in order
    with pytest.raises(ValueError, match="expected batch_size >= 1, got 0"):
        data.dataloaders_from_split(split, batch_size=0)


def test_shuffling_follows_the_global_seed(split):
    dls = data.dataloaders_from_split(split, batch_size=64)
    torch.manual_seed(3)
    first = next(iter(dls.train))[1]
    torch.manual_seed(3)
    assert torch.equal(next(iter(dls.train))[1], first)


def test_a_last_batch_of_one_makes_batchnorm_raise_unless_dropped(split):
    """With 1438 training images and batch_size 1437 the last batch holds one image (Q4)."""
    model = get_cnn_model(norm=cn.BatchNorm2d).train()
    kept = data.dataloaders_from_split(split, batch_size=len(split.x_train) - 1, drop_last=False)
    last_x, _ = list(kept.train)[-1]
    assert len(last_x) == 1
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(last_x)  # the last conv block's map is 1x1: one value per channel
    dropped = data.dataloaders_from_split(split, batch_size=len(split.x_train) - 1, drop_last=True)
    assert [len(xb) for xb, _ in dropped.train] == [len(split.x_train) - 1]


# ----------------------------------------------------------------------------------------------------------
# IDX files and the optional MNIST loader, on small files written by the tests (no network)

@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    path = data.write_idx(tmp_path / f"a-idx3{suffix}", array)
    back = data.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian_as_specified(tmp_path):
    path = data.write_idx(tmp_path / "labels-idx1", np.array([3, 1, 4], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 3, 1, 4])


def test_idx_errors_say_what_was_expected(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="expected an IDX file"):
        data.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(ValueError, match="expected 5 data bytes for shape \\(5,\\), got 2"):
        data.read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="expected one of the IDX dtypes"):
        data.write_idx(tmp_path / "x", np.zeros(3, dtype=np.complex64))


def write_fake_mnist(folder, n_train=12, n_test=5):
    """Four small MNIST-format files; returns {file name: md5}."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8)}
    sums = {}
    for name, array in arrays.items():
        path = data.write_idx(folder / name, array)
        sums[name] = hashlib.md5(path.read_bytes()).hexdigest()
    return arrays, sums


def test_load_mnist_from_cached_files(tmp_path):
    arrays, sums = write_fake_mnist(tmp_path / "mnist")
    split = data.load_mnist(tmp_path, checksums=sums)
    assert split.x_train.shape == (12, 1, 28, 28) and split.x_valid.shape == (5, 1, 28, 28)
    raw = torch.as_tensor(arrays["train-images-idx3-ubyte.gz"], dtype=torch.float32)
    assert split.mean == pytest.approx(raw.mean().item()) and split.std == pytest.approx(raw.std().item())
    torch.testing.assert_close(split.y_valid, torch.as_tensor(arrays["t10k-labels-idx1-ubyte.gz"], dtype=torch.int64))
    by_fraction = data.load_mnist(tmp_path, checksums=sums, valid_fraction=0.25)
    assert len(by_fraction.x_valid) == 3 and len(by_fraction.x_train) == 9


def test_load_mnist_never_downloads_unless_asked(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_mnist(tmp_path, kind="fashion")
    with pytest.raises(ValueError, match="expected kind in \\['fashion', 'mnist'\\], got 'kmnist'"):
        data.load_mnist(tmp_path, kind="kmnist")


def test_load_mnist_rejects_a_corrupted_cache(tmp_path):
    _, sums = write_fake_mnist(tmp_path / "mnist")
    sums["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(ValueError, match="checksum mismatch for cached"):
        data.load_mnist(tmp_path, checksums=sums)


def test_download_fetches_checks_and_caches(tmp_path):
    """A file:// URL stands in for the mirror: the download path runs without network."""
    _, sums = write_fake_mnist(tmp_path / "server")
    cache = tmp_path / "cache"
    split = data.load_mnist(cache, download=True, base_url=(tmp_path / "server").as_uri() + "/", checksums=sums)
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(sums)
    again = data.load_mnist(cache, checksums=sums)  # cached: no base_url needed any more
    torch.testing.assert_close(again.x_train, split.x_train)
    bad = dict(sums, **{"train-images-idx3-ubyte.gz": "f" * 32})
    with pytest.raises(ValueError, match="checksum mismatch for file://"):
        data.load_mnist(tmp_path / "other", download=True, base_url=(tmp_path / "server").as_uri() + "/",
                        checksums=bad)
    assert not any((tmp_path / "other" / "mnist").glob("train-images*"))  # nothing half-written is kept


def test_published_checksums_are_md5_hex():
    for files in data.MNIST_FILES.values():
        assert len(files) == 4 and all(len(m) == 32 and int(m, 16) >= 0 for m in files.values())
