"""The log marginal likelihood (evidence) of a sparse GAP fit, from the factors the solve already has.

The fit's model for the targets y (N rows, e0 and any core subtracted) is the sparse GP of
Quiñonero-Candela and Rasmussen's DTC/projected-process approximation, which GAP uses:

    y ~ N(0, C),   C = Σ + K_NM K_MM⁻¹ K_MN,

with Σ the diagonal of σ² and K_MM including ``sparse_jitter``.  With A = [Σ^-1/2 K_NM ; U],
K_MM = UᵀU and A = QR, the determinant lemma gives |C| = |Σ| |R|² / |U|², and
yᵀC⁻¹y = min‖Aα − b‖² (the QR residual), so

    log p(y) = −½ ρ² − Σ log|R_ii| + Σ log U_ii − Σ log σ_n − (N/2) log 2π.

No extra pass over the data, and no N×N matrix.
"""

from __future__ import annotations

import math


def log_marginal_likelihood(residual_sq: float, log_abs_r_diag: float, log_u_diag: float,
                            n_data_rows: float, log_sigma_sum: float) -> float:
    """log p(y) from ρ² = ‖Aα − b‖², Σ log|R_ii|, Σ log U_ii, N and Σ log σ_n (see the module docstring)."""
    return (-0.5 * residual_sq - log_abs_r_diag + log_u_diag - log_sigma_sum
            - 0.5 * n_data_rows * math.log(2.0 * math.pi))
