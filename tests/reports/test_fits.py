"""The saturating power-law fit recovers known parameters and refuses what it cannot fit."""
import numpy as np
import pytest
from scipy import optimize, stats

from reports.fits import (
    backtest,
    fit_law,
    fit_loglog,
    fit_parabola,
    fit_saturating_law,
    isoflop,
)


def noisy_power_law(a, b, c, *, n=20, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    compute = np.geomspace(1e6, 1e12, n)
    y = a * compute ** -b + c
    return compute, y * (1 + noise * rng.standard_normal(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_b_c_of_a_falling_law_within_its_intervals(seed):
    a, b, c = 5e3, 0.3, 4.0
    fit = fit_saturating_law(*noisy_power_law(a, b, c, seed=seed))
    for name, true in (("a", a), ("b", b), ("c", c)):
        low, high = fit.ci[name]
        assert low < true < high, (name, fit.ci[name])
    assert fit.b == pytest.approx(b, rel=0.1) and fit.c == pytest.approx(c, abs=1.0)
    assert fit.a == pytest.approx(a, rel=0.5)


def test_recovers_a_rising_metric_such_as_inception_score():
    compute = np.geomspace(1e3, 1e9, 12)
    fit = fit_saturating_law(compute, 250.0 - 900.0 * compute ** -0.25)
    assert (fit.a, fit.b, fit.c) == pytest.approx((-900.0, 0.25, 250.0), rel=1e-4)


def test_intervals_match_a_fit_in_the_raw_parametrisation():
    """The 95% t intervals equal those of curve_fit on a * C^(-b) + c directly (the reported fit is
    done in a centred variable; a's interval comes from the delta method)."""
    compute, y = noisy_power_law(5e3, 0.3, 4.0, n=25, noise=0.02, seed=4)
    fit = fit_saturating_law(compute, y)
    raw, cov = optimize.curve_fit(lambda x, a, b, c: a * x**-b + c, compute, y, p0=(fit.a, fit.b, fit.c), maxfev=20000)
    t = stats.t.ppf(0.975, len(y) - 3)
    for i, name in enumerate("abc"):
        assert fit.ci[name][0] == pytest.approx(raw[i] - t * np.sqrt(cov[i, i]), rel=1e-3)
        assert fit.ci[name][1] == pytest.approx(raw[i] + t * np.sqrt(cov[i, i]), rel=1e-3)


def test_prediction_inverts_compute_for_a_target():
    fit = fit_saturating_law(*noisy_power_law(5e3, 0.3, 4.0))
    target = 5.0
    compute = fit.compute_for(target)
    assert fit.predict(compute) == pytest.approx(target)
    assert fit.compute_for(fit.c - 1) is None  # below the asymptote: never reached


def test_residuals_are_observed_minus_fitted():
    compute, y = noisy_power_law(5e3, 0.3, 4.0, noise=0.05)
    fit = fit_saturating_law(compute, y)
    np.testing.assert_allclose(fit.residuals, y - (fit.a * compute ** -fit.b + fit.c), rtol=1e-6, atol=1e-9)


def test_three_points_fit_exactly_without_intervals():
    compute = np.array([1e6, 1e8, 1e10])
    fit = fit_saturating_law(compute, 100.0 * (compute / 1e6) ** -0.5 + 2.0)
    assert np.allclose(fit.residuals, 0, atol=1e-6) and fit.dof == 0
    assert all(np.isnan(low) and np.isnan(high) for low, high in fit.ci.values())


def test_refuses_fewer_points_than_parameters():
    with pytest.raises(ValueError, match=r"to 2 point\(s\); it needs at least 3"):
        fit_saturating_law([1e6, 1e7], [50.0, 30.0])
    with pytest.raises(ValueError, match="same compute"):
        fit_saturating_law([1e6, 1e6, 1e6], [50.0, 40.0, 30.0])


# --- Laws, intervals, backtests and isoFLOP profiles (issue 12) -------------------------------------------------

SATURATING = (5e3, 0.3, 4.0)
POWER = (50.0, 0.1)


def draw(true, *, seed, points=12, repeats=1, noise=0.1):
    """x from 1e6 to 1e12 (each x `repeats` times, as seeds), y = the law + Gaussian noise of sd `noise`."""
    rng = np.random.default_rng(seed)
    x = np.repeat(np.geomspace(1e6, 1e12, points), repeats)
    mean = true[0] * x ** -true[1] + (true[2] if len(true) == 3 else 0.0)
    return x, mean + noise * rng.standard_normal(len(x))


@pytest.mark.parametrize("law, true", [("saturating", SATURATING), ("power", POWER)])
def test_the_exponents_interval_covers_the_truth_in_about_95_of_100_draws(law, true):
    inside = 0
    for seed in range(100):
        low, high = fit_law(*draw(true, seed=seed), law).ci["b"]
        inside += low < true[1] < high
    assert 90 <= inside <= 99  # nominal 95: neither too narrow nor uselessly wide


@pytest.mark.parametrize("law, true", [("saturating", SATURATING), ("power", POWER)])
def test_backtest_prediction_intervals_cover_held_out_points_at_about_their_nominal_rate(law, true):
    inside = []
    for seed in range(100):
        result = backtest(*draw(true, seed=seed, points=8, repeats=2), law, holdout=1)
        assert len(result.held_out) == 2 and result.fit.dof == 14 - len(true)
        inside += [p["inside"] for p in result.held_out]
    assert 0.88 <= np.mean(inside) <= 0.99


def test_power_law_recovers_a_and_b_and_has_no_asymptote():
    x, y = draw(POWER, seed=3, noise=0.01)
    fit = fit_law(x, y, "power")
    assert set(fit.params) == {"a", "b"} and fit.c == 0.0
    assert fit.a == pytest.approx(POWER[0], rel=0.05) and fit.b == pytest.approx(POWER[1], rel=0.05)
    assert fit.formula().count("+") == 0 and fit.trend_is_established()


def test_prediction_interval_is_the_delta_method_plus_residual_variance():
    """Recomputed in the raw parametrisation a * x^(-b) + c, with a finite-difference gradient."""
    x, y = draw(SATURATING, seed=5)
    fit = fit_law(x, y, "saturating")

    def model(x, a, b, c):
        return a * x ** -b + c

    raw, cov = optimize.curve_fit(model, x, y, p0=(fit.a, fit.b, fit.c), maxfev=20000)
    x0 = np.array([3e12, 1e13])
    grad = np.stack([(model(x0, *(raw + h)) - model(x0, *(raw - h))) / (2 * h[h != 0])
                     for h in np.diag(np.abs(raw) * 1e-6)], axis=1)
    s2 = np.sum((y - model(x, *raw)) ** 2) / (len(y) - 3)
    half = stats.t.ppf(0.975, len(y) - 3) * np.sqrt(np.einsum("mi,ij,mj->m", grad, cov, grad) + s2)
    low, high = fit.prediction_interval(x0)
    np.testing.assert_allclose(low, model(x0, *raw) - half, rtol=1e-4)
    np.testing.assert_allclose(high, model(x0, *raw) + half, rtol=1e-4)


def test_reported_fits_need_parameters_plus_two_points():
    x, y = draw(SATURATING, seed=0, points=4)
    with pytest.raises(ValueError, match=r"to 4 point\(s\); it needs at least 5 \(parameters \+ 2\)"):
        fit_law(x, y, "saturating")
    assert fit_law(*draw(POWER, seed=0, points=4), "power").dof == 2
    with pytest.raises(ValueError, match="unknown law 'linear'; choose one of saturating, power"):
        fit_law(x, y, "linear")


def test_backtest_holds_out_every_row_at_the_largest_x_and_refuses_too_few_left():
    x, y = draw(POWER, seed=1, points=6, repeats=3)
    result = backtest(x, y, "power", holdout=2)
    assert [p["x"] for p in result.held_out] == sorted(np.repeat(np.geomspace(1e6, 1e12, 6)[-2:], 3).tolist())
    assert len(result.fit.x) == 12
    with pytest.raises(ValueError, match=r"leaves 3 point\(s\), and a 2-parameter law needs at least 4"):
        backtest(x, y, "power", holdout=5)
    with pytest.raises(ValueError, match="cannot hold out 6 of 6 distinct x values"):
        backtest(x, y, "power", holdout=6)


def test_parabola_vertex_matches_polyfit_and_its_interval_covers_the_optimum():
    inside = covered = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        gflops = np.repeat(np.geomspace(1.0, 100.0, 5), 2)
        loss = 2.0 * np.exp(0.15 * np.log(gflops / 10.0) ** 2 + 0.025 * rng.standard_normal(len(gflops)))
        optimum = fit_parabola(gflops, loss).optimum
        inside += optimum["x_low"] < 10.0 < optimum["x_high"]
        covered += optimum["y_low"] < 2.0 < optimum["y_high"]
    p2, p1, p0 = np.polyfit(np.log(gflops), np.log(loss), 2)  # the parabola in log-log space
    assert optimum["x"] == pytest.approx(np.exp(-p1 / (2 * p2)))
    assert optimum["y"] == pytest.approx(np.exp(p0 - p1 ** 2 / (4 * p2)))
    assert 90 <= inside <= 99 and 90 <= covered <= 99


def test_parabola_without_a_minimum_or_at_two_sizes_is_refused():
    gflops = np.geomspace(1.0, 100.0, 6)
    with pytest.raises(ValueError, match="no minimum: the models trained do not bracket the optimum"):
        fit_parabola(gflops, 3.0 * np.exp(-0.2 * np.log(gflops) ** 2))
    params = np.array([1.28e6, 1.2805e6, 1.2965e6, 4.17e6, 4.176e6, 4.2e6])  # the demo's T and M at p = 2, 4, 8
    with pytest.raises(ValueError, match="6 point\\(s\\) at 2 distinct model size\\(s\\)"):
        fit_parabola(params, np.array([0.05, 0.06, 0.04, 0.07, 0.03, 0.05]))
    with pytest.raises(ValueError, match="values of 0 or less"):
        fit_parabola(gflops, np.log(gflops) ** 2)


def test_loglog_fit_matches_the_textbook_line_and_its_prediction_interval():
    budgets = np.array([1e15, 3e15, 1e16, 3e16, 1e17])
    optimal = 1e-6 * budgets ** 0.5 * np.array([1.1, 0.9, 1.05, 0.97, 1.02])
    fit = fit_loglog(budgets, optimal)
    line = stats.linregress(np.log(budgets), np.log(optimal))
    assert fit.exponent == pytest.approx(line.slope)
    lx, ly = np.log(budgets), np.log(optimal)
    s = np.sqrt(np.sum((ly - line.intercept - line.slope * lx) ** 2) / 3)
    x0 = np.log(1e18)
    se = s * np.sqrt(1 + 1 / 5 + (x0 - lx.mean()) ** 2 / np.sum((lx - lx.mean()) ** 2))
    low, high = fit.prediction_interval(1e18)
    centre = line.intercept + line.slope * x0
    assert (low[0], high[0]) == pytest.approx((np.exp(centre - stats.t.ppf(0.975, 3) * se),
                                               np.exp(centre + stats.t.ppf(0.975, 3) * se)))


def test_isoflop_finds_each_budgets_optimum_and_the_law_of_optima():
    """Optimal Gflops grows as budget^0.5 by construction; four budgets give the law."""
    budgets, gflops, loss = [], [], []
    for budget in (1e15, 1e16, 1e17, 1e18):
        best = 1e-7 * budget ** 0.5
        for g in best * np.geomspace(0.1, 10.0, 5):
            budgets.append(budget), gflops.append(g), loss.append(2.0 + 0.2 * np.log(g / best) ** 2)
    result = isoflop(budgets, gflops, loss)
    assert sorted(result.profiles) == [1e15, 1e16, 1e17, 1e18] and not result.not_fitted
    for budget, optimum in result.optima():
        assert optimum["x"] == pytest.approx(1e-7 * budget ** 0.5) and optimum["inside"]
    assert result.optimal_x.exponent == pytest.approx(0.5)
    three = isoflop(budgets[:15], gflops[:15], loss[:15])
    assert three.optimal_x is None and "3 budget(s) with an optimum" in three.why_no_law
