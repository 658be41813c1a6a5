"""Learning: dataset loaders, partitioners, models, training, evaluation and fingerprints."""

from __future__ import annotations

import gzip
import struct
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fedledger.errors import UsageError
from fedledger.learning import (
    MLP,
    Dataset,
    SmallCNN,
    TrainConfig,
    build_model,
    dataset_fingerprint,
    evaluate,
    load_dataset,
    load_numpy_state,
    merkle_root,
    partition_dirichlet,
    partition_iid,
    read_idx,
    state_to_numpy,
    train_local,
)

# --------------------------------------------------------------------------- IDX / Fashion-MNIST


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, payload: bytes, compress: bool) -> None:
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def _fake_fashion_mnist(directory: Path, compress: bool, train: int = 12, test: int = 5) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        _write(directory / f"{prefix}-images-idx3-ubyte", _idx_bytes(images), compress)
        _write(directory / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), compress)


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_from_idx_files(tmp_path: Path, compress: bool) -> None:
    _fake_fashion_mnist(tmp_path, compress)
    train, test = load_dataset("fashion_mnist", path=tmp_path)
    assert train.features.shape == (12, 1, 28, 28) and test.features.shape == (5, 1, 28, 28)
    assert train.features.dtype == np.float32 and train.labels.dtype == np.int64
    assert float(train.features.min()) >= 0.0 and float(train.features.max()) <= 1.0
    assert train.num_classes == 10 and train.labels.tolist() == [i % 10 for i in range(12)]
    raw = read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if compress else "")))
    np.testing.assert_allclose(train.features[:, 0], raw / 255.0, rtol=1e-6)


def test_idx_parser_types_and_errors(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 2
    good = tmp_path / "ints.idx"
    good.write_bytes(_idx_bytes(values, 0x0C))
    np.testing.assert_array_equal(read_idx(good), values)

    cases = {
        "magic.idx": (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "not an IDX file"),
        "type.idx": (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown IDX data type 0x07"),
        "dims.idx": (b"\x00\x00\x08\x09", "dimensions is not supported"),
        "short.idx": (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00", "truncated IDX file"),
        "long.idx": (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x00", "trailing bytes"),
        "tiny.idx": (b"\x00\x00", "truncated IDX file"),
    }
    for name, (payload, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(UsageError, match=message) as info:
            read_idx(path)
        assert name in str(info.value) and "\n" not in str(info.value)
    broken_gz = tmp_path / "broken.idx.gz"
    broken_gz.write_bytes(gzip.compress(_idx_bytes(values, 0x0C))[:-12])
    with pytest.raises(UsageError, match=r"broken\.idx\.gz"):
        read_idx(broken_gz)


def test_fashion_mnist_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"dataset directory .*nowhere not found \(install Debian"):
        load_dataset("fashion_mnist", path=tmp_path / "nowhere")
    with pytest.raises(UsageError, match="train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", path=tmp_path)
    _fake_fashion_mnist(tmp_path, compress=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 4) + bytes(4))
    with pytest.raises(UsageError, match="4 labels for 5 images"):
        load_dataset("fashion_mnist", path=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"GARBAGE!")
    with pytest.raises(UsageError, match="t10k-labels-idx1-ubyte: not an IDX file"):
        load_dataset("fashion_mnist", path=tmp_path)


# --------------------------------------------------------------------------- sklearn and CSV


@pytest.mark.parametrize(("name", "features", "classes"), [("breast_cancer", 30, 2), ("digits", 64, 10)])
def test_sklearn_datasets(name: str, features: int, classes: int) -> None:
    train, test = load_dataset(name, test_fraction=0.25, seed=3)
    assert train.features.shape[1] == features and train.num_classes == classes
    assert abs(len(test) - 0.25 * (len(train) + len(test))) <= 1
    np.testing.assert_allclose(train.features.mean(axis=0), 0.0, atol=1e-4)
    again, _ = load_dataset(name, test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(again.features, train.features)
    other, _ = load_dataset(name, test_fraction=0.25, seed=4)
    assert not np.array_equal(other.labels, train.labels)


def test_csv_dataset(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    rows = ["age,score,outcome"] + [f"{20 + i},{i % 7}.5,{'yes' if i % 3 else 'no'}" for i in range(30)]
    path.write_text("\n".join(rows) + "\n")
    train, test = load_dataset("csv", path=path, label_column="outcome", test_fraction=0.2, seed=0)
    assert train.num_classes == 2 and train.features.shape == (24, 2) and len(test) == 6
    all_labels = np.concatenate([train.labels, test.labels])
    assert int((all_labels == 0).sum()) == 10  # "no" sorts before "yes"
    # default label column: the last one
    default, _ = load_dataset("csv", path=path, seed=0)
    np.testing.assert_array_equal(default.labels, train.labels)

    numeric = tmp_path / "numeric.csv"
    numeric.write_text("label,x\n10,1\n2,2\n10,3\n2,4\n")
    train, test = load_dataset("csv", path=numeric, test_fraction=0.0)
    np.testing.assert_array_equal(np.sort(train.labels), [0, 0, 1, 1])  # 2 < 10 numerically


def test_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_dataset("csv", path=tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\n1,2,x\n1,oops,y\n")
    with pytest.raises(UsageError, match=r"bad.csv: line 3, column 'b': 'oops' is not a number"):
        load_dataset("csv", path=bad)
    with pytest.raises(UsageError, match="label column 'target' not in header"):
        load_dataset("csv", path=bad, label_column="target")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,label\n1,x\n1\n")
    with pytest.raises(UsageError, match="line 3 has 1 fields"):
        load_dataset("csv", path=ragged)
    with pytest.raises(UsageError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


# --------------------------------------------------------------------------- partitioning


def test_partition_iid() -> None:
    labels = np.arange(103) % 5
    parts = partition_iid(labels, 4, seed=1)
    assert sorted(len(p) for p in parts) == [25, 26, 26, 26]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(103))
    assert all(np.array_equal(p, np.sort(p)) and p.dtype == np.int64 for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, partition_iid(labels, 4, seed=1), strict=True))
    assert not np.array_equal(parts[0], partition_iid(labels, 4, seed=2)[0])
    with pytest.raises(UsageError):
        partition_iid(labels, 200, seed=0)


def test_partition_dirichlet_coverage_reproducibility_and_skew() -> None:
    labels = np.repeat(np.arange(10), 200)
    parts = partition_dirichlet(labels, 8, alpha=0.1, seed=7, min_size=20)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert min(len(p) for p in parts) >= 20
    again = partition_dirichlet(labels, 8, alpha=0.1, seed=7, min_size=20)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))

    def dominant_share(partition: list[np.ndarray]) -> float:
        return float(np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in partition]))

    skewed = dominant_share(parts)
    near_iid = dominant_share(partition_dirichlet(labels, 8, alpha=1000.0, seed=7, min_size=20))
    assert skewed > 0.5 > 0.2 > near_iid
    with pytest.raises(UsageError, match="alpha"):
        partition_dirichlet(labels, 8, alpha=0.0, seed=0)
    with pytest.raises(UsageError, match="cannot give"):
        partition_dirichlet(labels, 8, alpha=1.0, seed=0, min_size=300)


# --------------------------------------------------------------------------- models


def test_models_and_numpy_state_round_trip() -> None:
    cnn = SmallCNN()
    assert 100_000 <= sum(p.numel() for p in cnn.parameters()) <= 200_000
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    mlp = build_model("mlp", in_features=30, hidden=[16, 8], num_classes=2)
    assert isinstance(mlp, MLP) and mlp(torch.zeros(3, 30)).shape == (3, 2)

    state = state_to_numpy(mlp)
    assert list(state) == sorted(state)
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in state.values())
    other = build_model("mlp", in_features=30, hidden=[16, 8], num_classes=2)
    readonly = {name: array.copy() for name, array in state.items()}
    for array in readonly.values():
        array.flags.writeable = False
    load_numpy_state(other, readonly)
    for name, array in state_to_numpy(other).items():
        np.testing.assert_array_equal(array, state[name])

    with pytest.raises(UsageError, match="missing"):
        load_numpy_state(other, {k: v for k, v in state.items() if k != "net.1.bias"})
    wrong = dict(state)
    wrong["net.1.bias"] = np.zeros(5, np.float32)
    with pytest.raises(UsageError, match=r"'net.1.bias' has shape \(5,\)"):
        load_numpy_state(other, wrong)


def test_numpy_state_with_integer_buffers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = state_to_numpy(model)
    state["1.num_batches_tracked"] = np.array(7.0, np.float32)
    load_numpy_state(model, state)
    assert model.state_dict()["1.num_batches_tracked"].dtype == torch.int64
    assert int(model.state_dict()["1.num_batches_tracked"]) == 7


def test_build_model_from_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "member_models.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Tiny(torch.nn.Module):
                def __init__(self, width: int = 4) -> None:
                    super().__init__()
                    self.fc = torch.nn.Linear(width, 2)

                def forward(self, x):
                    return self.fc(x)

            NOT_A_MODEL = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("member_models:Tiny", width=6)
    assert model(torch.zeros(1, 6)).shape == (1, 2)
    with pytest.raises(UsageError, match=r"'no_such_pkg.mod:Net': cannot import module 'no_such_pkg.mod'"):
        build_model("no_such_pkg.mod:Net")
    with pytest.raises(UsageError, match="has no attribute 'Missing'"):
        build_model("member_models:Missing")
    with pytest.raises(UsageError, match="bad parameters"):
        build_model("member_models:Tiny", depth=3)
    with pytest.raises(UsageError, match="not a class"):
        build_model("member_models:NOT_A_MODEL")
    with pytest.raises(UsageError, match="expected 'mlp', 'cnn'"):
        build_model("resnet")
    sys.modules.pop("member_models", None)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def breast_cancer() -> tuple[Dataset, Dataset]:
    return load_dataset("breast_cancer", test_fraction=0.25, seed=0)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", in_features=30, hidden=[32], num_classes=2)


def test_training_reduces_loss_and_reaches_accuracy(breast_cancer: tuple[Dataset, Dataset]) -> None:
    train, test = breast_cancer
    model = _mlp()
    before = evaluate(model, train)
    result = train_local(model, train, TrainConfig(epochs=5, batch_size=32, lr=0.05), seed=1)
    after = evaluate(model, train)
    assert result.num_samples == len(train)
    assert after.loss < before.loss and result.mean_loss < before.loss
    scored = evaluate(model, test)
    assert scored.accuracy > 0.9 and scored.num_examples == len(test)


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(epochs=2, batch_size=16),
        TrainConfig(epochs=1, optimizer="adam", lr=0.01, weight_decay=1e-4),
        TrainConfig(epochs=1, momentum=0.9, fedprox_mu=0.1),
    ],
)
def test_training_is_deterministic(breast_cancer: tuple[Dataset, Dataset], cfg: TrainConfig) -> None:
    train, _ = breast_cancer
    first, second, third = _mlp(), _mlp(), _mlp()
    torch.manual_seed(123)
    train_local(first, train, cfg, seed=5)
    torch.manual_seed(999)  # the caller's global RNG must not matter
    train_local(second, train, cfg, seed=5)
    train_local(third, train, cfg, seed=6)
    a, b, c = state_to_numpy(first), state_to_numpy(second), state_to_numpy(third)
    assert all(a[name].tobytes() == b[name].tobytes() for name in a)
    assert any(a[name].tobytes() != c[name].tobytes() for name in a)


def test_training_leaves_global_rng_alone(breast_cancer: tuple[Dataset, Dataset]) -> None:
    model = _mlp()
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    train_local(model, breast_cancer[0], TrainConfig(), seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_fedprox_keeps_weights_closer(breast_cancer: tuple[Dataset, Dataset]) -> None:
    train, _ = breast_cancer
    start = state_to_numpy(_mlp())

    def drift(mu: float) -> float:
        model = _mlp()
        train_local(model, train, TrainConfig(epochs=3, lr=0.1, fedprox_mu=mu), seed=0)
        end = state_to_numpy(model)
        return float(sum(np.sum((end[k] - start[k]) ** 2) for k in start))

    assert drift(10.0) < drift(0.0)


def test_cnn_trains_on_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=256).astype(np.int64)
    features = rng.random((256, 1, 28, 28), dtype=np.float32) * 0.1
    features[np.arange(256), 0, labels, labels] = 1.0  # class signal a CNN can learn
    data = Dataset(features, labels, 10, "synthetic")
    torch.manual_seed(0)
    model = build_model("cnn")
    before = evaluate(model, data).loss
    train_local(model, data, TrainConfig(epochs=3, lr=0.05, momentum=0.9), seed=0)
    assert evaluate(model, data).loss < before


def test_config_and_dataset_validation() -> None:
    with pytest.raises(UsageError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(UsageError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(UsageError, match="float32"):
        Dataset(np.zeros((2, 3)), np.zeros(2, np.int64), 2, "x")
    with pytest.raises(UsageError, match="labels must lie"):
        Dataset(np.zeros((2, 3), np.float32), np.array([0, 2]), 2, "x")
    empty = Dataset(np.zeros((0, 3), np.float32), np.zeros(0, np.int64), 2, "empty")
    with pytest.raises(UsageError, match="empty"):
        train_local(_mlp(), empty, TrainConfig(), seed=0)


# --------------------------------------------------------------------------- fingerprints


def test_fingerprint_commits_to_every_record(breast_cancer: tuple[Dataset, Dataset]) -> None:
    train, _ = breast_cancer
    fingerprint = dataset_fingerprint(train)
    assert fingerprint.num_samples == len(train)
    assert sum(fingerprint.label_histogram) == len(train) and len(fingerprint.label_histogram) == 2
    assert len(fingerprint.merkle_root) == 32
    assert dataset_fingerprint(train) == fingerprint

    features = train.features.copy()
    features[17, 3] = np.nextafter(features[17, 3], np.float32(np.inf))
    changed = Dataset(features, train.labels.copy(), 2, train.name)
    assert dataset_fingerprint(changed).merkle_root != fingerprint.merkle_root

    labels = train.labels.copy()
    labels[-1] = 1 - labels[-1]
    relabelled = dataset_fingerprint(Dataset(train.features, labels, 2, train.name))
    assert relabelled.merkle_root != fingerprint.merkle_root
    assert relabelled.label_histogram != fingerprint.label_histogram

    swapped_index = np.arange(len(train))
    swapped_index[[0, 1]] = [1, 0]
    assert dataset_fingerprint(train.subset(swapped_index)).merkle_root != fingerprint.merkle_root


def test_merkle_rule() -> None:
    import hashlib

    def h(data: bytes) -> bytes:
        return hashlib.sha256(data).digest()

    a, b, c = h(b"a"), h(b"b"), h(b"c")
    assert merkle_root([]) == h(b"")
    assert merkle_root([a]) == a
    assert merkle_root([a, b]) == h(b"\x01" + a + b)
    assert merkle_root([a, b, c]) == h(b"\x01" + h(b"\x01" + a + b) + c)  # odd node promoted

    data = Dataset(np.array([[1.0, 2.0]], np.float32), np.array([1], np.int64), 2, "one")
    record = np.array([1.0, 2.0], "<f4").tobytes() + (1).to_bytes(8, "little")
    assert dataset_fingerprint(data).merkle_root == h(b"\x00" + record)


def test_small_cnn_pools_before_relu_and_computes_the_same_function() -> None:
    torch.manual_seed(1)
    model = build_model("cnn")
    kinds = [type(m).__name__ for m in model.features]  # type: ignore[union-attr]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    conv1, conv2 = model.features[0], model.features[3]  # type: ignore[index]
    reference = torch.nn.Sequential(
        conv1, torch.nn.ReLU(), torch.nn.MaxPool2d(2), conv2, torch.nn.ReLU(), torch.nn.MaxPool2d(2)
    )
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model.features(x), reference(x), atol=1e-6)  # type: ignore[operator]


def test_image_training_runs_channels_last_and_state_stays_c_ordered() -> None:
    rng = np.random.default_rng(3)
    data = Dataset(rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64), 10, "img")
    model = build_model("cnn")
    train_local(model, data, TrainConfig(epochs=1), seed=0)
    conv = model.features[3].weight  # type: ignore[index]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    state = state_to_numpy(model)
    assert all(v.flags.c_contiguous for v in state.values())
    # NCHW input still works on the channels-last model
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_training_without_rng_isolation_gives_the_same_weights(breast_cancer: tuple[Dataset, Dataset]) -> None:
    train, _ = breast_cancer
    results = []
    for isolate in (True, False):
        torch.manual_seed(0)
        model = _mlp()
        train_local(model, train, TrainConfig(epochs=1), seed=11, isolate_rng=isolate)
        results.append(state_to_numpy(model))
    assert all(np.array_equal(results[0][k], results[1][k]) for k in results[0])
