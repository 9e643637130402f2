"""LesionLite core library: data, models, training, evaluation and the results store.

`scripts/`, `dashboard/` and `webapp/` import from here and never from each other.
"""

__version__ = "0.1.0"
