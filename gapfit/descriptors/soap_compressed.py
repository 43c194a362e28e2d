"""The soap descriptor's compressed power spectrum (``nu_R``, ``nu_S``, ``R_mix``, ``Z_mix``, ``sym_mix``,
``K``, ``mix_shift``, ``coupling``, ``Z_map``): values and gradients.

QUIP's general path (GAP ``descriptors.F90`` @480fc2d, :8575-8651 values, :8676-8763 gradients;
docs/dev/soap_compression.md §3-§4).  With the mixing matrices and pairs of
:class:`gapfit.descriptors.soap_mixing.Compression`, for every pair ``i = (a_i, b_i)`` with factor
``f_i`` and every ``l``::

    Y1_l = X_l W1,   Y2_l = X_l W2,   p[i·(L+1) + l] = tlpo_l · f_i · Σ_m Y1_l[m, a_i] Y2_l[m, b_i]

(the Gram matrices ``Y1ᵀY2`` for ``coupling=T``; single dot products for ``coupling=F``).
gapfit's real spherical harmonics give QUIP's complex ``Re Σ_m Y1 conj(Y2)``: the change of the m
basis is unitary per l and W is real.

Gradients: the mixing is linear and fixed.  A neighbour p of species s changes
``dX_l[m, s·n + a] = dR_la û Y_lm + R_la ∇Y_lm``, so ``dY_i = dX W_i`` involves only the rows
of species s.  With the projections ``A[p, l, c] = Σ_m Y_lm X_l[m, c]``, ``B[p, x, l, c] =
Σ_m ∂_x Y_lm X_l[m, c]`` (from the descriptor) mixed as ``A_i = A W_i``, ``B_i = B W_i``, and the
neighbour's mixed radial terms ``R̃_i = R W_i[s]``, ``dR̃_i = dR W_i[s]``::

    dp[i, l] = tlpo_l f_i (R̃1_a B2_b + R̃2_b B1_a + û (dR̃1_a A2_b + dR̃2_b A1_a))

(spec §4).  Every neighbour touches every mixed channel, so the elements are gathered by index
(``a_i·(L+1) + l``) rather than skipped by channel as in :mod:`gapfit.descriptors.soap_power`.
Normalisation, row layout and centre rows are shared with it (:func:`store_rows`).
"""

from __future__ import annotations

import numpy as np

from .soap_mixing import Compression
from .soap_power import spectrum_norms, store_rows

# Bytes of the gradient block (3, E, neighbours) of one group of neighbours.
_GRAD_BLOCK_BYTES = 4 << 20


class CompressedPowerSpectrum:
    """The compressed power spectrum of ``n_species`` channels of ``n_max`` radial functions up to ``l_max``.

    Same interface as :class:`gapfit.descriptors.soap_power.PowerSpectrum`: ``n_elements``,
    :meth:`values` from the expansion ``X`` and :meth:`gradients` from the projections ``A``, ``B``
    of the unmixed channels.
    """

    def __init__(self, compression: Compression, n_max: int, n_species: int, l_max: int, two_l_plus_one: bool,
                 normalise: bool):
        c = compression
        self.n_max, self.n_species, self.l_max = n_max, n_species, l_max
        self.normalise = normalise
        self.w1, self.w2, self.same = c.w1, c.w2, c.same_densities
        self.full_product = c.full_product
        L1 = l_max + 1
        k1, k2 = c.w1.shape[1], c.w2.shape[1]
        self._tlpo = 1.0 / np.sqrt(2.0 * np.arange(L1) + 1.0) if two_l_plus_one else np.ones(L1)
        n_pairs = c.first.size
        self.n_elements = n_pairs * L1
        l = np.tile(np.arange(L1), n_pairs)  # element e = i·(L+1) + l: l fastest
        pair = np.repeat(np.arange(n_pairs), L1)
        self._first, self._second = c.first, c.second
        self._fac = c.factor[pair]
        self._val_fac = self._tlpo[l] * self._fac
        self._j1 = c.first[pair] * L1 + l  # into (K1·(L+1)) arrays, k outer
        self._j2 = c.second[pair] * L1 + l
        self._gram_index = (l * k1 + c.first[pair]) * k2 + c.second[pair]
        #: floats per neighbour pair of A_i, B_i (chunk sizing)
        self.pair_floats = 4 * L1 * (k1 + (0 if self.same else k2))

    def _densities(self, Xl):
        y1 = np.matmul(Xl, self.w1)
        return y1, (y1 if self.same else np.matmul(Xl, self.w2))

    def values(self, X):
        """Packed (unnormalised) spectra q (n_c, d-1) and their norms (QUIP :8575-8651)."""
        n_c = X[0].shape[0]
        L1 = self.l_max + 1
        if self.full_product:
            k1, k2 = self.w1.shape[1], self.w2.shape[1]
            gram = np.empty((n_c, L1, k1, k2))
            for l, Xl in enumerate(X):
                y1, y2 = self._densities(Xl)
                gram[:, l] = np.matmul(y1.transpose(0, 2, 1), y2)
            q = gram.reshape(n_c, -1)[:, self._gram_index] * self._val_fac[None, :]
        else:
            prods = np.empty((n_c, self._first.size, L1))
            for l, Xl in enumerate(X):
                y1, y2 = self._densities(Xl)
                prods[:, :, l] = np.einsum("cmi,cmi->ci", y1[:, :, self._first], y2[:, :, self._second])
            q = prods.reshape(n_c, -1) * self._val_fac[None, :]
        return q, spectrum_norms(q, self.normalise)

    def gradients(self, terms, ch, A, B, centre_of_pair, scale, qhat, grad_x, rows, centre_sum,
                  sum_index=None):
        """Write the (normalised) gradient of every neighbour row (see the module docstring).

        ``A`` (p, l, S·n) and ``B`` (p, 3, l, S·n) are the projections on the unmixed channels;
        ``scale`` (1/|q|) and 1/√(2l+1) are folded into their mixed images.  ``centre_sum``
        accumulates the rows of each centre (``sum_index``, sorted).
        """
        if sum_index is None:
            sum_index = centre_of_pair
        n = self.n_max
        mixed = [(np.matmul(A, w), np.matmul(B, w)) for w in ((self.w1,) if self.same else (self.w1, self.w2))]
        block = max(1, _GRAD_BLOCK_BYTES // (8 * 3 * max(1, self.n_elements)))
        for s in range(self.n_species):
            ps = np.flatnonzero(ch == s)
            w_s = [w[s * n:(s + 1) * n] for w in ((self.w1,) if self.same else (self.w1, self.w2))]
            for lo in range(0, ps.size, block):
                p = ps[lo:lo + block]
                cp = centre_of_pair[p]
                w = (scale[cp][:, None] * self._tlpo[None, :])  # (p, l)
                g = self._block(terms, p, w, mixed, w_s)
                store_rows(g, qhat, cp, grad_x, rows[p], centre_sum, sum_index[p])

    def _block(self, terms, p, w, mixed, w_s):
        """g (3, E, p) of the neighbours p (all of one species, whose rows of W_i are ``w_s``)."""
        nb = p.size
        u = terms.u[p].T[:, None, :]  # (3, 1, p)
        dens = []
        for (Ai, Bi), wi in zip(mixed, w_s):
            At = (Ai[p] * w[:, :, None]).transpose(2, 1, 0).reshape(-1, nb)  # (K·(L+1), p), k outer
            Bt = (Bi[p] * w[:, None, :, None]).transpose(1, 3, 2, 0).reshape(3, -1, nb)
            Rt = np.matmul(terms.R[p], wi).transpose(2, 1, 0).reshape(-1, nb)  # R̃_i
            dRt = np.matmul(terms.dR[p], wi).transpose(2, 1, 0).reshape(-1, nb)
            dens.append((At, Bt, Rt, dRt))
        A1, B1, R1, dR1 = dens[0]
        A2, B2, R2, dR2 = dens[-1]
        fac = self._fac[:, None]
        j1, j2 = self._j1, self._j2
        r1 = np.take(R1, j1, axis=0)
        r1 *= fac
        r2 = np.take(R2, j2, axis=0)
        r2 *= fac
        g = np.take(B2, j2, axis=1)
        g *= r1  # R̃1_a B2_b
        g += np.take(B1, j1, axis=1) * r2  # R̃2_b B1_a
        t = np.take(dR1, j1, axis=0)
        t *= fac
        t *= np.take(A2, j2, axis=0)  # dR̃1_a A2_b
        t2 = np.take(dR2, j2, axis=0)
        t2 *= fac
        t2 *= np.take(A1, j1, axis=0)  # dR̃2_b A1_a
        t += t2
        g += u * t[None]
        return g
