"""95% intervals of a mean over images, with prompts as clusters.

Images of one prompt are not independent draws (its seeds share the prompt's difficulty),
so an interval that treats every image as one draw is too narrow: the spread that counts
is between prompts. With few prompts the normal 1.96 is too narrow as well, so the
half-width uses Student's t quantile with one degree of freedom fewer than the prompts.
No scipy: the t distribution's CDF for a whole number of degrees of freedom has a closed
form (Abramowitz & Stegun 26.7.3-4), inverted here by bisection.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence

#: Above this many degrees of freedom the Cornish-Fisher expansion is used (error < 1e-9).
_EXPANSION_DF = 300


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a whole number >= 1) degrees of freedom."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:  # sin(theta) * (1 + 1/2 c^2 + (1*3)/(2*4) c^4 + ...), df/2 terms
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            total += term
        return s * total
    # odd: (2/pi) (theta + sin(theta) cos(theta) (1 + 2/3 c^2 + (2*4)/(3*5) c^4 + ...))
    series = 0.0
    if df > 1:
        term, series = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            series += term
        series *= s * math.sqrt(c2)
    return 2 / math.pi * (theta + series)


def _normal_quantile(p: float) -> float:
    """The standard normal quantile, by bisection on ``erf`` (exact to float precision)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile ``t`` with P(T <= t) = ``p`` (0.5 < p < 1) for ``df``
    degrees of freedom (a whole number >= 1): 4.303 for p 0.975 and df 2, 2.228 for df 10."""
    if not 0.5 < p < 1:
        raise ValueError(f"t_quantile: p must be in (0.5, 1), not {p}")
    if int(df) != df or df < 1:
        raise ValueError(f"t_quantile: degrees of freedom must be a whole number >= 1, not {df}")
    df = int(df)
    if df > _EXPANSION_DF:  # Cornish-Fisher: the normal quantile corrected in powers of 1/df
        z = _normal_quantile(p)
        return (
            z
            + (z**3 + z) / (4 * df)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * df**4)
        )
    target = 2 * p - 1  # P(|T| <= t)
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < target:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided(mid, df) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2


def cluster_ci95(values: Sequence[float], clusters: Sequence[Hashable]) -> float:
    """Half-width of the 95% interval of the mean of ``values`` with ``clusters`` (one label
    per value, e.g. its prompt) as independent units: the cluster-robust variance
    G/(G-1) * sum over clusters of (sum of residuals)^2 / n^2, times Student's t 0.975
    quantile with G - 1 degrees of freedom. Centred on the mean over values also where
    clusters hold different numbers of them; with one value per cluster it is the usual
    t * std / sqrt(n). NaN with fewer than two clusters: one says nothing about the spread
    between them."""
    n = len(values)
    if n != len(clusters):
        raise ValueError("cluster_ci95: one cluster label per value")
    if n == 0:
        return math.nan
    mean = sum(values) / n
    residuals: dict[Hashable, float] = defaultdict(float)
    for value, cluster in zip(values, clusters, strict=True):
        residuals[cluster] += value - mean
    g = len(residuals)
    if g < 2:
        return math.nan
    variance = g / (g - 1) * sum(r * r for r in residuals.values()) / n**2
    return t_quantile(0.975, g - 1) * math.sqrt(variance)
