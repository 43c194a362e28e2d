"""The least-squares problem: rows of A from a producer into a sink, the dense or streaming solve,
checkpoints, and the log marginal likelihood."""
