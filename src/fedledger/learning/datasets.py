"""Datasets that install offline: Fashion-MNIST IDX files, scikit-learn's bundled sets, the user's CSV.

Every loader returns (train, test) ``Dataset`` values with float32 features and int64 labels. Tabular
features are standardised with the *train* split's statistics only, so the test split never leaks into
training. Splits are seeded and deterministic.
"""

from __future__ import annotations

import csv
import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import numpy as np

from fedledger.errors import UsageError

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "Dataset",
    "load_dataset",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DATASET_NAMES = ("fashion_mnist", "breast_cancer", "digits", "csv")

# IDX type byte -> (big-endian numpy dtype)
_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_MAX_BYTES = 1 << 32


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split held in memory. Compared and hashed by identity (the trainer caches per object)."""

    features: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if self.features.dtype != np.float32 or self.labels.dtype != np.int64:
            raise UsageError(
                f"dataset {self.name!r}: features must be float32 and labels int64, "
                f"got {self.features.dtype} and {self.labels.dtype}"
            )
        if self.labels.ndim != 1 or self.features.ndim < 2 or len(self.features) != len(self.labels):
            raise UsageError(
                f"dataset {self.name!r}: features {self.features.shape} and labels {self.labels.shape} "
                "must be [N, ...] and [N]"
            )
        if self.num_classes < 1:
            raise UsageError(f"dataset {self.name!r}: num_classes must be positive, got {self.num_classes}")
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise UsageError(f"dataset {self.name!r}: labels must lie in [0, {self.num_classes})")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray, name: str | None = None) -> Dataset:
        """The records at ``indices`` (in that order), e.g. one member's partition."""
        index = np.asarray(indices, dtype=np.int64)
        return Dataset(
            features=np.ascontiguousarray(self.features[index]),
            labels=np.ascontiguousarray(self.labels[index]),
            num_classes=self.num_classes,
            name=name if name is not None else self.name,
        )


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return path.open("rb")


def _read_exact(stream: IO[bytes], size: int, path: Path, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise UsageError(f"{path}: truncated IDX file ({what}: expected {size} bytes, found {len(data)})")
    return data


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (raw or gzip) strictly: magic, type, dimensions and exact payload size."""
    path = Path(path)
    try:
        with _open(path) as stream:
            magic = _read_exact(stream, 4, path, "magic number")
            if magic[0] != 0 or magic[1] != 0:
                raise UsageError(f"{path}: not an IDX file (magic number {magic.hex()} does not start 0000)")
            type_code, ndim = magic[2], magic[3]
            if type_code not in _IDX_TYPES:
                raise UsageError(f"{path}: unknown IDX data type 0x{type_code:02x}")
            if not 1 <= ndim <= 4:
                raise UsageError(f"{path}: IDX file with {ndim} dimensions is not supported (1 to 4)")
            dims = struct.unpack(f">{ndim}I", _read_exact(stream, 4 * ndim, path, "dimensions"))
            dtype = _IDX_TYPES[type_code]
            size = math.prod(dims) * dtype.itemsize
            if size > _IDX_MAX_BYTES:
                raise UsageError(f"{path}: IDX dimensions {dims} describe {size} bytes, more than 4 GiB")
            payload = _read_exact(stream, size, path, "data")
            if stream.read(1):
                raise UsageError(f"{path}: IDX file has trailing bytes after {dims} values")
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise UsageError(f"{path}: cannot read IDX file ({exc})") from None
    return np.frombuffer(payload, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str) -> Path:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"fashion_mnist: {stem}[.gz] not found in {directory} "
        "(install Debian's dataset-fashion-mnist or set data.path)"
    )


def _load_fashion_mnist_split(directory: Path, prefix: str) -> Dataset:
    images_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise UsageError(f"{images_path}: expected uint8 images of 28x28, got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UsageError(f"{labels_path}: expected a 1-D uint8 label file, got {labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise UsageError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}")
    if len(labels) and int(labels.max()) > 9:
        raise UsageError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    features = images.reshape(-1, 1, 28, 28).astype(np.float32)
    features *= np.float32(1.0 / 255.0)
    return Dataset(features, labels.astype(np.int64), 10, "fashion_mnist")


def _load_fashion_mnist(path: Path | None) -> tuple[Dataset, Dataset]:
    directory = path if path is not None else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise UsageError(
            f"fashion_mnist: dataset directory {directory} not found "
            "(install Debian's dataset-fashion-mnist or set data.path)"
        )
    return _load_fashion_mnist_split(directory, "train"), _load_fashion_mnist_split(directory, "t10k")


def _split_and_standardise(
    features: np.ndarray, labels: np.ndarray, num_classes: int, name: str, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    count = len(labels)
    order = np.random.default_rng(seed).permutation(count)
    num_test = round(count * test_fraction)
    if count - num_test < 1:
        raise UsageError(f"{name}: test_fraction {test_fraction} leaves no training records of {count}")
    test_index, train_index = np.sort(order[:num_test]), np.sort(order[num_test:])
    train_x = features[train_index].astype(np.float64)
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std[std == 0] = 1.0

    def make(index: np.ndarray) -> Dataset:
        scaled = ((features[index].astype(np.float64) - mean) / std).astype(np.float32)
        return Dataset(np.ascontiguousarray(scaled), labels[index].astype(np.int64), num_classes, name)

    return make(train_index), make(test_index)


def _load_sklearn(name: str, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    from sklearn import datasets as sk  # imported lazily: slow, and only these two loaders need it

    bunch = sk.load_breast_cancer() if name == "breast_cancer" else sk.load_digits()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return _split_and_standardise(features, labels, int(labels.max()) + 1, name, test_fraction, seed)


def _label_order(values: list[str]) -> dict[str, int]:
    distinct = set(values)
    try:
        ordered = sorted(distinct, key=float)
    except ValueError:
        ordered = sorted(distinct)
    return {value: index for index, value in enumerate(ordered)}


def _load_csv(
    path: Path | None, label_column: str | None, test_fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    if path is None:
        raise UsageError("csv: set data.path to the CSV file")
    if not path.is_file():
        raise UsageError(f"csv: file {path} not found")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read CSV ({exc})") from None
    if not rows or not rows[0]:
        raise UsageError(f"{path}: CSV is empty (a header row is required)")
    header = [column.strip() for column in rows[0]]
    if label_column is None:
        label_index = header.index("label") if "label" in header else len(header) - 1
    elif label_column in header:
        label_index = header.index(label_column)
    else:
        raise UsageError(f"{path}: label column {label_column!r} not in header {header}")
    if len(header) < 2:
        raise UsageError(f"{path}: CSV needs at least one feature column besides the label")
    records = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not records:
        raise UsageError(f"{path}: CSV has a header but no records")
    features = np.empty((len(records), len(header) - 1), dtype=np.float64)
    label_values: list[str] = []
    feature_columns = [i for i in range(len(header)) if i != label_index]
    for line, row in enumerate(records, start=2):
        if len(row) != len(header):
            raise UsageError(f"{path}: line {line} has {len(row)} fields, header has {len(header)}")
        label_values.append(row[label_index].strip())
        for position, column in enumerate(feature_columns):
            cell = row[column].strip()
            try:
                value = float(cell)
            except ValueError:
                raise UsageError(
                    f"{path}: line {line}, column {header[column]!r}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise UsageError(f"{path}: line {line}, column {header[column]!r}: {cell!r} is not finite")
            features[line - 2, position] = value
    mapping = _label_order(label_values)
    if len(mapping) < 2:
        raise UsageError(f"{path}: label column {header[label_index]!r} has fewer than two classes")
    labels = np.array([mapping[value] for value in label_values], dtype=np.int64)
    return _split_and_standardise(features, labels, len(mapping), "csv", test_fraction, seed)


def load_dataset(
    name: str,
    *,
    path: str | Path | None = None,
    label_column: str | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Dataset, Dataset]:
    """Load (train, test) for a dataset name.

    * ``fashion_mnist``: IDX files in ``path`` (default ``FASHION_MNIST_DIR``), official 60k/10k split,
      images [N, 1, 28, 28] in [0, 1]; ``test_fraction`` and ``seed`` are not used.
    * ``breast_cancer``, ``digits``: scikit-learn's bundled copies, seeded split, standardised.
    * ``csv``: ``path`` to a CSV with a header; ``label_column`` (default ``label``, else the last
      column) holds the class, mapped to 0..K-1 in sorted order (numeric if all labels are numbers);
      all other columns must be numeric. Seeded split, standardised.
    """
    if not 0 <= test_fraction < 1:
        raise UsageError(f"{name}: test_fraction must be in [0, 1), got {test_fraction}")
    location = Path(path).expanduser() if path is not None else None
    if name == "fashion_mnist":
        return _load_fashion_mnist(location)
    if name in ("breast_cancer", "digits"):
        return _load_sklearn(name, test_fraction, seed)
    if name == "csv":
        return _load_csv(location, label_column, test_fraction, seed)
    raise UsageError(f"unknown dataset {name!r} (valid: {', '.join(DATASET_NAMES)})")
