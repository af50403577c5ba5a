"""Experiments: the paper's table (reproduce) and sweeps."""
