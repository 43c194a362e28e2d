"""The radial part of the soap_turbo descriptor (see :mod:`gapfit.descriptors.soap_turbo`).

Everything here follows docs/dev/soap_turbo.md §2 (QUIP 0.10.3 = GAP@480fc2d with soap_turbo@03f9d82;
``RAD:n`` is ``src/soap_turbo_radial.f90`` line n, ``ST:n`` ``src/soap_turbo.f90``).  One
:class:`RadialBlock` per neighbour species holds that species' basis (``alpha_max`` functions, its
overlap S and orthonormaliser W = S^(-1/2)) and expands neighbours at distances r into it, with
QUIP's radial derivatives (which are not the exact derivatives of the values near the soft cutoff,
spec §2.2/§5.2: they are reproduced, not fixed).

All lengths are scaled by r_h = ``rcut_hard`` (``RAD:162-165``): x = r/r_h, x_s = r_s/r_h,
d = 1 - x_s, σ̂ = σ_r/r_h and the distance-dependent width ŝ(x) = σ̂ + β_r·x.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg.lapack as lapack
from scipy.special import erf

_SQRT2 = math.sqrt(2.0)
_SQRT_PI_2 = math.sqrt(math.pi / 2.0)
_SQRT_2_PI = math.sqrt(2.0 / math.pi)
_SQRT_8_PI = math.sqrt(8.0 / math.pi)
#: the filter and the Gaussian component are switched on within this many widths (RAD:282, RAD:675)
_SWITCH_WIDTHS = 4.0
#: amplitudes at or below this value of P(x) = 1 + 2x³ - 3x² are zero (RAD:196)
_P_FLOOR = 1e-10


def poly_norms(top: int) -> np.ndarray:
    """N_α = (2α+5)^(-1/2) for α = -3..top at index α+3, with N_{-3} := 1 (``N_a``, RAD:38-52, r_h = 1)."""
    alpha = np.arange(-3, top + 1, dtype=float)
    out = np.ones(alpha.size)
    out[1:] = (2.0 * alpha[1:] + 5.0) ** -0.5
    return out


def overlap_poly3(n: int) -> np.ndarray:
    """S_ij = √((5+2i)(5+2j))/(5+i+j), i, j = 1..n, of the poly3 functions (RAD:770-776)."""
    i = np.arange(1, n + 1, dtype=float)
    s = np.sqrt(np.outer(5.0 + 2.0 * i, 5.0 + 2.0 * i)) / (5.0 + i[:, None] + i[None, :])
    np.fill_diagonal(s, 1.0)
    return s


def overlap_poly3gauss(n: int, sigma_hat: float) -> np.ndarray:
    """S of n-1 poly3 functions and the Gaussian N_g exp(-x²/2σ̂²), N_g = √(2/σ̂) π^(-1/4) (RAD:880-900).

    The polynomial-Gaussian overlaps come from QUIP's upward recursion Ĩ_α, which lacks the
    upper-limit term σ̂² e^(-1/2σ̂²) at α = -1 (spec §2.1); it is reproduced as written.
    """
    s = np.eye(n)
    s[:n - 1, :n - 1] = overlap_poly3(n - 1)
    s2 = sigma_hat * sigma_hat
    norms = poly_norms(n)
    i_prev2, i_prev1 = 0.0, _SQRT_PI_2 * sigma_hat * math.erf(1.0 / _SQRT2 / sigma_hat) / norms[1]
    for alpha in range(-1, n):
        na = norms[alpha + 3]
        i_alpha = (s2 * (alpha + 1) * norms[alpha + 1] / na * i_prev2 + norms[alpha + 2] / na * i_prev1
                   - s2 / na)
        if alpha > 0:
            s[n - 1, alpha - 1] = s[alpha - 1, n - 1] = i_alpha * _SQRT2 / math.sqrt(sigma_hat) / math.pi ** 0.25
        i_prev2, i_prev1 = i_prev1, i_alpha
    return s


def inverse_square_root(s: np.ndarray) -> np.ndarray:
    """W = S^(-1/2) by QUIP's LAPACK sequence (RAD:778-818): dgesvd, R = U·diag(√sv)·Vᵀ, then the
    inverse of R by dpotrf/dpotri on its upper triangle, symmetrised from the upper triangle.

    S is ill-conditioned (cond 1e13 at alpha_max 8): an eigh-based S^(-1/2) differs from QUIP's by 6e-8
    there, this sequence by ~1e-11 (spec §2.1, §7.4).
    """
    n = s.shape[0]
    u, sv, vt, info = lapack.dgesvd(np.asfortranarray(s), compute_uv=1, full_matrices=1, lwork=6 * n)
    if info != 0:
        raise np.linalg.LinAlgError(f"dgesvd failed (info {info})")
    root = (u * np.sqrt(sv)[None, :]) @ vt
    chol, info = lapack.dpotrf(np.asfortranarray(root), lower=0, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotrf failed (info {info})")
    inv, info = lapack.dpotri(chol, lower=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"dpotri failed (info {info})")
    upper = np.triu(inv)
    return upper + np.triu(inv, 1).T


def _recursion(x, width, start, c_upper, c_lower, d, top, norms, filter_part):
    """Ĩ_α, α = 1..top, by QUIP's upward recursion (RAD:235-264 main part, RAD:282-314 filter).

    Ĩ_{-3} = 0, Ĩ_{-2} = ``start`` (the erf term, N_{-2} = 1), and for α = -1..top

        Ĩ_α = w²(α+1)·N_{α-2}/N_α·Ĩ_{α-2} - (x-1)·N_{α-1}/N_α·Ĩ_{α-1} + C_up/N_α - C_low/N_α

    where, before each step, the main part multiplies its soft-cutoff term C_up by d and keeps
    its lower term (times r_h = 1), while the filter part has no C_up and multiplies C_low by d.
    Returns (p, top): column α-1 holds Ĩ_α.
    """
    w2 = width * width
    out = np.empty((x.size, max(top, 0)))
    i_prev2 = np.zeros_like(x)
    i_prev1 = start / norms[1]
    xm1 = x - 1.0
    for alpha in range(-1, top + 1):
        na = norms[alpha + 3]
        value = w2 * ((alpha + 1) * norms[alpha + 1] / na) * i_prev2 - (norms[alpha + 2] / na) * xm1 * i_prev1
        if filter_part:
            c_lower = c_lower * d
        else:
            c_upper = c_upper * d
            value += c_upper / na
        value -= c_lower / na
        if alpha > 0:
            out[:, alpha - 1] = value
        i_prev2, i_prev1 = i_prev1, value
    return out


def _derivative_terms(x, width, d_width, d_centre, integrals, n_poly, norms):
    """Σ-free part of dĨ_α/dx of a Gaussian of centre x, width w (RAD:266-280 / RAD:318-340):

        (x-1)/w²·(w'(x-1)/w - x')·Ĩ_α + N_{α+1}/(w²N_α)·(2w'(x-1)/w - x')·Ĩ_{α+1} + w'·N_{α+2}/(w³N_α)·Ĩ_{α+2}

    for α = 1..n_poly (x' = d_centre, w' = d_width; per neighbour arrays or scalars).
    """
    w2 = width * width
    xm1 = (x - 1.0)[:, None]
    w, w2c, dw, dc = width[:, None], w2[:, None], np.broadcast_to(d_width, x.shape)[:, None], \
        np.broadcast_to(d_centre, x.shape)[:, None]
    a = np.arange(1, n_poly + 1)
    ratio1 = (norms[a + 4] / norms[a + 3])[None, :]
    ratio2 = (norms[a + 5] / norms[a + 3])[None, :]
    return (xm1 / w2c * (dw * xm1 / w - dc) * integrals[:, :n_poly]
            + ratio1 / w2c * (2.0 * dw * xm1 / w - dc) * integrals[:, 1:n_poly + 1]
            + dw * ratio2 / (w2c * w) * integrals[:, 2:n_poly + 2])


class RadialBlock:
    """The radial basis of one neighbour species and the expansion of its neighbours (spec §2).

    ``alpha_max`` functions: poly3 (1-x)^(α+2)/N_α, α = 1..A, or for poly3gauss A-1 of them plus the
    Gaussian N_g exp(-x²/2σ̂²); ``overlap`` is their S, ``W`` = S^(-1/2) (QUIP's orthonormaliser).
    """

    def __init__(self, alpha_max: int, basis: str, sigma_r: float, sigma_r_scaling: float,
                 amplitude_scaling: float, rcut_hard: float, rcut_soft: float, nf: float, enhancement: int):
        self.n = alpha_max
        self.gauss = basis == "poly3gauss"
        self.n_poly = alpha_max - 1 if self.gauss else alpha_max
        self.rcut_hard = rcut_hard
        self.x_soft = rcut_soft / rcut_hard
        self.d = 1.0 - rcut_soft / rcut_hard
        self.exact_cut = rcut_soft == rcut_hard
        self.sigma_hat = sigma_r / rcut_hard
        self.sigma_r = sigma_r
        self.beta = sigma_r_scaling
        self.gamma = amplitude_scaling
        self.nf = nf
        self.enhancement = enhancement
        self.overlap = overlap_poly3gauss(alpha_max, self.sigma_hat) if self.gauss else overlap_poly3(alpha_max)
        self.W = inverse_square_root(self.overlap)
        self.norms = poly_norms(self.n_poly + 2)

    def amplitude(self, x, s):
        """a(x) and a'(x) = da/dx of the polynomial scaling mode with radial enhancement (RAD:190-231).

        γ == 0: a = 1/ŝ; P(x) = 1 + 2x³ - 3x² <= 1e-10: a = 0; otherwise a = P^γ/ŝ (exact equality
        tests on γ, as QUIP).  Enhancement 1: a·(x + √(2/π)ŝ); 2: a·(x² + ŝ² + √(8/π)ŝx).
        """
        beta, gamma = self.beta, self.gamma
        if gamma == 0.0:
            a = 1.0 / s
            da = np.full_like(x, -beta) / (s * s)
        else:
            poly = 1.0 + 2.0 * x ** 3 - 3.0 * x ** 2
            live = poly > _P_FLOOR
            safe = np.where(live, poly, 1.0)
            if gamma == 1.0:
                a = 1.0 / s * safe
                da = 6.0 / s * (x ** 2 - x) - beta / s * a
            else:
                a = 1.0 / s * safe ** gamma
                da = 6.0 * gamma / s * (x ** 2 - x) * safe ** (gamma - 1.0) - beta / s * a
            a = np.where(live, a, 0.0)
            da = np.where(live, da, 0.0)
        if self.enhancement == 1:
            da = a * (1.0 + _SQRT_2_PI * beta) + da * (x + _SQRT_2_PI * s)
            a = a * (x + _SQRT_2_PI * s)
        elif self.enhancement == 2:
            da = (a * (2.0 * x + 2.0 * s * beta + _SQRT_8_PI * s + _SQRT_8_PI * x * beta)
                  + da * (x ** 2 + s * s + _SQRT_8_PI * s * x))
            a = a * (x ** 2 + s * s + _SQRT_8_PI * s * x)
        return a, da

    def expand(self, r, grad: bool):
        """R (p, A) = a·W·v·√r_h of neighbours at distances r < r_h, and with ``grad`` dR/dr (RAD:350-360).

        v_α = Ĩ_α + p_f·Ĩᶠ_α (main part and, within 4ŝ of the soft cutoff, the filter part); for
        poly3gauss v_A is the Gaussian component.  dR/dr = W·(a·Δ + a'·v)/√r_h with QUIP's Δ.
        """
        x = np.asarray(r, dtype=float) / self.rcut_hard
        s = self.sigma_hat + self.beta * x
        s2 = s * s
        a, da = self.amplitude(x, s)
        n, n_poly, xs, d = self.n, self.n_poly, self.x_soft, self.d
        top = n_poly + 2 if grad else n_poly
        start = _SQRT_PI_2 * s * (erf((xs - x) / _SQRT2 / s) - erf((-x) / _SQRT2 / s))
        c_upper = np.zeros_like(x) if self.exact_cut else s2 / d * np.exp(-0.5 * (xs - x) ** 2 / s2)
        c_lower = s2 * np.exp(-0.5 * x ** 2 / s2)
        main = _recursion(x, s, start, c_upper, c_lower, d, top, self.norms, filter_part=False)
        v = np.zeros((x.size, n))
        v[:, :n_poly] = main[:, :n_poly]
        dv = None
        if grad:
            dv = np.zeros((x.size, n))
            dv[:, :n_poly] = _derivative_terms(x, s, self.beta, 1.0, main, n_poly, self.norms)
        near = np.flatnonzero((xs - x) < _SWITCH_WIDTHS * s)
        if near.size:
            self._add_filter(x[near], s[near], near, top, v, dv)
        if self.gauss:
            self._gaussian_component(x, s, v, dv)
        W = self.W
        R = a[:, None] * (v @ W.T) * math.sqrt(self.rcut_hard)
        if not grad:
            return R, None
        dR = (a[:, None] * dv + da[:, None] * v) @ W.T / math.sqrt(self.rcut_hard)
        return R, dR

    def _add_filter(self, x, s, rows, top, v, dv):
        """The filter part p_f·Ĩᶠ_α of neighbours within 4ŝ of the soft cutoff (RAD:282-343)."""
        xs, d, nf, beta = self.x_soft, self.d, self.nf, self.beta
        s2 = s * s
        q = d ** 2 / nf ** 2
        denom = s2 + q
        sf = s * d / nf / np.sqrt(denom)
        xf = (s2 * xs + q * x) / denom
        sf2 = sf * sf
        pf = np.exp(-0.5 * (xs - x) ** 2 / denom)
        start = _SQRT_PI_2 * sf * (erf((1.0 - xf) / _SQRT2 / sf) - erf((xs - xf) / _SQRT2 / sf))
        c_lower = sf2 / d * np.exp(-0.5 * (xs - xf) ** 2 / sf2)
        part = _recursion(xf, sf, start, None, c_lower, d, top, self.norms, filter_part=True)
        n_poly = self.n_poly
        v[rows, :n_poly] += pf[:, None] * part[:, :n_poly]
        if dv is None:
            return
        dpf = pf * ((xs - x) / denom + (xs - x) ** 2 / denom ** 2 * s * beta)
        dxf = (2.0 * s * xs * beta + q) / denom - (s2 * xs + q * x) * 2.0 * s * beta / denom ** 2
        dsf = beta * d / nf / np.sqrt(denom) * (1.0 - s2 / denom)
        terms = _derivative_terms(xf, sf, dsf, dxf, part, n_poly, self.norms)
        dv[rows, :n_poly] += pf[:, None] * terms + dpf[:, None] * part[:, :n_poly]

    def _gaussian_component(self, x, s, v, dv):
        """poly3gauss: the overlap with the Gaussian basis function, v_A (and Δ_A), no filter (RAD:668-694).

        Zero beyond x = 4(σ̂ + ŝ) (a hard switch, as QUIP).
        """
        sh, beta = self.sigma_hat, self.beta
        last = self.n - 1
        v[:, last] = 0.0
        if dv is not None:
            dv[:, last] = 0.0
        near = np.flatnonzero(x < _SWITCH_WIDTHS * (sh + s))
        if near.size == 0:
            return
        x, s = x[near], s[near]
        s2 = s * s
        star2 = sh ** 2 + s2
        star = np.sqrt(star2)
        ng = math.sqrt(2.0 / sh) / math.pi ** 0.25
        gs = np.exp(-0.5 * x ** 2 / star2) * _SQRT_PI_2 * s * sh / star * (1.0 + erf(sh / s * x / _SQRT2 / star)) * ng
        v[near, last] = gs
        if dv is None:
            return
        e = np.exp(-0.5 * x ** 2 / star2 * (1.0 + sh ** 2 / s2))
        dv[near, last] = ((x ** 2 * beta / s ** 3 - x / star2 + beta * x ** 2 * sh ** 4 / s ** 3 / star2 ** 2
                           + beta * sh ** 2 / s / star2 - 2.0 * x ** 2 * beta * sh ** 2 / s ** 3 / star2) * gs
                          + (1.0 / s2 - 2.0 * x * beta / s ** 3) * s2 * sh ** 2 / star2 * ng * e
                          + ng * e * beta / s * x * sh ** 4 / star2 ** 2)

    def centre_term(self, weight: float, sigma_t: float) -> np.ndarray:
        """The centre's own contribution to c_{00,n} of this (the centre's) species block (spec §2.5).

        poly3 (RAD:175-177): the centre is expanded as a neighbour at x = 0 with amplitude
        ``weight``·a(0); its angular factor is 4π·Λ_00·r_h²/σ_t² (ι_0(0) = 1, ι_{l>0}(0) = 0).
        poly3gauss (ST:359-376): a_c·w·√(4π)·π^(1/4)·√(σ_r/2)·r_h³/(σ_t²σ_r)·(W·S_{:,A}), σ_r, σ_t and
        r_h in Å, a_c = 1, √(2/π)σ_r/r_h or σ_r²/r_h² for radial_enhancement 0, 1, 2.
        Zero when ``weight`` is 0 (QUIP's do_central).
        """
        if weight == 0.0:
            return np.zeros(self.n)
        rh, sr = self.rcut_hard, self.sigma_r
        if not self.gauss:
            radial, _ = self.expand(np.zeros(1), False)
            return 4.0 * math.pi * (weight * radial[0]) * (rh ** 2 / sigma_t ** 2) / math.sqrt(4.0 * math.pi)
        amp = {1: _SQRT_2_PI * sr / rh, 2: sr ** 2 / rh ** 2}.get(self.enhancement, 1.0)
        factor = (amp * weight * math.sqrt(4.0 * math.pi) * math.pi ** 0.25 * math.sqrt(sr / 2.0)
                  * rh ** 3 / sigma_t ** 2 / sr)
        return factor * (self.W @ self.overlap[:, -1])
