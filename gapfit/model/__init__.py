"""Fitted models and their use: the GAP XML, the core potential, the ASE calculator, error tables,
refits and scans, committees, and gapfit-eval."""
