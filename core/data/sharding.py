"""One epoch's sample order, split across data-parallel processes.

Every process draws the same full order (same sampler, same seed) and keeps every ``world``-th index from its
``rank``: with a per-process batch of ``B / world``, the processes' k-th batches together are exactly the k-th
global batch of ``B`` that a single process would draw. This keeps any sampler — the class-balanced one included,
which torch's ``DistributedSampler`` cannot wrap — and makes a run on N processes follow the single-process run.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import Sampler


class RankShard(Sampler[int]):
    """The ``rank``-th of ``world`` interleaved shards of ``base``'s order (padded by wrapping to divide evenly)."""

    def __init__(self, base: Sampler[int], *, rank: int, world: int):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        self.base, self.rank, self.world = base, rank, world

    def __len__(self) -> int:
        return -(-len(self.base) // self.world)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        order += order[: len(self) * self.world - len(order)]
        return iter(order[self.rank::self.world])
