"""The saturating power-law fit recovers known parameters and refuses what it cannot fit."""
import numpy as np
import pytest
from scipy import optimize, stats

from reports.fits import fit_power_law


def noisy_power_law(a, b, c, *, n=20, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    compute = np.geomspace(1e6, 1e12, n)
    y = a * compute ** -b + c
    return compute, y * (1 + noise * rng.standard_normal(n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_a_b_c_of_a_falling_law_within_its_intervals(seed):
    a, b, c = 5e3, 0.3, 4.0
    fit = fit_power_law(*noisy_power_law(a, b, c, seed=seed))
    for name, true in (("a", a), ("b", b), ("c", c)):
        low, high = fit.ci[name]
        assert low < true < high, (name, fit.ci[name])
    assert fit.b == pytest.approx(b, rel=0.1) and fit.c == pytest.approx(c, abs=1.0)
    assert fit.a == pytest.approx(a, rel=0.5)


def test_recovers_a_rising_metric_such_as_inception_score():
    compute = np.geomspace(1e3, 1e9, 12)
    fit = fit_power_law(compute, 250.0 - 900.0 * compute ** -0.25)
    assert (fit.a, fit.b, fit.c) == pytest.approx((-900.0, 0.25, 250.0), rel=1e-4)


def test_intervals_match_a_fit_in_the_raw_parametrisation():
    """The 95% t intervals equal those of curve_fit on a * C^(-b) + c directly (the reported fit is
    done in a centred variable; a's interval comes from the delta method)."""
    compute, y = noisy_power_law(5e3, 0.3, 4.0, n=25, noise=0.02, seed=4)
    fit = fit_power_law(compute, y)
    raw, cov = optimize.curve_fit(lambda x, a, b, c: a * x ** -b + c, compute, y, p0=(fit.a, fit.b, fit.c), maxfev=20000)
    t = stats.t.ppf(0.975, len(y) - 3)
    for i, name in enumerate("abc"):
        assert fit.ci[name][0] == pytest.approx(raw[i] - t * np.sqrt(cov[i, i]), rel=1e-3)
        assert fit.ci[name][1] == pytest.approx(raw[i] + t * np.sqrt(cov[i, i]), rel=1e-3)


def test_prediction_inverts_compute_for_a_target():
    fit = fit_power_law(*noisy_power_law(5e3, 0.3, 4.0))
    target = 5.0
    compute = fit.compute_for(target)
    assert fit.predict(compute) == pytest.approx(target)
    assert fit.compute_for(fit.c - 1) is None  # below the asymptote: never reached


def test_residuals_are_observed_minus_fitted():
    compute, y = noisy_power_law(5e3, 0.3, 4.0, noise=0.05)
    fit = fit_power_law(compute, y)
    np.testing.assert_allclose(fit.residuals, y - (fit.a * compute ** -fit.b + fit.c), rtol=1e-6, atol=1e-9)


def test_three_points_fit_exactly_without_intervals():
    compute = np.array([1e6, 1e8, 1e10])
    fit = fit_power_law(compute, 100.0 * (compute / 1e6) ** -0.5 + 2.0)
    assert np.allclose(fit.residuals, 0, atol=1e-6) and fit.dof == 0
    assert all(np.isnan(low) and np.isnan(high) for low, high in fit.ci.values())


def test_refuses_fewer_points_than_parameters():
    with pytest.raises(ValueError, match=r"to 2 point\(s\); it needs at least 3"):
        fit_power_law([1e6, 1e7], [50.0, 30.0])
    with pytest.raises(ValueError, match="same compute"):
        fit_power_law([1e6, 1e6, 1e6], [50.0, 40.0, 30.0])
