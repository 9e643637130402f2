"""The kinds of sweep cells: one :class:`Kind` record per way of making a model smaller, in :data:`KINDS`; the
sweep's grid, names and build, the store's families and the site's plain names ask them.

Adding a kind with an existing route and amount is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import check_allowed

ROUTES = {  # how a sweep group's model is built (core.jobs.sweep.build)
    "prune": "the trained parent pruned, then fine-tuned to recover",
    "retrain": "the ImageNet-pretrained network (pruned to the budget, or at its input size) trained with the "
               "parent's whole recipe",
}
AMOUNTS = {  # what a group's amount means
    "ratio": "share of each layer's channels removed",
    "macs": "share of the dense parent's MACs kept",
    "sparsity": "share of weights set to zero (stored dense)",
    "pixels": "input size",
}
DENSE_FAMILY = "dense"  # the family of the parent's own cells (ratio 0)


@dataclass(frozen=True, kw_only=True)
class Kind:
    """One family of cells."""

    name: str
    family: str  # as tables and charts name it
    variant_prefix: str  # variant names: "<prefix>-<amount>...-<mode>"
    cell_prefix: str  # run ids: "<parent>.<prefix><amount>....<mode>"
    route: str  # a key of ROUTES
    amount: str  # a key of AMOUNTS

    def __post_init__(self) -> None:
        check_allowed(self.route, ROUTES, what=f"route (kind {self.name})")
        check_allowed(self.amount, AMOUNTS, what=f"amount (kind {self.name})")

    @property
    def pruning_ratio_is_amount(self) -> bool:
        """The store's pruning_ratio column is the amount itself (otherwise the share of MACs removed, or 0)."""
        return self.amount in ("ratio", "sparsity")


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(name="structured", family="pruned (per-layer ratio)", variant_prefix="pruned", cell_prefix="p",
         route="prune", amount="ratio"),
    Kind(name="budget", family="pruned after training", variant_prefix="macs", cell_prefix="m", route="prune",
         amount="macs"),
    Kind(name="retrained", family="pruned, then trained", variant_prefix="ptt", cell_prefix="t", route="retrain",
         amount="macs"),
    Kind(name="resolution", family="lower resolution", variant_prefix="res", cell_prefix="r", route="retrain",
         amount="pixels"),
    Kind(name="unstructured", family="unstructured sparsity", variant_prefix="unstructured", cell_prefix="u",
         route="prune", amount="sparsity"),
)}


def kind_of(name: str) -> Kind:
    check_allowed(name, KINDS, what="cell kind")
    return KINDS[name]
