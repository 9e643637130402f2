"""The cell kinds: one record per way of making a model smaller; names, families and the upgrade ask them."""

from __future__ import annotations

import pytest

from core.compress.kinds import DENSE_FAMILY, KINDS, kind_of
from core.errors import ConfigError
from core.jobs.sweep.config import Group
from core.jobs.upgrade import family_from_name


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_kinds_cells_are_named_by_its_record_and_read_back_to_its_family(kind: str) -> None:
    group = Group("efficientnet_lite0", kind, 0.5 if kind != "resolution" else 128, ("fp32",))
    spec = KINDS[kind]
    variant = group.variant("static")
    assert variant.startswith(f"{spec.variant_prefix}-") and variant.endswith("-static")
    assert group.cell_id("parent", "static").startswith(f"parent.{spec.cell_prefix}")
    assert group.family == spec.family == family_from_name(variant)


def test_the_dense_cells_and_the_names_the_store_already_holds() -> None:
    dense = Group("efficientnet_lite0", "structured", 0.0, ("fp32",))
    assert dense.variant("fp32") == "dense-fp32" and dense.family == DENSE_FAMILY == family_from_name("dense-fp32")
    assert dense.cell_id("P", "fp32") == "P.p0.fp32"
    # names stored by earlier sweeps, unchanged
    assert Group("m", "budget", 0.3, (), distilled=True, importance="taylor").variant("static") == \
        "macs-0.3-kd-taylor-static"
    assert Group("m", "retrained", 0.3, (), arch="efficientnet_lite1").cell_id("P", "fp32") == \
        "P.tefficientnet_lite10.3.fp32"
    assert Group("m", "structured", 0.5, (), steps=3).variant("fp32") == "pruned-0.5-it3-fp32"
    assert len({k.family for k in KINDS.values()} | {DENSE_FAMILY}) == len(KINDS) + 1


def test_an_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown cell kind 'magic'; allowed: structured, budget, retrained"):
        kind_of("magic")
    with pytest.raises(ConfigError, match="unknown cell kind"):
        Group("m", "magic", 0.5, ()).variant("fp32")
