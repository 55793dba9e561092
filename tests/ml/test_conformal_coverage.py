"""Split-conformal coverage on a synthetic problem with a known answer.

Data: y = sin(2πx) + x + σ(x) t₃ with x ~ U(0, 1), σ(x) = 0.05 + 0.3 x and Student-t noise (3 degrees of
freedom: heavy tails, so nothing Gaussian is assumed). The "model" is deliberately poor: its mean is
off by 0.02 and its spread is half the true σ(x), so the raw ±1.645 spread interval covers far less
than 90 %. The calibrator must fix that from calibration rows alone.

For exchangeable rows and continuous scores, split conformal at level 1 - α with n calibration rows
uses the l-th smallest score, l = ⌈(n + 1)(1 - α)⌉; the coverage of a new row, averaged over
calibration sets, is exactly l / (n + 1), which lies in [1 - α, 1 - α + 1 / (n + 1)). Given one
calibration set the coverage is Beta(l, n + 1 - l) distributed (Vovk 2012; Angelopoulos and Bates
2021, section 3.2), and a test set of m rows adds binomial scatter p(1 - p) / m on top.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from matflow.ml.uncertainty import ConformalCalibrator, empirical_coverage

ALPHA = 0.1
N_TRIALS = 400
N_TEST = 500


def _draw(rng: np.random.Generator, n: int):
    x = rng.uniform(0.0, 1.0, n)
    sigma = 0.05 + 0.3 * x
    y = np.sin(2 * np.pi * x) + x + sigma * rng.standard_t(3, n)
    mean = np.sin(2 * np.pi * x) + x + 0.02
    std = 0.5 * sigma
    return y, mean, std


def _coverages(n_calibration: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty(N_TRIALS)
    for trial in range(N_TRIALS):
        cal = ConformalCalibrator(coverage=1 - ALPHA).fit(*_draw(rng, n_calibration))
        y, mean, std = _draw(rng, N_TEST)
        lower, upper = cal.interval(mean, std)
        out[trial] = empirical_coverage(y, lower, upper)
    return out


@pytest.mark.parametrize(("n_calibration", "seed"), [(25, 0), (500, 1)])
def test_split_conformal_coverage_matches_the_finite_sample_theory(n_calibration, seed):
    """Mean coverage over 400 calibration/test draws equals l / (n + 1) within 4 standard errors
    (n = 25: 24 / 26 = 0.923, standard error 0.0026; n = 500: 451 / 501 = 0.9002, standard error
    0.0010), is not below the 1 - α guarantee by more than that (for n = 25 it is 8 standard errors
    above it: a plain 90 % quantile of the scores would cover 0.87 on average there), and the trial-to-trial scatter is the Beta + binomial
    one (its standard deviation is estimated to 1 / sqrt(2 x 400) = 3.5 %; tolerance 20 %)."""
    rank = math.ceil((n_calibration + 1) * (1 - ALPHA))
    expected = rank / (n_calibration + 1)
    beta_var = rank * (n_calibration + 1 - rank) / ((n_calibration + 1) ** 2 * (n_calibration + 2))
    trial_var = beta_var + expected * (1 - expected) / N_TEST
    standard_error = math.sqrt(trial_var / N_TRIALS)

    coverages = _coverages(n_calibration, seed)
    assert abs(coverages.mean() - expected) < 4 * standard_error, (coverages.mean(), expected)
    assert coverages.mean() > 1 - ALPHA - 4 * standard_error  # the guarantee holds on average
    assert coverages.std(ddof=1) == pytest.approx(math.sqrt(trial_var), rel=0.2)


def test_uncalibrated_spread_interval_undercovers_on_this_problem():
    """Control for the test above: the model's own ±1.645 x spread interval covers far less than 90 %
    here, so the coverage there is the calibrator's doing. One calibration on 2000 rows covers
    20,000 new rows to 0.90 ± 0.03 (4 x the Beta + binomial standard deviation, 0.007)."""
    y, mean, std = _draw(np.random.default_rng(2), 20_000)
    raw = empirical_coverage(y, mean - 1.645 * std, mean + 1.645 * std)
    assert raw < 0.75
    calibrated = ConformalCalibrator(coverage=1 - ALPHA).fit(*_draw(np.random.default_rng(3), 2000))
    lower, upper = calibrated.interval(mean, std)
    assert empirical_coverage(y, lower, upper) == pytest.approx(0.9, abs=0.03)
    assert calibrated.quantile_[0] > 1.645  # the scores were rescaled upwards
