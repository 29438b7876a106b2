"""Reproduce the paper's Table 3 on your data: every model, same data, split, budget and seeds."""
