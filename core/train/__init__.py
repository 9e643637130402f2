"""The training engine below the jobs: the recipe (config), loaders, the loop (fit) and evaluation (logits)."""
