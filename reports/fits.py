"""Scaling-law fits that say how sure they are: laws with t intervals, prediction intervals and
backtests, and isoFLOP profiles with their compute-optimal model.

Laws (the registry `LAWS`), C being training compute, forward Gflops or any positive x:
- saturating: y = a * C^(-b) + c, a power law that levels off at c (b > 0);
- power:      y = a * C^(-b), no floor (b of either sign).
Both are fitted by least squares on y (scipy curve_fit) in a centred log variable u = ln C - mean(ln C),
as y = A * exp(-b u) [+ c] with a = A * exp(b * mean(ln C)), so that compute spanning ten decades stays
well conditioned. Intervals:
- a parameter's: the t interval (dof = n - k) from curve_fit's covariance (a's by the delta method);
- a prediction's, for a new observation at C: the delta method through the parameter covariance plus
  the residual variance, with the same t quantile.
The report and `scaling fit` fit only with n >= k + 2 points (`Law.min_points`): with n = k the curve
passes through every point and its intervals are undefined; with n = k + 1 one dof leaves a t quantile
of 12.7 and an interval wider than the data.

isoFLOP profiles: at one training-compute budget the metric against ln(model Gflops) is a parabola
(ordinary least squares); its vertex is the compute-optimal model for that budget, with a delta-method
interval. Across budgets, the optimal Gflops and the optimal metric are power laws of the budget fitted
as straight lines in log-log space (`fit_loglog`), with prediction intervals (e.g. at 10x the largest budget).
"""
import dataclasses
import warnings

import numpy as np
from scipy import optimize, stats

MIN_EXTRA_POINTS = 2  # a reported fit has at least as many points as parameters + this


@dataclasses.dataclass(frozen=True, kw_only=True)
class Law:
    """A scaling law y = a * C^(-b) [+ c], evaluated in the centred variable u as A * exp(-b u) [+ c]."""

    name: str
    formula: str
    params: tuple[str, ...]
    b_bounds: tuple[float, float]

    @property
    def saturates(self) -> bool:
        return "c" in self.params

    @property
    def min_points(self) -> int:
        return len(self.params) + MIN_EXTRA_POINTS

    def curve(self, u, *theta) -> np.ndarray:
        """The law at u for theta = (A, b[, c])."""
        value = theta[0] * np.exp(-theta[1] * u)
        return value + theta[2] if self.saturates else value

    def gradient(self, u, theta) -> np.ndarray:
        """d curve / d theta at each u: (n, k)."""
        e = np.exp(-theta[1] * u)
        columns = [e, -theta[0] * u * e] + ([np.ones_like(e)] if self.saturates else [])
        return np.stack(columns, axis=-1)


LAWS = {
    "saturating": Law(name="saturating", formula="a * C^(-b) + c", params=("a", "b", "c"), b_bounds=(1e-6, 20.0)),
    "power": Law(name="power", formula="a * C^(-b)", params=("a", "b"), b_bounds=(-20.0, 20.0)),
}


def get_law(name) -> Law:
    """The law called `name` (or `name` itself when it is a Law); ValueError naming the choices."""
    if isinstance(name, Law):
        return name
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}")
    return LAWS[name]


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided t quantile for `confidence` at `dof` degrees of freedom (nan without any)."""
    return float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else float("nan")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LawFit:
    """A fitted law, its parameters' confidence intervals, and prediction intervals for new points."""

    law: Law
    theta: np.ndarray  # (k,) A, b[, c] of the centred fit
    cov: np.ndarray  # (k, k) covariance of theta (residual variance included)
    params: dict  # name -> value: a, b[, c]
    ci: dict  # name -> (low, high) at `confidence`
    confidence: float
    x: np.ndarray  # (n,) x of the fitted points
    y: np.ndarray  # (n,) y of the fitted points
    log_scale: float  # mean ln x, the centre of the fit

    a = property(lambda self: self.params["a"])
    b = property(lambda self: self.params["b"])
    c = property(lambda self: self.params.get("c", 0.0))
    amplitude = property(lambda self: float(self.theta[0]))  # A = a * exp(-b * log_scale)

    def _u(self, x) -> np.ndarray:
        return np.log(np.asarray(x, float)) - self.log_scale

    def predict(self, x) -> np.ndarray:
        return self.law.curve(self._u(x), *self.theta)

    @property
    def residuals(self) -> np.ndarray:
        return self.y - self.predict(self.x)

    @property
    def dof(self) -> int:
        return len(self.x) - len(self.law.params)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))

    def prediction_interval(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Where a new observation at `x` falls with probability `confidence` (nan with no dof)."""
        u = np.atleast_1d(self._u(x))
        g = self.law.gradient(u, self.theta)  # (m, k)
        residual_variance = np.sum(self.residuals ** 2) / self.dof if self.dof > 0 else np.nan
        with np.errstate(invalid="ignore"):
            half = t_quantile(self.confidence, self.dof) * np.sqrt(np.einsum("mi,ij,mj->m", g, self.cov, g)
                                                                    + residual_variance)
        centre = self.law.curve(u, *self.theta)
        return centre - half, centre + half

    def trend_is_established(self) -> bool:
        """Whether b's interval is finite and excludes 0 (no trend)."""
        low, high = self.ci["b"]
        return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))

    def compute_for(self, target: float) -> float | None:
        """The x at which the fitted curve reaches `target`; None when it never does (beyond c)."""
        ratio = (target - self.c) / self.amplitude
        if not np.isfinite(ratio) or ratio <= 0 or self.b == 0:
            return None
        return float(np.exp(self.log_scale - np.log(ratio) / self.b))

    def formula(self) -> str:
        text = f"{self.a:.3g} * C^(-{self.b:.3g})"
        return text + f" + {self.c:.3g}" if self.law.saturates else text


def _clean(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Finite points with positive x (a power law's domain)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    return x[keep], y[keep]


def _check_points(law: Law, x: np.ndarray, min_points: int):
    k = len(law.params)
    if len(x) < min_points:
        why = f" (parameters + {min_points - k})" if min_points > k else ""
        raise ValueError(f"cannot fit {law.formula} ({k} parameters) to {len(x)} point(s); it needs at least "
                         f"{min_points}{why}: evaluate more steps or train more models")
    if np.ptp(np.log(x)) == 0:
        raise ValueError(f"cannot fit {law.formula}: every point has the same compute {x[0]:g}")


def _initial_guess(law: Law, u: np.ndarray, y: np.ndarray) -> tuple:
    """A straight line in log(|y - c0|), with c0 just beyond the best value for a saturating law."""
    if not law.saturates:
        slope, intercept = np.polyfit(u, np.log(np.abs(y) + 1e-300), 1)
        return np.sign(y.mean()) * np.exp(intercept), float(np.clip(-slope, *law.b_bounds))
    decreasing = np.polyfit(u, y, 1)[0] <= 0
    span = np.ptp(y) or abs(y.mean()) or 1.0
    c0 = y.min() - 0.1 * span if decreasing else y.max() + 0.1 * span
    slope, intercept = np.polyfit(u, np.log(np.abs(y - c0)), 1)
    b0 = -slope if slope < 0 else 0.5
    return np.exp(intercept) * (1 if decreasing else -1), b0, c0


def _public_params(law: Law, theta, cov, log_scale: float) -> tuple[dict, dict]:
    """(a, b[, c]) and their variances from the centred (A, b[, c]); a's by the delta method."""
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.exp(theta[1] * log_scale)
        grad_a = np.zeros(len(theta))
        grad_a[:2] = scale, theta[0] * log_scale * scale  # d a / d(A, b)
        values = {"a": float(theta[0] * scale), "b": float(theta[1])}
        variances = {"a": grad_a @ cov @ grad_a, "b": cov[1, 1]}
    if law.saturates:
        values["c"], variances["c"] = float(theta[2]), cov[2, 2]
    return values, variances


def fit_law(x, y, law="saturating", *, confidence: float = 0.95, min_points: int | None = None) -> LawFit:
    """Fit `law` to (x, y) by least squares; ValueError with fewer than `min_points` (default: the law's
    parameters + 2) finite points of positive x, or when every x is the same."""
    law = get_law(law)
    x, y = _clean(x, y)
    _check_points(law, x, law.min_points if min_points is None else min_points)
    log_scale = float(np.log(x).mean())
    u = np.log(x) - log_scale
    lower = [-np.inf, law.b_bounds[0]] + [-np.inf] * law.saturates
    upper = [np.inf, law.b_bounds[1]] + [np.inf] * law.saturates
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)  # no covariance without dof
            theta, cov = optimize.curve_fit(law.curve, u, y, p0=_initial_guess(law, u, y), maxfev=20000,
                                            bounds=(lower, upper))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"the fit of {law.formula} did not converge: {exc}") from None
    values, variances = _public_params(law, theta, cov, log_scale)
    dof = len(x) - len(law.params)
    t = t_quantile(confidence, dof)
    ci = {}
    for name, value in values.items():
        half = t * np.sqrt(variances[name]) if dof > 0 and np.isfinite(variances[name]) else np.nan
        ci[name] = (float(value - half), float(value + half))
    return LawFit(law=law, theta=np.asarray(theta, float), cov=cov, params=values, ci=ci, confidence=confidence,
                  x=x, y=y, log_scale=log_scale)


def fit_saturating_law(x, y, *, confidence: float = 0.95) -> LawFit:
    """The saturating law a * C^(-b) + c with as few as 3 points (intervals nan at 0 dof); what the report
    shows goes through `fit_law`, which asks for parameters + 2."""
    return fit_law(x, y, "saturating", confidence=confidence, min_points=len(LAWS["saturating"].params))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Backtest:
    """A fit on all but the largest x values, and how its prediction intervals did on the points held out."""

    fit: LawFit
    held_out: list  # [{x, y, predicted, pi_low, pi_high, inside}], by x

    @property
    def coverage(self) -> float:
        return float(np.mean([p["inside"] for p in self.held_out]))


def backtest(x, y, law="saturating", *, holdout: int = 1, confidence: float = 0.95) -> Backtest:
    """Fit on all points but those at the `holdout` largest x values (every row there, e.g. every seed),
    then check each held-out point against its prediction interval."""
    law = get_law(law)
    x, y = _clean(x, y)
    distinct = np.unique(x)
    if holdout < 1 or holdout >= len(distinct):
        raise ValueError(f"cannot hold out {holdout} of {len(distinct)} distinct x values; hold out 1 to "
                         f"{len(distinct) - 1}")
    kept = x < distinct[-holdout]
    if kept.sum() < law.min_points:
        raise ValueError(f"holding out the {holdout} largest x value(s) leaves {kept.sum()} point(s), and a "
                         f"{len(law.params)}-parameter law needs at least {law.min_points}; hold out fewer")
    fit = fit_law(x[kept], y[kept], law, confidence=confidence)
    low, high = fit.prediction_interval(x[~kept])
    predicted = fit.predict(x[~kept])
    held_out = [dict(x=float(xi), y=float(yi), predicted=float(p), pi_low=float(lo), pi_high=float(hi),
                     inside=bool(lo <= yi <= hi))
                for xi, yi, p, lo, hi in sorted(zip(x[~kept], y[~kept], predicted, low, high, strict=True))]
    return Backtest(fit=fit, held_out=held_out)


def try_backtest(x, y, law="saturating", *, confidence: float = 0.95) -> Backtest | None:
    """A backtest on the largest x value when enough points stay to fit without it, else None."""
    try:
        return backtest(x, y, law, holdout=1, confidence=confidence)
    except ValueError:
        return None


def _ols(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Ordinary least squares: coefficients, their covariance (residual variance included) and dof."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    dof = len(y) - design.shape[1]
    residual_variance = np.sum((y - design @ coef) ** 2) / dof if dof > 0 else np.nan
    return coef, residual_variance * np.linalg.pinv(design.T @ design), dof


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeastSquaresFit:
    """Coefficients of a model linear in them, fitted by least squares in u = ln x - centre."""

    coef: np.ndarray  # (k,)
    cov: np.ndarray  # (k, k)
    centre: float
    x: np.ndarray  # (n,)
    y: np.ndarray  # (n,)
    confidence: float

    dof = property(lambda self: len(self.x) - len(self.coef))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parabola(LeastSquaresFit):
    """An isoFLOP profile: ln y = p0 + p1 u + p2 u^2 in u = ln x - centre (coef p0, p1, p2), a parabola in
    log-log space (so the fitted metric and its intervals stay positive); its vertex is the optimum."""

    def predict(self, x) -> np.ndarray:
        u = np.log(np.asarray(x, float)) - self.centre
        return np.exp(self.coef[0] + self.coef[1] * u + self.coef[2] * u ** 2)

    def _vertex(self) -> tuple[float, float, float, float]:
        """u* and ln y* of the vertex with their delta-method standard errors."""
        p0, p1, p2 = self.coef
        u_star = -p1 / (2 * p2)
        grad_u = np.array([0.0, -1 / (2 * p2), p1 / (2 * p2 ** 2)])
        log_y_star = p0 - p1 ** 2 / (4 * p2)
        grad_y = np.array([1.0, -p1 / (2 * p2), p1 ** 2 / (4 * p2 ** 2)])
        return u_star, np.sqrt(grad_u @ self.cov @ grad_u), log_y_star, np.sqrt(grad_y @ self.cov @ grad_y)

    @property
    def optimum(self) -> dict:
        """x*, y* of the vertex and their intervals (symmetric in ln x and ln y); whether x* lies inside
        the points' range (else the optimum is extrapolated)."""
        u_star, u_se, log_y_star, y_se = self._vertex()
        t = t_quantile(self.confidence, self.dof)
        return dict(x=float(np.exp(self.centre + u_star)), x_low=float(np.exp(self.centre + u_star - t * u_se)),
                    x_high=float(np.exp(self.centre + u_star + t * u_se)), y=float(np.exp(log_y_star)),
                    y_low=float(np.exp(log_y_star - t * y_se)), y_high=float(np.exp(log_y_star + t * y_se)),
                    inside=bool(self.x.min() <= np.exp(self.centre + u_star) <= self.x.max()))


def distinct_sizes(x, within: float = 1.05) -> int:
    """How many sizes `x` holds, counting values less than a factor `within` apart as one (DiT-T/8 and
    DiT-T/2 differ in parameters by 1%: one size for a profile against parameters)."""
    logs = np.sort(np.log(np.asarray(x, float)))
    return int(len(logs) and 1 + np.sum(np.diff(logs) > np.log(within)))


def fit_parabola(x, y, *, lower_is_better: bool = True, confidence: float = 0.95) -> Parabola:
    """The isoFLOP parabola of ln y against ln x (at least 5 points, 3 distinct sizes, y > 0); ValueError when
    it has no optimum (it opens the wrong way: the points do not bracket the best model)."""
    x, y = _clean(x, y)
    sizes = distinct_sizes(x)
    if len(x) < 3 + MIN_EXTRA_POINTS or sizes < 3:
        raise ValueError(f"cannot fit a parabola (3 parameters) to {len(x)} point(s) at {sizes} distinct model "
                         f"size(s); it needs at least {3 + MIN_EXTRA_POINTS} points at 3 or more sizes")
    if (y <= 0).any():
        raise ValueError("cannot fit a parabola in log y to values of 0 or less")
    centre = float(np.log(x).mean())
    u = np.log(x) - centre
    coef, cov, _ = _ols(np.stack([np.ones_like(u), u, u ** 2], axis=1), np.log(y))
    if (coef[2] <= 0) == lower_is_better:
        kind = "minimum" if lower_is_better else "maximum"
        raise ValueError(f"the parabola has no {kind}: the models trained do not bracket the optimum")
    return Parabola(coef=coef, cov=cov, centre=centre, x=x, y=y, confidence=confidence)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogLogFit(LeastSquaresFit):
    """y = k * x^alpha fitted as the straight line ln y = ln k + alpha (ln x - centre) (coef: intercept, alpha)."""

    exponent = property(lambda self: float(self.coef[1]))

    @property
    def exponent_ci(self) -> tuple[float, float]:
        half = t_quantile(self.confidence, self.dof) * np.sqrt(self.cov[1, 1])
        return float(self.coef[1] - half), float(self.coef[1] + half)

    def _design(self, x) -> np.ndarray:
        u = np.log(np.atleast_1d(np.asarray(x, float))) - self.centre
        return np.stack([np.ones_like(u), u], axis=1)

    def predict(self, x) -> np.ndarray:
        return np.exp(self._design(x) @ self.coef)

    def prediction_interval(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Where a new y at `x` falls with probability `confidence` (symmetric in ln y)."""
        design = self._design(x)
        residual_variance = np.sum((np.log(self.y) - self._design(self.x) @ self.coef) ** 2) / self.dof
        half = t_quantile(self.confidence, self.dof) * np.sqrt(
            np.einsum("mi,ij,mj->m", design, self.cov, design) + residual_variance)
        centre = design @ self.coef
        return np.exp(centre - half), np.exp(centre + half)


def fit_loglog(x, y, *, confidence: float = 0.95) -> LogLogFit:
    """A power law through positive (x, y) as a line in log-log space; at least 4 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log power law needs positive x and y")
    if len(x) < 2 + MIN_EXTRA_POINTS:
        raise ValueError(f"cannot fit a power law (2 parameters) to {len(x)} point(s); it needs at least "
                         f"{2 + MIN_EXTRA_POINTS}")
    centre = float(np.log(x).mean())
    u = np.log(x) - centre
    coef, cov, _ = _ols(np.stack([np.ones_like(u), u], axis=1), np.log(y))
    return LogLogFit(coef=coef, cov=cov, centre=centre, x=x, y=y, confidence=confidence)


@dataclasses.dataclass(frozen=True, kw_only=True)
class IsoFlop:
    """isoFLOP profiles per budget and the power laws of their optima against the budget."""

    profiles: dict  # budget -> Parabola
    not_fitted: dict  # budget -> why its profile has no parabola
    optimal_x: LogLogFit | None  # optimal x (model Gflops, params) against budget
    optimal_y: LogLogFit | None  # optimal metric against budget
    why_no_law: str | None  # why the optima have no power law (None when they have)

    def optima(self) -> list[tuple[float, dict]]:
        return [(budget, parabola.optimum) for budget, parabola in sorted(self.profiles.items())]


def isoflop(budget, x, y, *, lower_is_better: bool = True, confidence: float = 0.95) -> IsoFlop:
    """A parabola per budget through (ln x, ln y) of the points at that budget, and power laws of the
    optimal x and y against the budget (needing 4 budgets with an optimum inside the models trained)."""
    budget, x, y = (np.asarray(v, float) for v in (budget, x, y))
    profiles, not_fitted = {}, {}
    for b in np.unique(budget[np.isfinite(budget)]):
        at = budget == b
        try:
            profiles[float(b)] = fit_parabola(x[at], y[at], lower_is_better=lower_is_better, confidence=confidence)
        except ValueError as exc:
            not_fitted[float(b)] = str(exc)
    optima = [(b, p.optimum) for b, p in sorted(profiles.items()) if p.optimum["inside"]]  # not extrapolated
    budgets = [b for b, _ in optima]
    try:
        optimal_x = fit_loglog(budgets, [o["x"] for _, o in optima], confidence=confidence)
        optimal_y = fit_loglog(budgets, [o["y"] for _, o in optima], confidence=confidence)
        why = None
    except ValueError as exc:
        optimal_x = optimal_y = None
        why = f"{len(optima)} budget(s) with an optimum inside the models trained: {exc}"
    return IsoFlop(profiles=profiles, not_fitted=not_fitted, optimal_x=optimal_x, optimal_y=optimal_y, why_no_law=why)
