import numpy as np
import pytest
from _alignment_data import low_rank

from convergence_monitor.alignment import (
    METRICS,
    AlignmentInputError,
    debiased_cka,
    linear_cka,
    linear_regression_score,
    list_metrics,
    permutation_score,
    procrustes_distance,
    procrustes_score,
    rsa_score,
    score,
    score_pairs,
    soft_matching_score,
)

SINGLE = {
    "linear_regression": linear_regression_score,
    "procrustes": procrustes_score,
    "procrustes_distance": procrustes_distance,
    "permutation": permutation_score,
    "soft_matching": soft_matching_score,
    "linear_cka": linear_cka,
    "debiased_cka": debiased_cka,
    "rsa": rsa_score,
}
FOLDED = {"linear_regression", "procrustes", "permutation", "soft_matching"}


def seed_features(widths, n=90, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.standard_normal((n, 4))
    return {
        label: signal @ rng.standard_normal((4, width)) + rng.standard_normal((n, width))
        for label, width in widths.items()
    }


def test_registry_lists_every_metric():
    assert list_metrics() == tuple(SINGLE)
    for name, function in SINGLE.items():
        info = METRICS[name]
        assert info.function is function
        assert info.uses_folds == (name in FOLDED)
        assert info.kind == ("distance" if name == "procrustes_distance" else "score")
        assert info.higher_is_better == (info.kind == "score")
        assert info.invariances


def test_score_pairs_equals_single_pair_functions_bitwise():
    features = seed_features({"a": 7, "b": 7, "c": 7})
    names = list(SINGLE)
    batched = score_pairs(features, names, folds=4, seed=3)
    assert list(batched) == [("a", "b"), ("a", "c"), ("b", "c")]
    for (first, second), scores in batched.items():
        assert list(scores) == names
        for name, value in scores.items():
            options = {"folds": 4, "seed": 3} if name in FOLDED else {}
            assert value == SINGLE[name](features[first], features[second], **options), name


def test_score_pairs_bitwise_with_unequal_widths_and_options():
    features = seed_features({0: 5, 1: 9, 2: 12, 3: 9})
    names = ["linear_regression", "procrustes", "soft_matching", "linear_cka"]
    options = {"linear_regression": {"alphas": [0.1, 10.0], "symmetric": False}, "procrustes": {"symmetric": False}}
    batched = score_pairs(features, names, options=options)
    for (first, second), scores in batched.items():
        X, Y = features[first], features[second]
        assert scores["linear_regression"] == linear_regression_score(X, Y, alphas=[0.1, 10.0], symmetric=False)
        assert scores["procrustes"] == procrustes_score(X, Y, symmetric=False)
        assert scores["soft_matching"] == soft_matching_score(X, Y)
        assert scores["linear_cka"] == linear_cka(X, Y)


def test_score_dispatches_by_name():
    features = seed_features({0: 6, 1: 6})
    X, Y = features[0], features[1]
    assert score("procrustes", X, Y, folds=3) == procrustes_score(X, Y, folds=3)
    assert score("rsa", X, Y) == rsa_score(X, Y)


def test_score_pairs_rejects_bad_requests():
    features = seed_features({0: 6, 1: 8})
    with pytest.raises(AlignmentInputError, match="unknown alignment metric 'svcca'"):
        score_pairs(features, ["svcca"])
    with pytest.raises(AlignmentInputError, match=r"seed 0: 6, seed 1: 8\. Use soft_matching_score"):
        score_pairs(features, ["permutation"])
    with pytest.raises(AlignmentInputError, match=r"options were given for metrics that were not requested: \['rsa'\]"):
        score_pairs(features, ["procrustes"], options={"rsa": {}})
    with pytest.raises(AlignmentInputError, match=r"does not take options \['alphas'\]"):
        score_pairs(features, ["procrustes"], options={"procrustes": {"alphas": [1.0]}})
    with pytest.raises(AlignmentInputError, match="at least 2 seeds; found 1"):
        score_pairs({0: features[0]}, ["procrustes"])
    with pytest.raises(AlignmentInputError, match=r"found repeats of \['rsa'\]"):
        score_pairs(features, ["rsa", "rsa"])


def test_score_pairs_accepts_single_metric_name():
    features = seed_features({0: 6, 1: 6})
    assert score_pairs(features, "linear_cka") == {(0, 1): {"linear_cka": linear_cka(features[0], features[1])}}


def test_pairs_in_mapping_order_not_sorted_order():
    features = seed_features({"z": 4, "a": 4})
    assert list(score_pairs(features, ["linear_cka"])) == [("z", "a")]


def test_score_pairs_shares_per_seed_work(monkeypatch):
    from convergence_monitor.alignment import _engine

    calls = {"eigh": 0, "pair_cross": 0}
    original_eigh = np.linalg.eigh
    original_pair_cross = _engine.pair_cross

    def counting_eigh(matrix):
        calls["eigh"] += 1
        return original_eigh(matrix)

    def counting_pair_cross(first, second):
        calls["pair_cross"] += 1
        return original_pair_cross(first, second)

    monkeypatch.setattr(np.linalg, "eigh", counting_eigh)
    monkeypatch.setattr(_engine, "pair_cross", counting_pair_cross)
    features = seed_features({0: 6, 1: 6, 2: 6, 3: 6})
    score_pairs(features, ["linear_regression", "procrustes", "permutation", "soft_matching"], folds=3)

    # One Gram eigendecomposition per seed and fold serves both directions of
    # every pair, and one cross-covariance per pair and fold serves every metric.
    assert calls["eigh"] == 4 * 3
    assert calls["pair_cross"] == 6 * 3


def test_pair_threads_match_one_thread():
    import warnings

    features = seed_features({"a": 12, "b": 12, "c": 12, "d": 12}, n=120, seed=4)
    # A unit constant on some training folds but not others, and a seed whose units are all constant.
    features["b"][:60, 3] = 1.5
    features["d"][:] = 2.0
    names = ["linear_regression", "procrustes", "permutation", "soft_matching", "linear_cka"]
    results, messages = [], []
    for workers in (1, 3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(score_pairs(features, names, folds=5, workers=workers))
        messages.append([(record.category, str(record.message)) for record in caught])
    assert messages[0] == messages[1]
    assert len(messages[0]) > 3
    one, three = results
    assert list(one) == list(three)
    for pair in one:
        for name in names:
            # Bitwise equal, with NaN equal to NaN for the all-constant seed.
            assert np.array_equal([one[pair][name]], [three[pair][name]], equal_nan=True)
    assert np.isnan(one[("a", "d")]["procrustes"])
    assert np.isfinite(one[("a", "b")]["procrustes"])


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_score_pairs_rejects_bad_worker_counts(workers):
    with pytest.raises(AlignmentInputError, match="workers must be a positive integer"):
        score_pairs(seed_features({"a": 4, "b": 4}), "procrustes", workers=workers)


def test_thread_solver_error_reaches_caller(monkeypatch):
    import ot

    def failing(*args, **kwargs):
        raise RuntimeError("solver failed on purpose")

    monkeypatch.setattr(ot, "emd", failing)
    features = seed_features({"a": 5, "b": 6, "c": 7})
    with pytest.raises(RuntimeError, match="solver failed on purpose"):
        score_pairs(features, ["soft_matching"], folds=5, workers=3)


def test_thread_error_independent_of_workers(monkeypatch):
    from convergence_monitor.alignment import procrustes

    original = procrustes.fold_kernel

    def failing_on_two_pairs(first, second, cross, **options):
        if first.width + second.width in (9, 13):
            raise RuntimeError(f"failed on widths {first.width} and {second.width}")
        return original(first, second, cross, **options)

    from convergence_monitor.alignment import registry

    monkeypatch.setitem(registry._KERNELS, "procrustes", (failing_on_two_pairs, None, None))
    features = seed_features({"a": 4, "b": 5, "c": 8, "d": 9})
    raised = set()
    for workers in (1, 2, 3, 6):
        with pytest.raises(RuntimeError) as caught:
            score_pairs(features, ["procrustes"], folds=3, workers=workers)
        raised.add(str(caught.value))
    assert raised == {"failed on widths 4 and 5"}


def test_numpy_integer_worker_count_is_accepted():
    features = seed_features({"a": 4, "b": 4})
    assert score_pairs(features, "procrustes", workers=np.int64(2)) == score_pairs(features, "procrustes")


def test_float8_scored_as_float32():
    torch = pytest.importorskip("torch")
    X = torch.from_numpy(seed_features({"a": 5})["a"]).float()
    low = X.to(torch.float8_e4m3fn)
    assert procrustes_score(low, X) == procrustes_score(low.float(), X)


def test_meta_tensor_rejected():
    torch = pytest.importorskip("torch")
    X = torch.from_numpy(seed_features({"a": 5})["a"]).float()
    with pytest.raises(AlignmentInputError, match="X is a meta tensor"):
        procrustes_score(torch.empty(90, 5, device="meta"), X)
