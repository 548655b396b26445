import numpy as np
import ot
import pytest
from _alignment_data import low_rank, privileged_pair, random_orthogonal
from scipy.optimize import linear_sum_assignment

from convergence_monitor.alignment import make_folds, permutation_score, soft_matching_score


def correlations(A, B):
    return np.corrcoef(A.T, B.T)[: A.shape[1], A.shape[1]:]


def scipy_permutation_score(X, Y, folds=5, seed=0):
    scores = []
    for training, held_out in make_folds(X.shape[0], folds, seed):
        rows, columns = linear_sum_assignment(correlations(X[training], Y[training]), maximize=True)
        scores.append(np.diag(correlations(X[held_out][:, rows], Y[held_out][:, columns])).mean())
    return float(np.mean(scores))


def pot_soft_matching_score(X, Y, folds=5, seed=0):
    p, q = X.shape[1], Y.shape[1]
    scores = []
    for training, held_out in make_folds(X.shape[0], folds, seed):
        plan = ot.emd(np.full(p, 1 / p), np.full(q, 1 / q), 1.0 - correlations(X[training], Y[training]))
        scores.append(np.sum(plan * correlations(X[held_out], Y[held_out])))
    return float(np.mean(scores))


@pytest.mark.parametrize("kind", ["random", "privileged", "low_rank"])
def test_permutation_matches_scipy_assignment(kind):
    rng = np.random.default_rng(0)
    if kind == "random":
        X, Y = rng.standard_normal((100, 9)), rng.standard_normal((100, 9))
    elif kind == "privileged":
        X, Y = privileged_pair(rng, 100, 9)
    else:
        X, Y = low_rank(rng, 100, 9), low_rank(rng, 100, 9)
    assert permutation_score(X, Y) == pytest.approx(scipy_permutation_score(X, Y), abs=1e-12)


@pytest.mark.parametrize("widths", [(9, 9), (12, 7), (5, 11)])
def test_soft_matching_matches_pot(widths):
    rng = np.random.default_rng(1)
    X, Y = low_rank(rng, 100, widths[0], noise=1.0), low_rank(rng, 100, widths[1], noise=1.0)
    assert soft_matching_score(X, Y) == pytest.approx(pot_soft_matching_score(X, Y), abs=1e-12)


def test_equal_widths_soft_matching_equals_permutation():
    for draw in range(3):
        X, Y = privileged_pair(np.random.default_rng(2 + draw), 150, 10, noise=0.8)
        assert soft_matching_score(X, Y) == pytest.approx(permutation_score(X, Y), abs=1e-12)


def test_reordered_copy_scores_one():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 8))
    reordered = X[:, rng.permutation(8)]
    assert permutation_score(X, reordered) == pytest.approx(1.0, abs=1e-12)
    assert soft_matching_score(X, reordered) == pytest.approx(1.0, abs=1e-12)


def test_duplicated_units_keep_soft_matching_at_one():
    X = np.random.default_rng(4).standard_normal((80, 6))
    doubled = np.hstack([X, X])
    assert soft_matching_score(doubled, X) == pytest.approx(1.0, abs=1e-12)
    assert soft_matching_score(X, doubled) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("draw", range(3))
def test_invariant_to_unit_order(draw):
    rng = np.random.default_rng(10 + draw)
    X, Y = privileged_pair(rng, 120, 8, noise=1.0)
    order_x, order_y = rng.permutation(8), rng.permutation(8)
    assert permutation_score(X[:, order_x], Y[:, order_y]) == pytest.approx(permutation_score(X, Y), abs=1e-12)
    wide = np.hstack([Y, rng.standard_normal((120, 3))])
    order_wide = rng.permutation(11)
    assert soft_matching_score(X[:, order_x], wide[:, order_wide]) == pytest.approx(
        soft_matching_score(X, wide), abs=1e-12
    )


def test_rotation_lowers_scores_of_privileged_basis():
    rng = np.random.default_rng(5)
    X, Y = privileged_pair(rng, 300, 12)
    rotated = Y @ random_orthogonal(rng, 12)
    assert permutation_score(X, Y) > 0.8
    assert permutation_score(X, Y) - permutation_score(X, rotated) > 0.3
    assert soft_matching_score(X, Y) - soft_matching_score(X, rotated) > 0.3


def bad_plan_solver(kind):
    def solver(a, b, M, numItermax=None, log=False):
        plan = np.diag(a) if a.size == b.size else np.outer(a, b)
        result_code = 1
        if kind == "negative":
            plan = plan.copy()
            plan[0, 0] -= 0.5
            plan[0, 1] += 0.5
        elif kind == "rows":
            plan = plan * np.linspace(0.5, 1.5, a.size)[:, None]
        elif kind == "mass":
            plan = 0.5 * plan
        elif kind == "zeros":
            plan = np.zeros_like(plan)
        elif kind == "code":
            result_code = 2
        return (plan, {"result_code": result_code, "warning": "iteration limit"}) if log else plan

    return solver


@pytest.mark.parametrize(
    "kind, message",
    [
        ("negative", "negative mass"),
        ("rows", "row sums differ from 1/6"),
        ("mass", "row sums differ"),
        ("zeros", "row sums differ"),
        ("code", "did not find an optimal transport plan .*result code 2"),
    ],
)
def test_invalid_transport_plan_raises(monkeypatch, kind, message):
    # Unequal widths: equal widths take the Hungarian path and never call ot.emd.
    monkeypatch.setattr(ot, "emd", bad_plan_solver(kind))
    X = np.random.default_rng(6).standard_normal((40, 6))
    with pytest.raises(RuntimeError, match=message):
        soft_matching_score(X, np.hstack([X, X[:, :1]]))


def test_soft_matching_equal_widths_skip_emd(monkeypatch):
    rng = np.random.default_rng(8)
    X, Y = low_rank(rng, 300, 48, noise=1.0), low_rank(rng, 300, 48, noise=1.0)
    expected = pot_soft_matching_score(X, Y)

    def refuse(*args, **kwargs):
        raise AssertionError("ot.emd was called for equal widths")

    monkeypatch.setattr(ot, "emd", refuse)
    assert soft_matching_score(X, Y) == pytest.approx(expected, abs=1e-12)


def test_non_permutation_assignment_raises(monkeypatch):
    from convergence_monitor.alignment import matching

    def repeated(cost, maximize=False):
        p = cost.shape[0]
        return np.arange(p), np.zeros(p, dtype=int)

    monkeypatch.setattr(matching, "linear_sum_assignment", repeated)
    X = np.random.default_rng(9).standard_normal((40, 5))
    with pytest.raises(RuntimeError, match="not a permutation"):
        soft_matching_score(X, X)


def test_column_sum_violation_raises(monkeypatch):
    def solver(a, b, M, numItermax=None, log=False):
        plan = np.outer(a, b)
        plan[:, 0] += plan[:, 1]
        plan[:, 1] = 0.0
        return plan, {"result_code": 1, "warning": None}

    monkeypatch.setattr(ot, "emd", solver)
    X = np.random.default_rng(7).standard_normal((40, 4))
    with pytest.raises(RuntimeError, match="column sums differ from 1/5"):
        soft_matching_score(X, np.hstack([X, X[:, :1]]))
