"""Whole jobs: training, the compression sweep, scoring a model on a dataset folder."""
