"""The soap descriptor's power spectrum (see :mod:`gapfit.descriptors.soap`): packing, values, gradients.

:class:`PowerSpectrum` fixes QUIP's element order (channel pairs k ≥ k', k outer, l fastest,
√2 off the diagonal, 1/√(2l+1)), packs P_l = X_lᵀ X_l from the expansion coefficients X, and
writes each neighbour's gradient row, skipping the terms that vanish because a neighbour only
touches its own channel.  Kept apart from the descriptor class, which parses the parameters
and expands the neighbour density; this module is a helper, not a descriptor (the registry
in ``descriptors/__init__.py`` names modules explicitly).
"""

from __future__ import annotations

import math

import numpy as np

# Bytes of the power-spectrum gradient block of one group of neighbours.
_GRAD_BLOCK_BYTES = 2 << 20
_STORE_WIDTH = 1024  # elements per piece when the gradients are transposed into their rows


class PowerSpectrum:
    """The packed power spectrum of ``n_species`` channels of ``n_max`` radial functions up to ``l_max``.

    ``n_elements``: its length (the descriptor has one more, ``covariance_sigma0``).
    """

    #: floats per neighbour pair of the gradient's work arrays beyond the descriptor's (chunk sizing)
    pair_floats = 0

    def __init__(self, n_max: int, n_species: int, l_max: int, diagonal_radial: bool, two_l_plus_one: bool,
                 normalise: bool):
        """Element order: channel pairs k ≥ k' (k outer, k' inner), l fastest; √2 off the diagonal.

        The elements of one k form a contiguous block (k' runs over a slice of
        the channels: all k' ≤ k, or with diagonal_radial those with the same n).
        """
        self.n_max, self.n_species, self.l_max = n_max, n_species, l_max
        self.normalise = normalise
        n, S, lmax = self.n_max, self.n_species, self.l_max
        K = n * S
        L1 = lmax + 1
        diagonal = diagonal_radial
        step = n if diagonal else 1
        # per neighbour channel s, what the block of each k needs (only channel s of dX is non-zero):
        #   "zero":  k in a channel below s, so every k' <= k is too: the gradient is zero;
        #   "own":   k in channel s: k' in lower channels (the R̃_k terms) and k' in channel s (all);
        #   "other": k in a higher channel: only k' in channel s contributes (the R̃_k' terms)
        plans = [[] for _ in range(S)]
        k1_list, k2_list = [], []
        e = 0
        for k1 in range(K):
            k2 = np.arange(k1 % n if diagonal else 0, k1 + 1, step)
            e0, e1, nk2 = e, e + k2.size * L1, k2.size
            e = e1
            k1_list.append(np.full(nk2, k1))
            k2_list.append(k2)
            s1 = k1 // n
            for sp in range(S):
                i0 = int(np.searchsorted(k2, sp * n))
                i1 = int(np.searchsorted(k2, (sp + 1) * n))
                if sp > s1:
                    plans[sp].append(("zero", e0, e1, nk2))
                elif sp == s1:
                    lower = slice(int(k2[0]), int(k2[i0 - 1]) + 1, step) if i0 > 0 else None
                    plans[sp].append(("own", e0, e1, nk2, k1, k1 - sp * n, i0, lower,
                                      slice(int(k2[i0]) - sp * n, k1 - sp * n + 1, step),
                                      slice(int(k2[i0]), k1 + 1, step)))
                else:
                    plans[sp].append(("other", e0, e1, nk2, k1, i0, i1,
                                      slice(int(k2[i0]) - sp * n, int(k2[i1 - 1]) - sp * n + 1, step)))
        k1, k2 = np.concatenate(k1_list), np.concatenate(k2_list)
        l = np.arange(L1)
        self._tlpo = 1.0 / np.sqrt(2.0 * l + 1.0) if two_l_plus_one else np.ones(L1)
        Lr = np.tile(l, k1.size)
        K1 = np.repeat(k1, L1)
        K2 = np.repeat(k2, L1)
        self._fac = self._tlpo[Lr] * np.where(K1 != K2, math.sqrt(2.0), 1.0)
        self._gram_index = (Lr * K + K1) * K + K2  # into (l, k, k') Gram matrices
        self._plans = plans
        self.n_elements = e

    def values(self, X):
        """Packed (unnormalised) power spectra q (n_c, d-1) and their norms."""
        n_c = X[0].shape[0]
        K = X[0].shape[2]
        gram = np.empty((n_c, self.l_max + 1, K, K))
        for l, Xl in enumerate(X):
            gram[:, l] = np.matmul(Xl.transpose(0, 2, 1), Xl)
        q = gram.reshape(n_c, -1)[:, self._gram_index] * self._fac[None, :]
        return q, spectrum_norms(q, self.normalise)

    def gradients(self, terms, ch, A, B, centre_of_pair, scale, qhat, grad_x, rows, centre_sum,
                  sum_index=None):
        """Write the (normalised) power-spectrum gradient of every neighbour row.

        Neighbour p in channel s only changes the channels (s, a): dX_l[m, (s, a)] =
        dR_la û Y_lm + R_la ∇Y_lm.  With A_k = Σ_m Y_lm X_l[m, k] and B_k = Σ_m ∇Y_lm X_l[m, k],
        dP_l[k, k'] = Z̃[k, k'] + Z̃[k', k], Z̃[k, k'] = û dR̃_k A_k' + R̃_k B_k', where R̃ is R
        in channel s and zero elsewhere; the neighbours are processed per channel, so the
        zero terms are skipped.  The arrays are laid out with the neighbours last (long inner
        loops); ``scale`` (1/|q|) and 1/√(2l+1) are folded into A and B.  ``centre_sum``
        accumulates the rows of each centre (``sum_index``, sorted).
        """
        lmax = self.l_max
        L1, E = lmax + 1, self.n_elements
        if sum_index is None:
            sum_index = centre_of_pair
        block = max(1, _GRAD_BLOCK_BYTES // (8 * 3 * E))
        sqrt2 = math.sqrt(2.0)
        tlpo = self._tlpo
        for s in range(self.n_species):
            ps = np.flatnonzero(ch == s)
            for lo in range(0, ps.size, block):
                p = ps[lo:lo + block]
                nb_p = p.size
                cp = centre_of_pair[p]
                w = scale[cp][None, :] * tlpo[:, None]  # (l, p)
                Rs = np.ascontiguousarray(terms.R[p].transpose(2, 1, 0))  # (a, l, p), channel s
                dRs = np.ascontiguousarray(terms.dR[p].transpose(2, 1, 0))
                At = A[p].transpose(2, 1, 0) * w  # (K, l, p)
                Bt = B[p].transpose(1, 3, 2, 0) * w  # (3, K, l, p)
                u = terms.u[p].T[:, None, None, :]  # (3, 1, 1, p)
                g = np.empty((3, E, nb_p))
                for plan in self._plans[s]:
                    kind, e0, e1, nk2 = plan[:4]
                    blk = g[:, e0:e1].reshape(3, nk2, L1, nb_p)
                    if kind == "zero":
                        blk[...] = 0.0
                        continue
                    if kind == "other":  # only R̃_k' B_k + û dR̃_k' A_k, k' in channel s
                        k1, i0, i1, a2 = plan[4:]
                        blk[:, :i0] = 0.0
                        blk[:, i1:] = 0.0
                        part = blk[:, i0:i1]
                        np.multiply(Rs[a2], Bt[:, k1, None] * sqrt2, out=part)
                        part += u * (dRs[a2] * (At[k1] * sqrt2))
                        continue
                    k1, a1, i0, lower, a2, k2s = plan[4:]
                    # every term has one factor of channel k1: scaling those by √2 gives the
                    # off-diagonal factor; the diagonal element (k' = k1, last) is scaled back
                    f = sqrt2 if nk2 > 1 else 1.0
                    r1, dr1 = Rs[a1] * f, dRs[a1] * f
                    if lower is not None:  # k' in a lower channel: R̃_k B_k' + û dR̃_k A_k'
                        part = blk[:, :i0]
                        np.multiply(Bt[:, lower], r1, out=part)
                        part += u * (dr1 * At[lower])
                    part = blk[:, i0:]
                    np.multiply(Bt[:, k2s], r1, out=part)  # R̃_k B_k'
                    part += Rs[a2] * (Bt[:, k1, None] * f)  # R̃_k' B_k
                    t = dr1 * At[k2s]  # û (dR̃_k A_k' + dR̃_k' A_k)
                    t += dRs[a2] * (At[k1] * f)
                    part += u * t
                    if nk2 > 1:
                        blk[:, -1] *= 1.0 / sqrt2
                store_rows(g, qhat, cp, grad_x, rows[p], centre_sum, sum_index[p])


def spectrum_norms(q: np.ndarray, normalise: bool) -> np.ndarray:
    """|q| of each row; with ``normalise`` a zero norm becomes the smallest positive double (QUIP's
    ``tiny``), so that an empty environment divides to a zero vector, not NaN."""
    norm = np.sqrt(np.einsum("ij,ij->i", q, q))
    return np.where(norm == 0.0, np.finfo(float).tiny, norm) if normalise else norm


def store_rows(g, qhat, cp, grad_x, rows, centre_sum, sum_index):
    """Normalise a block of gradient rows g (3, E, p) and write them: rows of ``grad_x``, and their sums per
    centre into ``centre_sum`` (``sum_index``).

    With ``qhat`` = q/|q| (the 1/|q| already folded into g): g ← g − q̂ (q̂·g), the derivative of q/|q|
    (QUIP ``descriptors.F90:8797-8810``); ``cp`` is each row's centre (its q̂).
    """
    E = g.shape[1]
    if qhat is not None:  # remove the component along q: d(q/|q|)
        if qhat.shape[0] > 1:
            qh = np.ascontiguousarray(qhat[cp].T)  # (E, p)
            c = np.einsum("xep,ep->xp", g, qh)
        else:
            qh = qhat[0][:, None]
            c = np.einsum("xep,e->xp", g, qhat[0])
        g -= c[:, None, :] * qh
    for e0 in range(0, E, _STORE_WIDTH):  # transpose into the rows in cache-sized pieces
        e1 = min(E, e0 + _STORE_WIDTH)
        grad_x[rows, :, e0:e1] = g[:, e0:e1].transpose(2, 0, 1)
    _segment_add(centre_sum, sum_index, g)


def _segment_add(out, index, values):
    """out[index[p]] += values[:, :, p]; out is (c, 3, E), values (3, E, p) (a 0/1 matrix product)."""
    if index.size == 0:
        return
    groups, inverse = np.unique(index, return_inverse=True)
    member = np.zeros((index.size, groups.size))
    member[np.arange(index.size), inverse] = 1.0
    sums = values.reshape(-1, index.size) @ member  # (3 E, groups)
    out[groups] += sums.T.reshape(groups.size, *values.shape[:2])
