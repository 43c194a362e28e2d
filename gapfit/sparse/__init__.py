"""Sparse-point selection: the candidates, the duplicate filter, and gap_fit's sparse methods."""
