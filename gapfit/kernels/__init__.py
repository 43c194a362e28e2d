"""Covariance: the kernel functions (ARD_SE, pp, dot product, permutation-symmetric ones) and the
kernel rows K_NM and matrix K_MM that a fit is made of."""
