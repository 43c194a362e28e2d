"""The training data: extended XYZ reading, targets and σ, e0, and frames to ranks."""
