"""Data: reading HAM10000 / ISIC layouts, lesion-grouped splits, the decoded-image cache, transforms."""
