"""Tests for kdlib.data.partition: invariants over kinds and seeds, per-kind behaviour, stats and parsing."""

from __future__ import annotations

import numpy as np
import pytest

from kdlib.data.partition import (
    PartitionSpec,
    PartitionStats,
    parse_partition,
    partition_indices,
    partition_stats,
    party_classes_seen,
)
from kdlib.errors import KDConfigError

SEEDS = [0, 1, 7]
NUM_CLASSES = 10


def make_labels(seed: int, n: int = 3000, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Random labels with every class present (mildly unbalanced)."""
    rng = np.random.default_rng(1000 + seed)
    return np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n - num_classes)])


def balanced_labels(per_class: int = 500, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.repeat(np.arange(num_classes), per_class)


SPECS = {
    "iid": PartitionSpec("iid", num_parties=4),
    "dirichlet": PartitionSpec("dirichlet", num_parties=4, concentration=0.5),
    "dirichlet_balanced": PartitionSpec("dirichlet", num_parties=4, concentration=0.3, self_balancing=True),
    "disjoint_even": PartitionSpec("class_disjoint", num_parties=3),
    "disjoint_k": PartitionSpec("class_disjoint", num_parties=3, classes_per_party=3),
    "disjoint_shared": PartitionSpec("class_disjoint", num_parties=4, classes_per_party=4),
    "disjoint_explicit": PartitionSpec("class_disjoint", num_parties=2, party_classes=((0, 1, 2), (3, 9))),
    "quantity_power": PartitionSpec("quantity_skew", num_parties=4, skew_power=1.5),
    "quantity_sizes": PartitionSpec("quantity_skew", num_parties=3, sizes=(1, 2, 7)),
}
RANDOM_SPECS = [k for k in SPECS if k not in ("disjoint_even", "disjoint_k", "disjoint_explicit")]
COVERS_ALL = [k for k in SPECS if not k.startswith("disjoint")] + ["disjoint_even", "disjoint_shared"]


def label_dist(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.bincount(labels[idx], minlength=NUM_CLASSES) / idx.size


# --------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(SPECS))
def test_invariants(name: str, seed: int) -> None:
    labels = make_labels(seed)
    spec = SPECS[name]
    parts = partition_indices(labels, spec, seed=seed)
    assert len(parts) == spec.num_parties
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size  # disjoint
    assert joined.min() >= 0 and joined.max() < labels.size
    for part in parts:
        assert part.dtype == np.int64 and part.size > 0
        assert np.all(np.diff(part) > 0)  # sorted, no repeats
    if name in COVERS_ALL:
        assert np.array_equal(np.sort(joined), np.arange(labels.size))
    again = partition_indices(labels, spec, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@pytest.mark.parametrize("name", RANDOM_SPECS)
def test_other_seed_differs(name: str) -> None:
    labels = make_labels(0)
    a = partition_indices(labels, SPECS[name], seed=0)
    b = partition_indices(labels, SPECS[name], seed=1)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "quantity_skew"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_fraction_uses_a_stratified_share(kind: str, fraction: float) -> None:
    labels = balanced_labels(400)
    concentration = 1.0 if kind == "dirichlet" else None
    spec = PartitionSpec(kind, num_parties=3, concentration=concentration, fraction=fraction)
    joined = np.concatenate(partition_indices(labels, spec, seed=3))
    assert np.unique(joined).size == joined.size == round(fraction * 400) * NUM_CLASSES
    assert np.all(np.bincount(labels[joined]) == round(fraction * 400))


# ---------------------------------------------------------------------------------------------------- iid
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("parties", [1, 3, 7])
def test_iid_sizes_and_label_mix(seed: int, parties: int) -> None:
    labels = make_labels(seed, n=7001)
    parts = partition_indices(labels, PartitionSpec("iid", num_parties=parties), seed=seed)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == labels.size
    glob = label_dist(labels, np.arange(labels.size))
    for part in parts:
        assert np.abs(label_dist(labels, part) - glob).max() < 0.04
    assert partition_stats(labels, parts).heterogeneity < 0.06


# ---------------------------------------------------------------------------------------------- dirichlet
def mean_heterogeneity(labels: np.ndarray, spec: PartitionSpec, seeds: range) -> float:
    return float(
        np.mean([partition_stats(labels, partition_indices(labels, spec, s)).heterogeneity for s in seeds])
    )


def test_dirichlet_heterogeneity_grows_as_the_concentration_shrinks() -> None:
    labels = balanced_labels(300)
    het = {
        a: mean_heterogeneity(labels, PartitionSpec("dirichlet", num_parties=4, concentration=a), range(6))
        for a in (100.0, 1.0, 0.1)
    }
    assert het[100.0] < 0.15 < het[1.0] < het[0.1]
    assert het[0.1] > 0.6


@pytest.mark.parametrize("seed", SEEDS)
def test_dirichlet_min_size_respected(seed: int) -> None:
    labels = make_labels(seed, n=2000)
    spec = PartitionSpec("dirichlet", num_parties=10, concentration=0.1, min_size=50)
    assert min(p.size for p in partition_indices(labels, spec, seed=seed)) >= 50


def test_dirichlet_self_balancing_caps_growth() -> None:
    labels = balanced_labels(200)
    free, capped = (
        PartitionSpec("dirichlet", num_parties=5, concentration=0.2, self_balancing=b) for b in (False, True)
    )
    spread = {
        spec.self_balancing: np.mean(
            [np.ptp([p.size for p in partition_indices(labels, spec, s)]) for s in range(8)]
        )
        for spec in (free, capped)
    }
    assert spread[True] < spread[False]


def test_dirichlet_impossible_min_size() -> None:
    labels = balanced_labels(20)  # 200 samples
    with pytest.raises(KDConfigError, match="lower min_size"):
        partition_indices(labels, PartitionSpec("dirichlet", num_parties=4, concentration=1.0, min_size=60))
    with pytest.raises(KDConfigError, match="raise the concentration or lower min_size"):
        partition_indices(labels, PartitionSpec("dirichlet", num_parties=4, concentration=0.01, min_size=45))


# ------------------------------------------------------------------------------------------ class-disjoint
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("parties", "k"), [(2, 5), (3, 3), (5, 2), (10, 1)])
def test_disjoint_parties_hold_disjoint_classes(seed: int, parties: int, k: int) -> None:
    labels = make_labels(seed)
    parts = partition_indices(
        labels, PartitionSpec("class_disjoint", num_parties=parties, classes_per_party=k), seed
    )
    seen = np.stack([party_classes_seen(labels, p, NUM_CLASSES) for p in parts])
    assert np.all(seen.sum(axis=1) == k)
    assert np.all(seen.sum(axis=0) <= 1)
    assert partition_stats(labels, parts).heterogeneity == pytest.approx(1.0)


def test_disjoint_default_splits_classes_in_contiguous_blocks() -> None:
    labels = make_labels(0)
    parts = partition_indices(labels, PartitionSpec("class_disjoint", num_parties=3), seed=0)
    held = [np.unique(labels[p]).tolist() for p in parts]
    assert held == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_disjoint_explicit_lists_honoured() -> None:
    labels = make_labels(2)
    spec = PartitionSpec("class_disjoint", num_parties=2, party_classes=((0, 1, 2), (3, 9)))
    parts = partition_indices(labels, spec, seed=2)
    assert [np.unique(labels[p]).tolist() for p in parts] == [[0, 1, 2], [3, 9]]
    for part, classes in zip(parts, spec.party_classes, strict=True):
        assert part.size == np.isin(labels, classes).sum()


def test_disjoint_class_out_of_range() -> None:
    labels = make_labels(0)
    spec = PartitionSpec("class_disjoint", num_parties=2, party_classes=((0, 1), (2, 12)))
    with pytest.raises(KDConfigError, match=r"\[0, 10\)"):
        partition_indices(labels, spec)
    with pytest.raises(KDConfigError, match=r"\[0, 12\)"):
        partition_indices(
            labels, PartitionSpec("class_disjoint", num_parties=2, party_classes=((0,), (12,))), 0, 12
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_disjoint_shared_classes_split_samples_evenly(seed: int) -> None:
    labels = make_labels(seed)
    parts = partition_indices(
        labels, PartitionSpec("class_disjoint", num_parties=4, classes_per_party=4), seed
    )
    counts = partition_stats(labels, parts).counts
    assert np.all((counts > 0).sum(axis=1) == 4)
    for cls in range(NUM_CLASSES):
        shares = counts[:, cls][counts[:, cls] > 0]
        assert shares.sum() == (labels == cls).sum()
        assert shares.max() - shares.min() <= 1
    # 16 slots round-robin over 10 classes: classes 0-5 go to two parties, 6-9 to one
    assert (counts > 0).sum(axis=0).tolist() == [2] * 6 + [1] * 4


def test_disjoint_errors() -> None:
    labels = make_labels(0)
    with pytest.raises(KDConfigError, match="classes_per_party"):
        partition_indices(labels, PartitionSpec("class_disjoint", num_parties=2, classes_per_party=11))
    with pytest.raises(KDConfigError, match="even class split"):
        partition_indices(labels, PartitionSpec("class_disjoint", num_parties=11))
    no_class_3 = labels[labels != 3]
    spec = PartitionSpec("class_disjoint", num_parties=2, party_classes=((0, 1), (3,)))
    with pytest.raises(KDConfigError, match="party 1 got none"):
        partition_indices(no_class_3, spec)


# ------------------------------------------------------------------------------------------ quantity skew
@pytest.mark.parametrize("seed", SEEDS)
def test_quantity_skew_power(seed: int) -> None:
    labels = make_labels(seed, n=6000)
    parts = partition_indices(labels, PartitionSpec("quantity_skew", num_parties=4, skew_power=2.0), seed)
    sizes = np.array([p.size for p in parts])
    assert sizes.sum() == labels.size and np.all(np.diff(sizes) > 0)
    assert np.allclose(sizes / sizes.sum(), np.array([1, 4, 9, 16]) / 30, atol=1e-3)
    glob = label_dist(labels, np.arange(labels.size))
    assert np.abs(label_dist(labels, parts[0]) - glob).max() < 0.06  # smallest party: 200 samples
    assert partition_stats(labels, parts).heterogeneity < 0.1


def test_quantity_skew_explicit_sizes() -> None:
    labels = make_labels(0, n=1000)
    parts = partition_indices(labels, PartitionSpec("quantity_skew", num_parties=3, sizes=(5, 1, 4)))
    assert [p.size for p in parts] == [500, 100, 400]


def test_quantity_skew_default_power_and_empty_party() -> None:
    assert PartitionSpec("quantity_skew", num_parties=3).skew_power == 1.0
    with pytest.raises(KDConfigError, match="milder skew"):
        partition_indices(make_labels(0, n=20), PartitionSpec("quantity_skew", num_parties=3, skew_power=8))


# ---------------------------------------------------------------------------------------------- stats
def test_stats_balanced_split_is_zero() -> None:
    labels = balanced_labels(4, num_classes=3)  # 0000 1111 2222
    parts = [np.array([0, 1, 4, 5, 8, 9]), np.array([2, 3, 6, 7, 10, 11])]
    stats = partition_stats(labels, parts)
    assert isinstance(stats, PartitionStats)
    assert stats.counts.tolist() == [[2, 2, 2], [2, 2, 2]]
    assert stats.sizes.tolist() == [6, 6]
    assert stats.heterogeneity == 0.0 and stats.emd == 0.0


def test_stats_disjoint_split_by_hand() -> None:
    # 3 parties, 4 classes with 10 samples each; party 0 holds classes 0,1; party 1 class 2; party 2 class 3.
    labels = balanced_labels(10, num_classes=4)
    parts = [np.arange(0, 20), np.arange(20, 30), np.arange(30, 40)]
    stats = partition_stats(labels, parts)
    assert np.array_equal(stats.counts.sum(axis=1), stats.sizes)
    assert stats.heterogeneity == pytest.approx(1.0)
    # global = (.25,.25,.25,.25). L1: party 0 (.5,.5,0,0) -> 1.0; parties 1, 2 one-hot -> .75 + 3*.25 = 1.5
    assert stats.emd == pytest.approx((1.0 + 1.5 + 1.5) / 3)


def test_stats_partial_overlap_by_hand() -> None:
    # classes 0,1 with 10 samples; party 0: 8 of class 0 + 2 of class 1; party 1: the rest (2 + 8).
    labels = balanced_labels(10, num_classes=2)
    parts = [np.r_[0:8, 10:12], np.r_[8:10, 12:20]]
    stats = partition_stats(labels, parts)
    # each party vs the other: TV((.8,.2), (.2,.8)) = .6
    assert stats.heterogeneity == pytest.approx(0.6)
    assert stats.party_heterogeneity.tolist() == pytest.approx([0.6, 0.6])
    assert stats.emd == pytest.approx(0.6)  # L1((.8,.2), (.5,.5)) = .6


def test_stats_frame_and_validation() -> None:
    labels = balanced_labels(5, num_classes=3)
    stats = partition_stats(labels, [np.arange(5), np.arange(5, 15)], num_classes=4)
    frame = stats.to_frame(["a", "b", "c", "d"])
    assert frame.shape == (2, 4) and frame.loc[1, "b"] == 5 and frame.loc[0, "d"] == 0
    assert frame.index.name == "party" and frame.columns.name == "class"
    with pytest.raises(KDConfigError, match="exactly 4 names"):
        stats.to_frame(["a"])
    with pytest.raises(KDConfigError, match="indices in"):
        partition_stats(labels, [np.array([0, 99])])
    with pytest.raises(KDConfigError, match="max\\(label\\)"):
        partition_stats(labels, [np.arange(3)], num_classes=2)


def test_party_classes_seen_min_count() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    part = np.arange(6)
    assert party_classes_seen(labels, part, 4).tolist() == [True, True, True, False]
    assert party_classes_seen(labels, part, 4, min_count=2).tolist() == [True, False, True, False]
    with pytest.raises(KDConfigError, match="min_count"):
        party_classes_seen(labels, part, 4, min_count=0)


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iid", PartitionSpec("iid", num_parties=3)),
        ("dirichlet:0.5", PartitionSpec("dirichlet", num_parties=3, concentration=0.5)),
        (" Dirichlet:1e-1 ", PartitionSpec("dirichlet", num_parties=3, concentration=0.1)),
        ("disjoint", PartitionSpec("class_disjoint", num_parties=3)),
        ("disjoint:3", PartitionSpec("class_disjoint", num_parties=3, classes_per_party=3)),
        (
            "disjoint:0-4|5,7|6,8-9",
            PartitionSpec(
                "class_disjoint", num_parties=3, party_classes=((0, 1, 2, 3, 4), (5, 7), (6, 8, 9))
            ),
        ),
        ("quantity:1.5", PartitionSpec("quantity_skew", num_parties=3, skew_power=1.5)),
        ("quantity", PartitionSpec("quantity_skew", num_parties=3, skew_power=1.0)),
        ("quantity:1,2,7", PartitionSpec("quantity_skew", num_parties=3, sizes=(1.0, 2.0, 7.0))),
    ],
)
def test_parse_and_round_trip(text: str, expected: PartitionSpec) -> None:
    spec = parse_partition(text, num_parties=3)
    assert spec == expected
    assert parse_partition(spec.text, num_parties=3) == spec


def test_labels() -> None:
    assert parse_partition("iid").label == "IID"
    assert parse_partition("dirichlet:0.5").label == "Dirichlet α=0.5"
    assert parse_partition("disjoint:5").label == "class-disjoint (5/party)"
    assert parse_partition("disjoint").label == "class-disjoint"
    assert parse_partition("quantity:2").label == "quantity skew"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("dirichlet:0", "concentration"),
        ("dirichlet:-1", "concentration"),
        ("dirichlet:abc", "must be a number"),
        ("dirichlet:nan", "concentration"),
        ("dirichlet", "needs its concentration"),
        ("unknown", "known kind"),
        ("disjoint:0-4|x", "bad item 'x'"),
        ("disjoint:4-0|5", "low-high"),
        ("disjoint:0-4|5-9|", "bad item ''"),
        ("disjoint:0-2|3-5|6-9", "got 3 lists for num_parties=2"),
        ("disjoint:0", "classes_per_party"),
        ("quantity:-2", "skew_power"),
        ("quantity:1,0", "sizes"),
        ("iid:3", "without arguments"),
        ("dirichlet:", "a value after ':'"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(KDConfigError, match="partition") as info:
        parse_partition(text)
    assert info.value.field == "partition"
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------ spec errors
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kind": "random"}, "one of iid"),
        ({"kind": "iid", "num_parties": 0}, "num_parties"),
        ({"kind": "dirichlet"}, "concentration"),
        ({"kind": "dirichlet", "concentration": 0.0}, "concentration"),
        ({"kind": "iid", "concentration": 0.5}, "left unset for kind='iid'"),
        ({"kind": "dirichlet", "alpha": 0.0}, "alpha=0.0"),  # the old name is named as given
        ({"kind": "dirichlet", "alpha": 0.5, "concentration": 2.0}, "unset when concentration is given"),
        ({"kind": "iid", "fraction": 0.0}, "fraction"),
        ({"kind": "iid", "min_size": -1}, "min_size"),
        ({"kind": "class_disjoint", "classes_per_party": 2, "party_classes": ((0,), (1,))}, "unset when"),
        ({"kind": "class_disjoint", "party_classes": ((0,),)}, "exactly num_parties=2"),
        ({"kind": "class_disjoint", "party_classes": ((0, 0), (1,))}, "distinct"),
        ({"kind": "quantity_skew", "sizes": (1.0,)}, "one per party"),
        ({"kind": "quantity_skew", "sizes": (1, 2), "skew_power": 1.0}, "unset when sizes"),
    ],
)
def test_spec_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(KDConfigError) as info:
        PartitionSpec(**kwargs)
    assert fragment in str(info.value)


def test_alpha_is_the_old_name_of_the_dirichlet_concentration() -> None:
    old, new = PartitionSpec("dirichlet", 3, alpha=0.25), PartitionSpec("dirichlet", 3, concentration=0.25)
    assert old == new and old.alpha == old.concentration == 0.25 and old.text == "dirichlet:0.25"
    labels = balanced_labels(50)
    same = zip(partition_indices(labels, old, seed=4), partition_indices(labels, new, seed=4), strict=True)
    assert all(np.array_equal(a, b) for a, b in same)
    assert parse_partition("dirichlet:0.25", num_parties=3) == new  # the text form is unchanged


def test_more_parties_than_samples() -> None:
    labels = np.array([0, 1, 2])
    for spec in (PartitionSpec("iid", num_parties=4), PartitionSpec("dirichlet", num_parties=4, concentration=1.0)):
        with pytest.raises(KDConfigError, match="at most the number of samples"):
            partition_indices(labels, spec)
    with pytest.raises(KDConfigError, match="num_parties"):
        partition_indices(np.array([], dtype=int), PartitionSpec("iid", num_parties=1))


def test_bad_labels_and_seed() -> None:
    spec = PartitionSpec("iid")
    with pytest.raises(KDConfigError, match="integer labels"):
        partition_indices(np.array([0.5, 1.0]), spec)
    with pytest.raises(KDConfigError, match="integer labels"):
        partition_indices(np.zeros((2, 2), dtype=int), spec)
    with pytest.raises(KDConfigError, match=">= 0"):
        partition_indices(np.array([0, -1]), spec)
    with pytest.raises(KDConfigError, match="seed"):
        partition_indices(np.array([0, 1]), spec, seed=-3)
