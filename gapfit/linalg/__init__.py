"""Dense linear algebra: LAPACK's Cholesky and QR, the triangular factor that rows are folded into,
and ScaLAPACK's distributed QR."""
