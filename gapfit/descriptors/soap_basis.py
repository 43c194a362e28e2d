"""The basis of the soap descriptor's neighbour-density expansion (see :mod:`gapfit.descriptors.soap`).

:class:`RadialBasis` builds QUIP's radial basis (EQUISPACED_GAUSS, GTO or POLY: the radial grid,
the transforms from grid values to coefficients, the coefficients of the centre's Gaussian) and
evaluates a neighbour Gaussian's radial integrals by QUIP's upward Bessel recurrence
(descriptors.md §1.4-1.5); :func:`real_spherical_harmonics` gives the angular part.  Kept apart
from the descriptor class, which only parses parameters and assembles the power spectrum; this
module is a helper, not a descriptor (the registry in ``descriptors/__init__.py`` names modules
explicitly).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
from scipy.special import erf, gammainc
from scipy.special import gamma as gamma_function


class RadialBasis:
    """QUIP's radial basis for ``n_max`` functions up to ``l_max``, Gaussians of exponent ``alpha``.

    ``r_basis``: the radial grid; ``transform`` (l, n_grid, n): grid values -> coefficients;
    ``centre_coefficients``: those of a Gaussian at r = 0.  Building it raises
    :class:`numpy.linalg.LinAlgError` when the basis is numerically singular.
    """

    def __init__(self, kind: str, n: int, lmax: int, alpha: float, cutoff_basis: float):
        self.alpha, self.l_max = alpha, lmax
        if kind == "EQUISPACED_GAUSS":
            r_basis = _accumulate(cutoff_basis / n, n)
            ri, rj = r_basis[None, :], r_basis[:, None]
            # C[j, i] = g_i(r_j); S[j, i] = ∫ g_i g_j r² dr (descriptors.md §1.4)
            cov = np.exp(-alpha * (ri - rj) ** 2)
            s = ri + rj
            overlap = (np.exp(-alpha * (ri ** 2 + rj ** 2)) * math.sqrt(2.0) * alpha ** 1.5 * s
                       + alpha * np.exp(-0.5 * alpha * (ri - rj) ** 2) * math.sqrt(math.pi)
                       * (1.0 + alpha * s ** 2) * (1.0 + erf(math.sqrt(alpha / 2.0) * s)))
            overlap = overlap / math.sqrt(128.0 * alpha ** 5)
            chol = cholesky_lower(overlap)
            cov_chol = cholesky_lower(cov)
            transform = scipy.linalg.solve_triangular(
                cov_chol, scipy.linalg.solve_triangular(cov_chol, chol, lower=True), lower=True, trans="T")
            self.transform = np.broadcast_to(transform, (lmax + 1, n, n))
            self.centre_coefficients = chol[0].copy()
        else:
            n_grid = 3 * n
            r_basis = _accumulate(cutoff_basis / n_grid, n_grid)
            maps = []
            if kind == "GTO":
                rg = (cutoff_basis / n) * np.arange(1, n + 1)
                for l in range(lmax + 1):
                    a_ln = -rg ** (-2.0) * (math.log(0.001) - l * np.log(rg))
                    a = a_ln[:, None] + a_ln[None, :]
                    t = l + 1.5
                    u = a * cutoff_basis ** 2
                    overlap = 0.5 * cutoff_basis ** (2 * t) * u ** (-t) * gammainc(t, u) * gamma_function(t)
                    basis = r_basis[:, None] ** l * np.exp(-a_ln[None, :] * r_basis[:, None] ** 2)
                    maps.append(_least_squares_map(basis, overlap))
            else:  # POLY
                i = np.arange(1, n + 1, dtype=float)
                norm = np.sqrt(cutoff_basis ** (2 * i + 7) / ((i + 3) * (2 * i + 5) * (2 * i + 7)))
                ij = i[:, None] + i[None, :]
                overlap = (2 * cutoff_basis ** (ij + 7) / ((5 + ij) * (6 + ij) * (7 + ij))) / np.outer(norm, norm)
                basis = (cutoff_basis - r_basis[:, None]) ** (i[None, :] + 2) / norm[None, :]
                maps = [_least_squares_map(basis, overlap)] * (lmax + 1)
            # maps[l] is (n, n_grid): coefficients = maps[l] @ grid values
            self.transform = np.stack([m.T for m in maps])  # (l, n_grid, n)
            self.centre_coefficients = maps[0] @ np.exp(-alpha * r_basis ** 2)
        self.r_basis = r_basis
        self.zero_column = np.flatnonzero(r_basis == 0.0)
        self.nonzero_column = np.flatnonzero(r_basis != 0.0)

    def integrals(self, r, f, df, grad):
        """R[p, l, n] = Σ_a G_l(r, r_a) T_a n · f(r) and its r-derivative (descriptors.md §1.5).

        ``f`` (and ``df``, its derivative, with ``grad``) is the neighbour weight at ``r``.
        """
        alpha, lmax = self.alpha, self.l_max
        rb = self.r_basis
        n_p, n_a = r.size, rb.size
        top = lmax + 1 if grad else lmax
        G = np.zeros((top + 1, n_p, n_a))
        nz = self.nonzero_column
        if nz.size:
            rr = r[:, None]
            ra = rb[None, nz]
            arg = 2.0 * alpha * rr * ra
            exp_p = _exp_as_libm(-alpha * (rr + ra) ** 2)
            exp_m = _exp_as_libm(-alpha * (rr - ra) ** 2)
            g_lm = 0.5 * (exp_m + exp_p) / arg  # G_{-1}
            g_l = 0.5 * (exp_m - exp_p) / arg  # G_0
            G[0][:, nz] = g_l
            for l in range(1, top + 1):  # QUIP's upward recurrence (pitfall P9)
                g_lm, g_l = g_l, g_lm - (2 * l - 1) * g_l / arg
                G[l][:, nz] = g_l
        for a in self.zero_column:
            G[0][:, a] = np.exp(-alpha * (rb[a] ** 2 + r ** 2))
        T = self.transform
        R = np.matmul(G[:lmax + 1], T)  # (l, p, n)
        dR = None
        if grad:
            l_col = np.arange(lmax + 1)[:, None, None]
            dG = (-2.0 * alpha) * r[None, :, None] * G[:lmax + 1] + l_col * G[:lmax + 1] / r[None, :, None] \
                + G[1:lmax + 2] * (2.0 * alpha * rb)[None, None, :]
            dR = np.matmul(dG, T) * f[None, :, None] + R * df[None, :, None]
            dR = dR.transpose(1, 0, 2)
        R = (R * f[None, :, None]).transpose(1, 0, 2)  # (p, l, n)
        return R, dR


def _accumulate(spacing, count):
    """QUIP's grid r_1 = 0, r_a = r_{a-1} + h (repeated addition, not (a-1)·h)."""
    out = np.zeros(count)
    for a in range(1, count):
        out[a] = out[a - 1] + spacing
    return out


def _exp_as_libm(x):
    """exp(x) rounded as the C library's exp (which QUIP's Fortran calls) in all but ~0.1% of cases.

    NumPy's SIMD exp is 1 ulp off glibc's in ~5% of arguments.  That is harmless except
    here: the upward Bessel recurrence amplifies the rounding of ``exp_m - exp_p`` at
    small arguments, and with the GTO basis at l = 8 a 1-ulp difference became a 1e-10
    difference in the gradients.  Evaluated in extended precision and rounded once, the
    same case agrees to 4e-14 (cost: +2% of soap time with the default basis, +13% with GTO)."""
    if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        return np.exp(x)
    return np.exp(np.asarray(x, dtype=np.longdouble)).astype(np.float64)


def cholesky_lower(a: np.ndarray) -> np.ndarray:
    """L with a = L Lᵀ, the same bits on every machine; :class:`numpy.linalg.LinAlgError` if a is not
    positive definite.

    The bases' overlap matrices become singular to working precision as n_max grows (POLY n_max 11,
    GTO 18: smallest eigenvalue ~1e-17 of the largest), and whether LAPACK's Cholesky of such a matrix
    succeeds depended on the BLAS kernels (issue 18: 13 of 990 settings succeeded under OpenBLAS's
    Haswell kernels and failed under SkylakeX's, or the reverse).  Here each pivot and element is
    one exactly rounded sum (math.fsum of the elementwise products), so the answer depends only on
    the matrix.  n is at most a few tens, so the O(n³) Python loop costs well under a millisecond.
    """
    a = np.asarray(a, dtype=float)
    n = a.shape[0]
    low = np.zeros_like(a)
    for j in range(n):
        row = low[j, :j]
        pivot = a[j, j] - math.fsum(row * row)
        if not pivot > 0.0:
            raise np.linalg.LinAlgError(f"{j + 1}-th leading minor not positive definite")
        low[j, j] = math.sqrt(pivot)
        for i in range(j + 1, n):
            low[i, j] = (a[i, j] - math.fsum(low[i, :j] * row)) / low[j, j]
    return low


def _least_squares_map(basis, overlap):
    """The linear map (n, n_grid) from grid values to coefficients: min ‖B L⁻ᵀ c − g‖ (QR), as QUIP."""
    chol = cholesky_lower(overlap)
    linv_t = scipy.linalg.solve_triangular(chol.T, np.eye(chol.shape[0]), lower=False)
    bl = basis @ linv_t
    q, r = scipy.linalg.qr(bl, mode="economic")
    return scipy.linalg.solve_triangular(r, q.T, lower=False)



def real_spherical_harmonics(u, lmax, grad):
    """Real orthonormal Y_lm(û) (p, (l_max+1)²), index l² + l + m, and ∇ with respect to d times |d|.

    Built from solid harmonics: Y = N Q_l^m(z, r²) Re/Im (x + iy)^m, where Q follows the
    associated-Legendre recurrence; the gradient is that of the homogeneous polynomial
    projected on the sphere, (∇S − l S û) (divide by r for ∇_d).
    """
    n_p = u.shape[0]
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    m2 = (lmax + 1) ** 2
    Y = np.empty((n_p, m2))
    dS = np.empty((n_p, 3, m2)) if grad else None
    C = [np.ones(n_p)]
    Sn = [np.zeros(n_p)]
    for m in range(1, lmax + 1):
        C.append(x * C[m - 1] - y * Sn[m - 1])
        Sn.append(x * Sn[m - 1] + y * C[m - 1])
    inv4pi = 1.0 / (4.0 * math.pi)
    for m in range(lmax + 1):
        qmm = (-1.0) ** m * float(_double_factorial(2 * m - 1))
        Q1 = Q2 = Qz1 = Qz2 = Qr1 = Qr2 = None
        for l in range(m, lmax + 1):
            if l == m:
                Q = np.full(n_p, qmm)
                Qz = Qr = None
            elif l == m + 1:
                Q = (2 * m + 1) * z * qmm
                Qz = np.full(n_p, (2 * m + 1) * qmm)
                Qr = None
            else:
                a, b, c = 2 * l - 1, l + m - 1, 1.0 / (l - m)
                Q = (a * z * Q1 - b * Q2) * c  # r² = 1 on the sphere
                if grad:
                    Qz = (a * (Q1 + z * Qz1) - b * (Qz2 if Qz2 is not None else 0.0)) * c
                    Qr = (a * z * (Qr1 if Qr1 is not None else 0.0)
                          - b * (Q2 + (Qr2 if Qr2 is not None else 0.0))) * c
            norm = math.sqrt((2 * l + 1) * inv4pi * math.factorial(l - m) / math.factorial(l + m))
            if m > 0:
                norm *= math.sqrt(2.0)
            NQ = norm * Q
            i0 = l * l + l
            if m == 0:
                Y[:, i0] = NQ
            else:
                Y[:, i0 + m] = NQ * C[m]
                Y[:, i0 - m] = NQ * Sn[m]
            if grad:
                # ∂/∂x_k of N Q(z, r²) with r² = x² + y² + z²
                dQr2 = 2.0 * norm * Qr if Qr is not None else None
                dQz = norm * Qz if Qz is not None else None
                if m == 0:
                    dS[:, 0, i0] = dQr2 * x if dQr2 is not None else 0.0
                    dS[:, 1, i0] = dQr2 * y if dQr2 is not None else 0.0
                    gz = (dQz if dQz is not None else 0.0) + (dQr2 * z if dQr2 is not None else 0.0)
                    dS[:, 2, i0] = gz
                else:
                    gx = dQr2 * x if dQr2 is not None else 0.0
                    gy = dQr2 * y if dQr2 is not None else 0.0
                    gz = (dQz if dQz is not None else 0.0) + (dQr2 * z if dQr2 is not None else 0.0)
                    mNQ = m * NQ
                    dS[:, 0, i0 + m] = gx * C[m] + mNQ * C[m - 1]
                    dS[:, 1, i0 + m] = gy * C[m] - mNQ * Sn[m - 1]
                    dS[:, 2, i0 + m] = gz * C[m]
                    dS[:, 0, i0 - m] = gx * Sn[m] + mNQ * Sn[m - 1]
                    dS[:, 1, i0 - m] = gy * Sn[m] + mNQ * C[m - 1]
                    dS[:, 2, i0 - m] = gz * Sn[m]
            Q2, Q1 = Q1, Q
            Qz2, Qz1 = Qz1, Qz
            Qr2, Qr1 = Qr1, Qr
    if grad:
        lvec = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1).astype(float)
        dS -= u[:, :, None] * (Y * lvec[None, :])[:, None, :]
    return Y, dS


def _double_factorial(k):
    out = 1
    while k > 1:
        out *= k
        k -= 2
    return out
