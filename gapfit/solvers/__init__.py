"""Linear solvers: serial LAPACK QR and distributed ScaLAPACK QR."""
