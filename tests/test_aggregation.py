"""Aggregation rules: hand-computed values, bit-exact determinism, robustness, validation."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from fedledger.aggregation import (
    RULE_NAMES,
    ExclusionReason,
    Rejection,
    apply_update,
    coordinate_median,
    fedavg,
    get_rule,
    multi_krum,
    multi_krum_select,
    trimmed_mean,
    update_norm,
    validate_update,
)
from fedledger.aggregation._numeric import exact_order_sum
from fedledger.errors import UsageError


def _u(*values: float) -> dict[str, np.ndarray]:
    return {"w": np.array(values, dtype=np.float32), "b": np.array([values[0]], dtype=np.float32)}


def _digest(model: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(model):
        h.update(name.encode())
        h.update(model[name].tobytes())
    return h.hexdigest()


def _random_updates(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "conv.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
            "fc.bias": rng.standard_normal(10).astype(np.float32),
            "fc.weight": rng.standard_normal((10, 40)).astype(np.float32),
        }
        for _ in range(count)
    ]


def test_fedavg_hand_computed() -> None:
    result = fedavg([_u(1.0, 2.0), _u(4.0, 8.0)], [1, 3])
    np.testing.assert_array_equal(result["w"], np.array([3.25, 6.5], dtype=np.float32))
    np.testing.assert_array_equal(result["b"], np.array([3.25], dtype=np.float32))
    assert list(result) == ["b", "w"]
    assert all(a.dtype == np.float32 and a.flags.c_contiguous for a in result.values())


def test_median_hand_computed() -> None:
    odd = coordinate_median([_u(1.0, 9.0), _u(5.0, 2.0), _u(3.0, 4.0)], [1, 1, 1])
    np.testing.assert_array_equal(odd["w"], [3.0, 4.0])
    even = coordinate_median([_u(1.0, 9.0), _u(5.0, 2.0), _u(3.0, 4.0), _u(2.0, 100.0)], [1, 1, 1, 1])
    np.testing.assert_array_equal(even["w"], [2.5, 6.5])


def test_trimmed_mean_hand_computed() -> None:
    updates = [_u(v, -v) for v in (1.0, 2.0, 3.0, 4.0, 100.0)]
    result = trimmed_mean(0.2)(updates, [1] * 5)
    np.testing.assert_array_equal(result["w"], [3.0, -3.0])
    untrimmed = trimmed_mean(0.0)(updates, [1] * 5)
    np.testing.assert_allclose(untrimmed["w"], [22.0, -22.0])
    # 0.1 * 30 is 3.0000000000000004 in binary; the decimal reading trims exactly 3 per end.
    many = [_u(float(v), 0.0) for v in range(30)]
    np.testing.assert_array_equal(trimmed_mean(0.1)(many, [1] * 30)["w"], [14.5, 0.0])


def test_multi_krum_hand_computed() -> None:
    updates = [_u(0.0, 0.0), _u(1.0, 0.0), _u(0.0, 1.0), _u(1.0, 1.0), _u(50.0, 50.0)]
    assert multi_krum_select(updates, 1, 2) == [0, 1]  # ties between 0..3 go to the lower index
    assert multi_krum_select(updates, 1) == [0, 1, 2, 3]
    result = multi_krum(1)(updates, [1, 1, 1, 1, 1000])
    np.testing.assert_array_equal(result["w"], [0.5, 0.5])


RULES = [
    ("fedavg", {}),
    ("median", {}),
    ("trimmed_mean", {"trim_ratio": 0.2}),
    ("multi_krum", {"num_byzantine": 1}),
    ("multi_krum", {"num_byzantine": 1, "num_selected": 3}),
]


@pytest.mark.parametrize(("name", "params"), RULES)
def test_determinism_repeated_and_after_canonical_sorting(name: str, params: dict[str, float]) -> None:
    updates = _random_updates(7)
    counts = [10, 20, 30, 40, 50, 60, 70]
    members = [f"0x{i:040x}" for i in range(7)]
    rule = get_rule(name, **params)
    reference = _digest(rule(updates, counts))
    assert _digest(rule(updates, counts)) == reference
    # Each aggregator receives submissions in a different order and sorts them by member first.
    rng = np.random.default_rng(5)
    for _ in range(3):
        order = rng.permutation(7)
        received = [(members[i], {k: v.copy() for k, v in updates[i].items()}, counts[i]) for i in order]
        received.sort(key=lambda item: item[0])
        result = rule([item[1] for item in received], [item[2] for item in received])
        assert _digest(result) == reference


def test_fedavg_matches_float64_reference() -> None:
    updates = _random_updates(5, seed=3)
    counts = [3, 1, 4, 1, 5]
    result = fedavg(updates, counts)
    for name in result:
        expected = sum(n * u[name].astype(np.float64) for u, n in zip(updates, counts, strict=True))
        np.testing.assert_allclose(result[name], expected / sum(counts), rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "params"),
    [("median", {}), ("trimmed_mean", {"trim_ratio": 0.2}), ("multi_krum", {"num_byzantine": 1})],
)
def test_robust_rules_resist_one_huge_outlier(name: str, params: dict[str, float]) -> None:
    honest = _random_updates(6, seed=11)
    attacker = {k: np.full_like(v, 1e6) for k, v in honest[0].items()}
    updates = [*honest[:3], attacker, *honest[3:]]
    counts = [100, 100, 100, 10**6, 100, 100, 100]
    result = get_rule(name, **params)(updates, counts)
    for array in result.values():
        assert float(np.abs(array).max()) < 10.0
    poisoned = fedavg(updates, counts)
    assert max(float(np.abs(a).max()) for a in poisoned.values()) > 1e4


def test_rule_input_errors() -> None:
    with pytest.raises(UsageError, match="no updates"):
        fedavg([], [])
    with pytest.raises(UsageError, match="sample counts"):
        fedavg([_u(1.0, 2.0)], [1, 2])
    with pytest.raises(UsageError, match="positive integers"):
        fedavg([_u(1.0, 2.0)], [0])
    with pytest.raises(UsageError, match="shape"):
        coordinate_median([_u(1.0, 2.0), _u(1.0, 2.0, 3.0)], [1, 1])
    with pytest.raises(UsageError, match="names"):
        coordinate_median([_u(1.0), {"w": np.zeros(1, np.float32)}], [1, 1])
    with pytest.raises(UsageError, match="needs more than 4"):
        multi_krum(1)([_u(1.0)] * 4, [1] * 4)
    with pytest.raises(UsageError, match="trim_ratio"):
        trimmed_mean(0.5)
    with pytest.raises(UsageError, match="num_byzantine"):
        multi_krum(-1)


def test_registry() -> None:
    assert set(RULE_NAMES) == {"fedavg", "median", "trimmed_mean", "multi_krum"}
    assert get_rule("fedavg") is fedavg
    with pytest.raises(UsageError, match=r"valid: fedavg, median, trimmed_mean, multi_krum"):
        get_rule("krum")
    with pytest.raises(UsageError, match="needs trim_ratio"):
        get_rule("trimmed_mean")
    with pytest.raises(UsageError, match="does not take beta"):
        get_rule("median", beta=0.1)


def test_apply_update() -> None:
    model: dict[str, np.ndarray] = {"w": np.array([1.0, 2.0], np.float32), "steps": np.array([3], np.int64)}
    delta: dict[str, np.ndarray] = {
        "w": np.array([0.5, -1.0], np.float32),
        "steps": np.array([1.4], np.float32),
    }
    result = apply_update(model, delta)
    np.testing.assert_array_equal(result["w"], [1.5, 1.0])
    assert result["w"].dtype == np.float32
    assert result["steps"].dtype == np.int64 and result["steps"][0] == 4
    with pytest.raises(UsageError, match="names differ"):
        apply_update(model, {"w": delta["w"]})
    with pytest.raises(UsageError, match="shape"):
        apply_update(model, {"w": np.zeros(3, np.float32), "steps": delta["steps"]})


def test_exact_order_sum_is_order_free_of_numpy() -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(100_003)
    assert exact_order_sum(values) == pytest.approx(math.fsum(values.tolist()), rel=1e-12)
    assert exact_order_sum(np.zeros(0)) == 0.0


def test_reason_codes_are_stable() -> None:
    expected = {
        "NOT_SUBMITTED": 1,
        "BLOB_MISSING": 2,
        "BLOB_CORRUPT": 3,
        "DECRYPT_FAILED": 4,
        "MALFORMED": 5,
        "WRONG_NAMES": 6,
        "WRONG_SHAPE": 7,
        "WRONG_DTYPE": 8,
        "NON_FINITE": 9,
        "NORM_BOUND": 10,
        "OVERSIZED": 11,
    }
    assert {reason.name: int(reason) for reason in ExclusionReason} == expected
    assert all(reason.label for reason in ExclusionReason)


def test_validation_accepts_good_update() -> None:
    reference = _random_updates(1)[0]
    update = {k: v * 0.01 for k, v in reference.items()}
    assert validate_update(update, reference, max_norm=None) is None
    assert validate_update(update, reference, max_norm=update_norm(update)) is None


def _reason(rejection: Rejection | None) -> ExclusionReason:
    assert rejection is not None
    assert rejection.detail and "\n" not in rejection.detail
    return rejection.reason


def test_validation_catches_each_bad_case() -> None:
    reference = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    good = {"a": np.ones((2, 3), np.float32), "b": np.ones(4, np.float32)}
    assert _reason(validate_update({"a": good["a"]}, reference, max_norm=None)) == ExclusionReason.WRONG_NAMES
    extra = {**good, "c": np.zeros(1, np.float32)}
    assert _reason(validate_update(extra, reference, max_norm=None)) == ExclusionReason.WRONG_NAMES
    shaped = {**good, "a": np.ones((3, 2), np.float32)}
    assert _reason(validate_update(shaped, reference, max_norm=None)) == ExclusionReason.WRONG_SHAPE
    typed: dict[str, np.ndarray] = {**good, "b": np.ones(4, np.float64)}
    assert _reason(validate_update(typed, reference, max_norm=None)) == ExclusionReason.WRONG_DTYPE
    for bad in (np.nan, np.inf, -np.inf):
        poisoned = {**good, "b": np.array([0, 0, bad, 0], np.float32)}
        assert _reason(validate_update(poisoned, reference, max_norm=None)) == ExclusionReason.NON_FINITE
    # ||good|| = sqrt(10)
    assert validate_update(good, reference, max_norm=math.sqrt(10) + 1e-9) is None
    assert _reason(validate_update(good, reference, max_norm=3.0)) == ExclusionReason.NORM_BOUND
