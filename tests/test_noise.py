"""Label noise: exact counts, the class maps, reproducibility, validation.

Expected numbers are computed here from the clean and noisy label vectors with numpy and plain
Python, never read back from the function's own report.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from lossbench.noise import NoiseReport, corrupt_labels

C = 10
MNIST_ASYM = {7: 1, 2: 7, 5: 6, 6: 5, 3: 8}  # Patrini et al. 2017, Ma et al. 2020: 7->1, 2->7, 5<->6, 3->8
MNIST_PAIRS = [list(pair) for pair in MNIST_ASYM.items()]  # as data.noise_map writes it


def make_labels(sizes: list[int], seed: int = 0) -> torch.Tensor:
    """Shuffled int64 labels with ``sizes[c]`` samples of class ``c``."""
    y = np.repeat(np.arange(len(sizes)), sizes)
    np.random.default_rng(seed).shuffle(y)
    return torch.from_numpy(y.astype(np.int64))


def flips(clean: torch.Tensor, noisy: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mask of changed positions, changed count per clean class) computed with numpy."""
    a, b = clean.numpy(), noisy.numpy()
    changed = a != b
    return changed, np.bincount(a[changed], minlength=C)


UNEVEN = [1000, 37, 500, 0, 123, 1, 999, 250, 64, 7]
SIZES = {
    "balanced": [100] * C,
    "uneven": UNEVEN,
    "mnist_train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "tiny": [3, 1, 2, 0, 0, 1, 4, 1, 1, 2],
}


@pytest.mark.parametrize("sizes", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("rate", [0.05, 0.2, 0.25, 0.33, 0.5, 0.8, 0.95])
def test_symmetric_flips_exact_total_balanced_per_class(sizes: list[int], rate: float) -> None:
    clean = make_labels(sizes)
    noisy, report = corrupt_labels(clean, rate, "symmetric", seed=3)
    changed, per_class = flips(clean, noisy)
    n = sum(sizes)

    assert changed.sum() == round(rate * n)
    for c, n_c in enumerate(sizes):
        assert math.floor(rate * n_c) <= per_class[c] <= math.ceil(rate * n_c), (c, n_c)
        assert abs(per_class[c] - rate * n_c) < 1
    assert report.flipped == changed.sum()
    assert report.fraction_flipped == pytest.approx(changed.sum() / n)
    assert report.flipped_per_class == tuple(per_class.tolist())
    assert report.num_samples == n


def test_symmetric_exact_per_class_when_rate_divides_every_class() -> None:
    sizes = [100, 40, 60, 20, 80, 200, 140, 20, 100, 40]
    clean = make_labels(sizes)
    noisy, _ = corrupt_labels(clean, 0.35, "symmetric", seed=0)
    _, per_class = flips(clean, noisy)
    assert per_class.tolist() == [35, 14, 21, 7, 28, 70, 49, 7, 35, 14]


def test_symmetric_leftovers_go_to_largest_remainders() -> None:
    # 0.3 * sizes = 2.7, 0.3, 0.9, 0.6, 0, 0, 0, 0, 0, 1.5: floors sum to 3, the total is
    # round(0.3 * 20) = 6, so the 3 leftovers go to the largest remainders: .9 (class 2),
    # .7 (class 0), .6 (class 3); class 9 (.5) and class 1 (.3) keep their floors.
    sizes = [9, 1, 3, 2, 0, 0, 0, 0, 0, 5]
    clean = make_labels(sizes)
    noisy, _ = corrupt_labels(clean, 0.3, "symmetric", seed=1)
    _, per_class = flips(clean, noisy)
    assert per_class.sum() == round(0.3 * sum(sizes)) == 6
    assert per_class.tolist() == [3, 0, 1, 1, 0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_symmetric_never_maps_a_label_to_itself(seed: int) -> None:
    clean = make_labels(UNEVEN, seed=seed)
    noisy, _ = corrupt_labels(clean, 0.6, "symmetric", seed=seed)
    changed, _ = flips(clean, noisy)
    # Exact count of changed labels == round(rate * N): a flip onto the true class would be lost.
    assert changed.sum() == round(0.6 * sum(UNEVEN))
    assert noisy.min() >= 0 and noisy.max() < C


def test_symmetric_targets_uniform_over_other_classes() -> None:
    # 100k labels, rate 0.45: 4,500 flips per class over 9 targets = 500 expected per cell.
    clean = make_labels([10_000] * C)
    noisy, _ = corrupt_labels(clean, 0.45, "symmetric", seed=2024)
    a, b = clean.numpy(), noisy.numpy()
    changed = a != b
    table = np.zeros((C, C), dtype=np.int64)
    np.add.at(table, (a[changed], b[changed]), 1)

    assert np.all(np.diag(table) == 0)
    expected = 4500 / (C - 1)
    off = ~np.eye(C, dtype=bool)
    chi2_rows = ((table - expected) ** 2 / expected * off).sum(axis=1)  # 8 dof each
    chi2_all = chi2_rows.sum()  # 80 dof
    # 8 dof: p(chi2 > 30) ~ 2e-4; 80 dof: p(chi2 > 140) ~ 3e-5. Deterministic for a fixed seed.
    assert chi2_rows.max() < 30, chi2_rows
    assert chi2_all < 140, chi2_all


def test_symmetric_picks_flipped_samples_at_random_within_a_class() -> None:
    clean = torch.zeros(1000, dtype=torch.int64)
    clean[500:] = 1
    noisy, _ = corrupt_labels(clean, 0.1, "symmetric", seed=5)
    pos = np.flatnonzero(clean.numpy() != noisy.numpy())
    # 100 flips; not the first 50 of each class, spread over the whole range.
    assert len(pos) == 100
    assert not set(range(50)) <= set(pos.tolist())
    assert pos[pos < 500].max() > 250 and pos[pos >= 500].max() > 750


@pytest.mark.parametrize("sizes", [SIZES["mnist_train"], UNEVEN, [100] * C], ids=str)
@pytest.mark.parametrize("rate", [0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
def test_asymmetric_follows_the_mnist_map_exactly(sizes: list[int], rate: float) -> None:
    clean = make_labels(sizes)
    noisy, report = corrupt_labels(clean, rate, "asymmetric", seed=11, class_map=MNIST_PAIRS)
    a, b = clean.numpy(), noisy.numpy()
    changed = a != b
    n = sum(sizes)

    expected_total = 0
    for c in range(C):
        moved = changed & (a == c)
        if c in MNIST_ASYM:
            k = round(rate * sizes[c])
            assert moved.sum() == k, c
            assert np.all(b[moved] == MNIST_ASYM[c]), c
            expected_total += k
        else:
            assert moved.sum() == 0, c  # classes 0, 1, 4, 8, 9 untouched
    assert changed.sum() == expected_total
    assert report.flipped == expected_total
    assert report.fraction_flipped == pytest.approx(expected_total / n)
    assert report.fraction_flipped < rate


def test_asymmetric_swaps_5_and_6_from_clean_labels() -> None:
    # A 5 moved to 6 must not be moved back by 6->5: the swap acts on the clean labels only.
    clean = make_labels([0, 0, 0, 0, 0, 1000, 1000, 0, 0, 0])
    noisy, _ = corrupt_labels(clean, 0.4, "asymmetric", seed=0, class_map=MNIST_PAIRS)
    a, b = clean.numpy(), noisy.numpy()
    assert ((a == 5) & (b == 6)).sum() == 400
    assert ((a == 6) & (b == 5)).sum() == 400
    assert ((a == 5) & (b == 5)).sum() == 600


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_same_seed_same_labels_and_hash_whatever_the_global_rng(kind: str) -> None:
    clean = make_labels(SIZES["mnist_train"])
    torch.manual_seed(0)
    first, r1 = corrupt_labels(clean, 0.3, kind, seed=42, class_map=MNIST_PAIRS)
    torch.manual_seed(12345)
    state = torch.get_rng_state()
    second, r2 = corrupt_labels(clean, 0.3, kind, seed=42, class_map=MNIST_PAIRS)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be advanced"
    assert torch.equal(first, second)
    assert r1 == r2

    other, r3 = corrupt_labels(clean, 0.3, kind, seed=43, class_map=MNIST_PAIRS)
    assert not torch.equal(first, other)
    assert r3.label_hash != r1.label_hash


def test_label_hash_is_sha256_of_little_endian_int64_labels() -> None:
    clean = make_labels(UNEVEN)
    noisy, report = corrupt_labels(clean, 0.2, "symmetric", seed=9)
    digest = hashlib.sha256(np.asarray(noisy.tolist(), dtype="<i8").tobytes()).hexdigest()
    assert report.label_hash == digest[:16]
    assert len(report.label_hash) == 16
    # The clean labels hash the same way, and rate 0 leaves that hash unchanged.
    _, zero = corrupt_labels(clean, 0.0, "symmetric", seed=9)
    clean_digest = hashlib.sha256(np.asarray(clean.tolist(), dtype="<i8").tobytes()).hexdigest()
    assert zero.label_hash == clean_digest[:16]


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_input_is_not_mutated_and_output_is_a_new_tensor(kind: str) -> None:
    clean = make_labels(UNEVEN)
    before = clean.clone()
    noisy, _ = corrupt_labels(clean, 0.4, kind, seed=1, class_map=MNIST_PAIRS)
    assert torch.equal(clean, before)
    assert noisy.data_ptr() != clean.data_ptr()
    assert noisy.dtype == clean.dtype and noisy.shape == clean.shape


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_rate_zero_is_an_unchanged_copy(kind: str) -> None:
    clean = make_labels(UNEVEN)
    noisy, report = corrupt_labels(clean, 0.0, kind, seed=1, class_map=MNIST_PAIRS)
    assert torch.equal(noisy, clean)
    noisy[0] = (noisy[0] + 1) % C
    assert not torch.equal(noisy, clean), "rate 0 must still return a copy"
    assert report.flipped == 0 and report.fraction_flipped == 0.0
    assert report.flipped_per_class == (0,) * C


def test_keeps_dtype_of_a_narrower_integer_tensor() -> None:
    clean = make_labels([50] * C).to(torch.int32)
    noisy, report = corrupt_labels(clean, 0.5, "symmetric", seed=0)
    assert noisy.dtype == torch.int32
    assert int((noisy != clean).sum()) == 250 == report.flipped


def test_empty_labels() -> None:
    noisy, report = corrupt_labels(torch.empty(0, dtype=torch.int64), 0.3, "symmetric", seed=0)
    assert noisy.numel() == 0
    assert report.flipped == 0 and report.fraction_flipped == 0.0


def test_report_is_frozen_and_as_dict_is_plain_scalars() -> None:
    clean = make_labels(UNEVEN)
    _, report = corrupt_labels(clean, 0.2, "asymmetric", seed=7, class_map=MNIST_PAIRS)
    assert isinstance(report, NoiseReport)
    with pytest.raises(AttributeError):
        report.flipped = 0  # type: ignore[misc]
    d = report.as_dict()
    assert {"rate", "kind", "flipped", "fraction_flipped", "label_hash"} <= d.keys()
    assert d["rate"] == 0.2 and d["kind"] == "asymmetric"
    assert all(type(v) in (float, int, str) for v in d.values()), d


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.2", None, True])
def test_bad_rate_names_the_config_key(rate: object) -> None:
    with pytest.raises(ValueError, match=r"data\.label_noise\.rate.*\[0, 1\)"):
        corrupt_labels(make_labels([10] * C), rate, "symmetric", seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["pair", "Symmetric", "", None])
def test_bad_kind_names_the_config_key_and_allowed_values(kind: object) -> None:
    with pytest.raises(ValueError, match=r"data\.label_noise\.kind.*symmetric, asymmetric"):
        corrupt_labels(make_labels([10] * C), 0.2, kind, seed=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "labels",
    [
        torch.tensor([0, 1, 10]),
        torch.tensor([-1, 0, 1]),
        torch.tensor([[0, 1], [2, 3]]),
        torch.tensor([0.0, 1.0]),
        torch.tensor([True, False]),
    ],
    ids=["above", "negative", "2d", "float", "bool"],
)
def test_bad_labels_raise(labels: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="labels"):
        corrupt_labels(labels, 0.2, "symmetric", seed=0)


def test_the_mnist_yaml_holds_the_published_map() -> None:
    from lossbench.shipped import data_yaml

    assert [list(p) for p in data_yaml("mnist").noise_map] == MNIST_PAIRS


@pytest.mark.parametrize(
    "class_map, problem",
    [
        (None, r"data\.label_noise\.kind=asymmetric needs the data set's class map \(data\.noise_map"),
        ([], r"needs the data set's class map"),
        ([[0, 3]], r"data\.noise_map: \[0, 3\] must map a class in \[0, 3\) to another one"),
        ([[1, 1]], r"data\.noise_map: \[1, 1\] must map a class"),
        ([[0, 1], [0, 2]], r"data\.noise_map: a class is the source of two pairs"),
        ([[0, 1, 2]], r"data\.noise_map: \[0, 1, 2\] is not a \[source, target\] pair"),
    ],
)
def test_asymmetric_needs_a_map_that_fits_the_classes(class_map, problem: str) -> None:
    from lossbench.errors import ConfigError

    with pytest.raises(ConfigError, match=problem):
        corrupt_labels(torch.tensor([0, 1, 2]), 0.2, "asymmetric", seed=0, num_classes=3, class_map=class_map)


def test_symmetric_noise_ignores_the_map() -> None:
    clean = make_labels([100] * C)
    noisy, _ = corrupt_labels(clean, 0.3, "symmetric", seed=0)
    again, _ = corrupt_labels(clean, 0.3, "symmetric", seed=0, class_map=MNIST_PAIRS)
    assert torch.equal(noisy, again)
