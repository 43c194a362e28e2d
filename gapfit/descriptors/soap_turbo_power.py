"""The soap_turbo power spectrum (see :mod:`gapfit.descriptors.soap_turbo`): element order, compression,
normalisation, values and gradient rows (docs/dev/soap_turbo.md §4 and §5.2; ``ST:n`` is soap_turbo@03f9d82
``src/soap_turbo.f90`` line n, ``CMP:n`` ``src/soap_turbo_compress.f90``).

With N = Σ alpha_max radial functions (species blocks in ``species_Z`` order) and the expansion
coefficients C_l[m, n] in real spherical harmonics (so Σ_m runs over the 2l+1 real m, which equals
QUIP's Σ_{m≥0} w_m Re(c c*) with w_0 = 1, w_{m>0} = 2), the uncompressed vector is

    p[(n, n', l)] = f_nn'·Σ_m C_l[m, n]·C_l[m, n'],   f_nn' = 1 if n = n' else √2,

ordered n = 1..N, n' = n..N, l = 0..l_max (l fastest; ST:404-506), d = (l_max+1)·N(N+1)/2.  A
compression map q_i = Σ_k P_el(k)·p[P_j(k)] over P_i(k) = i (ST:494-500) gives dimension max(P_i);
``trivial`` keeps, in order, the elements with n or n' the first function of a species block
(CMP:73-106).  The vector is divided by ‖q‖, or by 1 when ‖q‖ < 1e-5 (ST:501-505), and so is its
derivative: ∂q̂ = ∂q/‖q‖ - q·(q·∂q)/‖q‖³ with the same replacement (ST:584-592).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: QUIP's floor of the norm: a smaller vector is left unnormalised (ST:503)
NORM_FLOOR = 1e-5
#: doubles of one gradient work block (pairs × 3 × elements), sized to stay in cache
_BLOCK_DOUBLES = 1 << 17


def trivial_compression(alpha_max: Sequence[int], l_max: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P_i, P_j, P_el), 1-based, of compress_mode=trivial (CMP:73-106): every element (n, n', l) with n
    or n' a pivot (the first radial index of a species block), weight 1, in the uncompressed order."""
    n_max = int(sum(alpha_max))
    pivots = np.concatenate([[0], np.cumsum(alpha_max)[:-1]])
    is_pivot = np.zeros(n_max, dtype=bool)
    is_pivot[pivots] = True
    n, n2 = np.triu_indices(n_max)
    keep = np.repeat(is_pivot[n] | is_pivot[n2], l_max + 1)
    p_j = np.flatnonzero(keep) + 1
    return np.arange(1, p_j.size + 1), p_j, np.ones(p_j.size)


class TurboSpectrum:
    """Element layout, compression and normalisation of the soap_turbo vector.

    ``compression``: None or (P_i, P_j, P_el), 1-based as QUIP's arrays.  A pure selection (every P_el
    is 1 and every output is one element, as ``trivial``) is a gather; any other map is a dense
    matrix applied to the elements it uses.
    """

    def __init__(self, alpha_max: Sequence[int], l_max: int,
                 compression: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None):
        self.alpha_max = [int(a) for a in alpha_max]
        self.l_max = l_max
        n_max = sum(self.alpha_max)
        self.n_max = n_max
        L1 = l_max + 1
        n, n2 = np.triu_indices(n_max)
        n_e, n2_e = np.repeat(n, L1), np.repeat(n2, L1)
        l_e = np.tile(np.arange(L1), n.size)
        self.n_uncompressed = n_e.size
        self.mix = None
        if compression is None:
            used = np.arange(n_e.size)
            self.dimensions = n_e.size
        else:
            p_i, p_j, p_el = (np.asarray(a) for a in compression)
            self.dimensions = int(p_i.max())
            order = np.argsort(p_i, kind="stable")
            if np.all(p_el == 1.0) and np.array_equal(p_i[order], np.arange(1, self.dimensions + 1)):
                used = p_j[order] - 1
            else:
                used, col = np.unique(p_j - 1, return_inverse=True)
                self.mix = np.zeros((self.dimensions, used.size))
                np.add.at(self.mix, (p_i - 1, col), p_el)
        self.n_e, self.n2_e, self.l_e = n_e[used], n2_e[used], l_e[used]
        self.f_e = np.where(self.n_e != self.n2_e, math.sqrt(2.0), 1.0)
        #: flat index of (l, n, n') in a (L1, N, N) array, of each used element
        self.gram_index = (self.l_e * n_max + self.n_e) * n_max + self.n2_e
        self.blocks = self._species_blocks()

    def _species_blocks(self) -> List[dict]:
        """Per neighbour species: the used elements its derivatives touch (n or n' in its block),
        their flat (l, n) indices, f, and where they go in the output (columns, or the mixing map)."""
        starts = np.concatenate([[0], np.cumsum(self.alpha_max)])
        N = self.n_max
        out = []
        for s in range(len(self.alpha_max)):
            lo, hi = starts[s], starts[s + 1]
            touched = ((self.n_e >= lo) & (self.n_e < hi)) | ((self.n2_e >= lo) & (self.n2_e < hi))
            rel = np.flatnonzero(touched)
            block = {"idx1": self.l_e[rel] * N + self.n_e[rel], "idx2": self.l_e[rel] * N + self.n2_e[rel],
                     "f": self.f_e[rel], "all": rel.size == self.n_e.size}
            if self.mix is None:
                block["cols"] = rel
            else:
                block["mix_t"] = np.ascontiguousarray(self.mix[:, rel].T)
            out.append(block)
        return out

    def values(self, C: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """The compressed, unnormalised vectors q (n_c, d) of coefficients C[l] (n_c, 2l+1, N), and the
        divisor of each (‖q‖, or 1 below 1e-5)."""
        n_c = C[0].shape[0]
        N = self.n_max
        gram = np.empty((n_c, self.l_max + 1, N, N))
        for ell, Cl in enumerate(C):
            np.matmul(Cl.transpose(0, 2, 1), Cl, out=gram[:, ell])
        p = gram.reshape(n_c, -1)[:, self.gram_index] * self.f_e[None, :]
        q = p if self.mix is None else p @ self.mix.T
        norm = np.sqrt(np.einsum("cd,cd->c", q, q))
        return q, np.where(norm < NORM_FLOOR, 1.0, norm)

    def gradients(self, terms, qhat, group_starts, out, centre_out):
        """Gradient rows of a group of pairs (sorted by centre), normalised (spec §5.2).

        ``terms``: per pair ``alpha`` = g_l·R_n and ``beta`` = g'_l·R_n + g_l·R'_n (p, L1, N), both already
        divided by the divisor of the pair's centre; ``proj`` A = Σ_m Y_lm C_l[m, n] (p, L1, N) and
        ``dproj`` B = Σ_m ∂Y_lm C_l[m, n] (p, 3, L1, N); ``u`` the bond directions (p, 3); ``species``.
        For a pair and direction x (f = f_nn', n or n' in the pair's species block):

            ∂_x q[(n, n', l)] = f·(α_ln B_xln' + α_ln' B_xln + u_x·(β_ln A_ln' + β_ln' A_ln)),

        then ∂q̂ = ∂q - q̂·(q̂·∂q).  ``qhat`` (p, d) is the normalised vector of each pair's centre.
        Writes the rows to ``out`` (p, 3, d) and minus their sum per centre (pairs
        ``group_starts[k]:group_starts[k+1]``) to ``centre_out`` (n_groups, 3, d).
        """
        n_p = out.shape[0]
        d = self.dimensions
        species = terms["species"]
        for s, block in enumerate(self.blocks):
            rows = np.flatnonzero(species == s) if len(self.blocks) > 1 else None
            if rows is not None and rows.size == 0:
                continue
            m = max(1, block["idx1"].size)
            step = max(1, _BLOCK_DOUBLES // (3 * max(m, d)))
            count = n_p if rows is None else rows.size
            for a in range(0, count, step):
                sel = slice(a, min(a + step, count)) if rows is None else rows[a:a + step]
                out[sel] = self._rows(block, terms, sel, qhat[sel])
        ends = np.append(group_starts[1:], n_p)
        nonempty = ends > group_starts
        centre_out[:] = 0.0
        if np.any(nonempty):
            centre_out[nonempty] = -np.add.reduceat(out, group_starts[nonempty], axis=0)

    def _rows(self, block, terms, sel, qhat):
        """Normalised gradient rows (k, 3, d) of the pairs ``sel`` of one species block."""
        L1N = terms["alpha"].shape[1] * terms["alpha"].shape[2]
        alpha = terms["alpha"][sel].reshape(-1, L1N)
        beta = terms["beta"][sel].reshape(-1, L1N)
        A = terms["proj"][sel].reshape(-1, L1N)
        B = terms["dproj"][sel].reshape(-1, 3, L1N)
        u = terms["u"][sel]
        i1, i2, f = block["idx1"], block["idx2"], block["f"]
        a1, a2 = alpha[:, i1] * f, alpha[:, i2] * f
        w = beta[:, i1] * f * A[:, i2]
        w += beta[:, i2] * f * A[:, i1]
        raw = B[:, :, i2]
        raw *= a1[:, None, :]
        other = B[:, :, i1]
        other *= a2[:, None, :]
        raw += other
        raw += u[:, :, None] * w[:, None, :]
        if self.mix is not None:
            raw = raw @ block["mix_t"]
            cols = None
        else:
            cols = None if block["all"] else block["cols"]
        if cols is None:
            dot = np.einsum("kxd,kd->kx", raw, qhat)
            raw -= dot[:, :, None] * qhat[:, None, :]
            return raw
        dot = np.einsum("kxd,kd->kx", raw, qhat[:, cols])
        rows = -dot[:, :, None] * qhat[:, None, :]
        rows[:, :, cols] += raw
        return rows
