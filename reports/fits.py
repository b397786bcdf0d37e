"""Scaling-law fits: a saturating power law, metric = a * C^(-b) + c, fitted with scipy.

C is training compute (on the compute-efficient frontier) or forward Gflops (one point per model at
a step). The paper shows the trend (Figs. 8 and 9) without fitting it; the fit here says how steep
it is (the exponent b), where it levels off (c), and what compute it predicts for a target value.

The fit is done in a centred, log-scaled variable, u = ln C - mean(ln C), as
metric = A * exp(-b u) + c with a = A * exp(b * mean(ln C)), so that compute spanning ten decades
stays well conditioned. Confidence intervals are the usual t intervals from curve_fit's covariance
(a's by the delta method); with as many points as parameters they are undefined (nan).
"""
import dataclasses
import warnings

import numpy as np
from scipy import optimize, stats

NUM_PARAMS = 3
FORMULA = "a * C^(-b) + c"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PowerLawFit:
    """A fitted metric = a * C^(-b) + c, its confidence intervals and its residuals."""

    a: float
    b: float
    c: float
    ci: dict  # name -> (low, high) at `confidence`
    confidence: float
    x: np.ndarray  # (n,) compute of the fitted points
    y: np.ndarray  # (n,) metric of the fitted points
    log_scale: float  # mean ln C, the centre of the fit
    amplitude: float  # A = a * exp(-b * log_scale)

    def predict(self, x) -> np.ndarray:
        u = np.log(np.asarray(x, float)) - self.log_scale
        return self.amplitude * np.exp(-self.b * u) + self.c

    @property
    def residuals(self) -> np.ndarray:
        return self.y - self.predict(self.x)

    @property
    def dof(self) -> int:
        return len(self.x) - NUM_PARAMS

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))

    def compute_for(self, target: float) -> float | None:
        """The C at which the fitted curve reaches `target`; None when it never does (beyond c)."""
        ratio = (target - self.c) / self.amplitude
        if not np.isfinite(ratio) or ratio <= 0:
            return None
        return float(np.exp(self.log_scale - np.log(ratio) / self.b))

    def formula(self) -> str:
        return f"{self.a:.3g} * C^(-{self.b:.3g}) + {self.c:.3g}"


def _initial_guess(u: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Start from a straight line in log(|y - c0|) with c0 just beyond the best value."""
    decreasing = np.polyfit(u, y, 1)[0] <= 0
    span = np.ptp(y) or abs(y.mean()) or 1.0
    c0 = y.min() - 0.1 * span if decreasing else y.max() + 0.1 * span
    slope, intercept = np.polyfit(u, np.log(np.abs(y - c0)), 1)
    b0 = -slope if slope < 0 else 0.5
    amplitude = np.exp(intercept) * (1 if decreasing else -1)
    return amplitude, b0, c0


def fit_power_law(x, y, *, confidence: float = 0.95) -> PowerLawFit:
    """Fit y = a * x^(-b) + c (b > 0) by least squares; ValueError with fewer than 3 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(x) < NUM_PARAMS:
        raise ValueError(f"cannot fit {FORMULA} ({NUM_PARAMS} parameters) to {len(x)} point(s); "
                         f"it needs at least {NUM_PARAMS}: evaluate more steps or train more models")
    if np.ptp(np.log(x)) == 0:
        raise ValueError(f"cannot fit {FORMULA}: every point has the same compute {x[0]:g}")
    log_scale = float(np.log(x).mean())
    u = np.log(x) - log_scale

    def model(u, amplitude, b, c):
        return amplitude * np.exp(-b * u) + c

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)  # no covariance when n == 3
            params, cov = optimize.curve_fit(model, u, y, p0=_initial_guess(u, y), maxfev=20000,
                                             bounds=([-np.inf, 1e-6, -np.inf], [np.inf, 20.0, np.inf]))
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"the fit of {FORMULA} did not converge: {exc}") from None
    amplitude, b, c = (float(p) for p in params)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = np.exp(b * log_scale)
        a = amplitude * scale
        grad_a = np.array([scale, amplitude * log_scale * scale, 0.0])  # d a / d(A, b, c)
        var_a = grad_a @ cov @ grad_a
    variances = {"a": var_a, "b": cov[1, 1], "c": cov[2, 2]}
    dof = len(x) - NUM_PARAMS
    t = stats.t.ppf(0.5 + confidence / 2, dof) if dof > 0 else np.nan
    values = {"a": float(a), "b": b, "c": c}
    ci = {}
    for name, value in values.items():
        half = t * np.sqrt(variances[name]) if dof > 0 and np.isfinite(variances[name]) else np.nan
        ci[name] = (float(value - half), float(value + half))
    return PowerLawFit(a=float(a), b=b, c=c, ci=ci, confidence=confidence, x=x, y=y, log_scale=log_scale, amplitude=amplitude)
