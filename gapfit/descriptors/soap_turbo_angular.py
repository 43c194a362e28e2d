"""The angular part of the soap_turbo descriptor (see :mod:`gapfit.descriptors.soap_turbo`).

QUIP (docs/dev/soap_turbo.md §3, ``ANG:n`` = soap_turbo@03f9d82 ``src/soap_turbo_angular.f90`` line n)
expands a neighbour at r, θ, φ of species s as

    A_lm = amp_t·Λ_lm·P_l^m(cosθ)·ι_l(r/σ_t(r))·e^(-imφ),   amp_t = r_h²/σ_t(r)²,   σ_t(r) = σ_t + β_t·r,

i.e. amp_t·ι_l times the complex-conjugate spherical harmonic.  The power spectrum only needs
Σ_m over each l, which is the same for any unitary change of the m basis, so gapfit uses the
real spherical harmonics of :func:`gapfit.descriptors.soap_basis.real_spherical_harmonics` and
this module supplies the radial factor of the angular part, g_l(r) = 4π·amp_t(r)·ι_l(x), and
its r-derivative with QUIP's ι'_l (``get_ilexp_der``, ANG:329-356).  QUIP's θ/φ derivatives
(the Q and T identities of spec §5.2) are the exact derivatives of Y_lm, so they agree with the
Cartesian gradient of the real harmonics to rounding.
"""

from __future__ import annotations

import math

import numpy as np

#: below this x (x² / 1000 for l = 1, x^2l/(2l+1)!!·l for l ≥ 2) ι_l uses its small-x series (ANG:256-315)
_X_CUT = 1e-7
#: below this r (Å) ι'_l is zero (ANG:340)
_R_CUT_DERIVATIVE = 1e-5


def ilexp(x, l_max: int) -> np.ndarray:
    """ι_l(x) = i_l(x²)·e^(-x²), l = 0..l_max, as QUIP's ``get_ilexp`` (ANG:256-315); (p, l_max+1).

    F0 = |(1 - e^(-2x²))/(2x²)| and F1 = |(x² - 1 + e^(-2x²)(x²+1))/(2x⁴)| (1 and 0 at x = 0);
    ι_0 = 1 - x² if x < 1e-7 else F0; ι_1 = (x² - x⁴)/3 if x²/1000 < 1e-7 else F1; for l ≥ 2
    f = x^2l/(2l+1)!! if that times l is below 1e-7, else |F0 - (2l-1)/x²·F1|, then F0 ← F1, F1 ← f.
    The recursion for l ≥ 2 starts from the closed forms even where ι_0, ι_1 used the series.
    """
    x = np.asarray(x, dtype=float)
    x2 = x * x
    x4 = x2 * x2
    positive = x > 0.0
    safe2 = np.where(positive, x2, 1.0)
    e2 = np.exp(-2.0 * x2)
    f0 = np.where(positive, np.abs((1.0 - e2) / 2.0 / safe2), 1.0)
    f1 = np.where(positive, np.abs((x2 - 1.0 + e2 * (x2 + 1.0)) / 2.0 / (safe2 * safe2)), 0.0)
    out = np.empty((x.size, l_max + 1))
    out[:, 0] = np.where(x < _X_CUT, 1.0 - x2, f0)
    if l_max >= 1:
        out[:, 1] = np.where(x2 / 1000.0 < _X_CUT, (x2 - x4) / 3.0, f1)
    semifactorial = 3.0
    power = x2
    for ell in range(2, l_max + 1):
        semifactorial *= 2.0 * ell + 1.0
        power = power * x2
        series = power / semifactorial
        with np.errstate(divide="ignore", invalid="ignore"):
            closed = np.abs(f0 - (2.0 * ell - 1.0) / x2 * f1)
        fl = np.where(series * ell < _X_CUT, series, closed)
        f0, f1 = f1, fl
        out[:, ell] = fl
    return out


def angular_factors(r, sigma_t, sigma_t_scaling, rcut, l_max: int, grad: bool):
    """g_l(r) = 4π·amp_t·ι_l(r/σ_t(r)) (p, l_max+1) and, with ``grad``, dg_l/dr with QUIP's ι'_l.

    ``sigma_t`` and ``sigma_t_scaling`` are per neighbour (its species' σ_t, β_t); ``rcut`` is the
    largest r_h (ANG:435).  dg_l/dr = 4π·(amp_t·ι'_l - 2·amp_t/σ_t(r)·β_t·ι_l) (ANG:440-447) with

        c1 = 2r/σ_t(r)², c2 = 1 - β_t·r/σ_t(r);  ι'_0 = c2·c1·(ι_1 - ι_0);
        ι'_l = c2·[(-c1 - (2l+2)/r)·ι_l + c1·ι_{l-1}];   ι' = 0 for r < 1e-5.

    For l_max = 0 QUIP reads ι_1 past the end of its array; its gradients match ι_1 := 0
    (spec §1.4), which is what is used here.
    """
    r = np.asarray(r, dtype=float)
    sig = sigma_t + sigma_t_scaling * r
    amp = rcut ** 2 / sig ** 2
    il = ilexp(r / sig, max(l_max, 1))
    g = (4.0 * math.pi) * amp[:, None] * il[:, :l_max + 1]
    if not grad:
        return g, None
    if l_max == 0:
        il = il.copy()
        il[:, 1] = 0.0
    c1 = 2.0 * r / sig ** 2
    c2 = 1.0 - sigma_t_scaling * r / sig
    tiny = r < _R_CUT_DERIVATIVE
    safe_r = np.where(tiny, 1.0, r)
    der = np.empty((r.size, l_max + 1))
    der[:, 0] = c1 * (il[:, 1] - il[:, 0])
    for ell in range(1, l_max + 1):
        der[:, ell] = (-c1 - (2.0 * ell + 2.0) / safe_r) * il[:, ell] + c1 * il[:, ell - 1]
    der *= c2[:, None]
    der[tiny] = 0.0
    dg = (4.0 * math.pi) * (amp[:, None] * der - (2.0 * amp / sig * sigma_t_scaling)[:, None] * il[:, :l_max + 1])
    return g, dg
