"""The release in the repository: built from a gated variant, checked against its manifest, installed on a fresh
checkout (gate backbone rebuilt from the package weights, store rows loaded), served by the production site."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.artifacts.release import ReleaseError, read_manifest
from core.jobs import release
from core.jobs.release import build_release, check_release, install_release
from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE, OodGate, symmetric_from_upper
from core.store.results import ResultsStore

REPO = Path(__file__).resolve().parents[1]


def _build(gated_variant: tuple[Path, dict[str, float]], out: Path):
    folder, _ = gated_variant
    return build_release(folder, db=folder.parent / "results.duckdb", out=out, description="a tiny test model",
                         commands=["python -m scripts.release build ..."])


def test_a_release_is_built_checked_and_installed_like_on_a_fresh_checkout(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    info = _build(gated_variant, tmp_path / "release")
    shipped = set(info.manifest["files"])
    assert {"model.onnx", "card.json", GATE_FILE, "gate_probe.npy", "store/runs.parquet"} <= shipped
    assert GATE_BACKBONE_FILE not in shipped  # rebuilt from the package weights, not carried
    assert check_release(info.folder) == []

    install_release(info.folder)
    assert check_release(info.folder) == []  # what install adds is not a difference
    original, installed = OodGate.load(gated_variant[0]), OodGate.load(info.folder)
    images = np.random.default_rng(0).normal(size=(3, 3, *[original.prep.input_size] * 2)).astype(np.float32)
    np.testing.assert_allclose(installed.distances(installed.embedder(images)),
                               original.distances(original.embedder(images)), rtol=1e-4)
    with ResultsStore(info.folder / "results.duckdb", read_only=True) as store:
        runs = store.runs()
    card_run = read_manifest(info.folder)["run_id"]
    assert card_run in set(runs["run_id"]) and set(runs["kind"]) >= {"train", "variant", "ood_gate"}


def test_a_changed_or_extra_file_fails_the_check_and_the_install(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    info = _build(gated_variant, tmp_path / "release")
    with open(info.folder / "card.json", "a") as f:
        f.write(" ")
    (info.folder / "notes.txt").write_text("hello")
    problems = check_release(info.folder)
    assert any(p.startswith("card.json: changed") for p in problems)
    assert any(p.startswith("notes.txt: not in the manifest") for p in problems)
    with pytest.raises(ReleaseError, match="does not match its manifest"):
        install_release(info.folder)


def test_a_release_over_the_size_limit_is_refused_and_the_old_one_kept(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "release"
    first = _build(gated_variant, out)
    monkeypatch.setattr(release, "MAX_RELEASE_BYTES", 1000)
    with pytest.raises(ReleaseError, match=r"over the 0 MB .*model\.onnx"):
        _build(gated_variant, out)
    assert read_manifest(out) == first.manifest
    assert not list(tmp_path.glob(".release-*"))


def test_a_variant_without_photo_check_or_with_another_backbone_is_refused(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    folder = tmp_path / "variant"
    shutil.copytree(gated_variant[0], folder)
    (folder / GATE_FILE).unlink()
    with pytest.raises(ReleaseError, match="no photo check"):
        build_release(folder, db=gated_variant[0].parent / "results.duckdb", out=tmp_path / "r", description="x")

    other = tmp_path / "other"
    shutil.copytree(gated_variant[0], other)
    import onnx

    model = onnx.load(str(other / GATE_BACKBONE_FILE))  # another backbone: its weights perturbed
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(other / GATE_BACKBONE_FILE))
    with pytest.raises(ReleaseError, match="not the package's"):
        build_release(other, db=gated_variant[0].parent / "results.duckdb", out=tmp_path / "r", description="x")


def test_gate_statistics_keep_the_upper_triangle_and_old_files_are_upgraded(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    from core.jobs.upgrade import upgrade_gates

    matrix = np.random.default_rng(1).normal(size=(5, 5))
    symmetric = matrix + matrix.T
    np.testing.assert_array_equal(symmetric_from_upper(symmetric[np.triu_indices(5)]), symmetric)
    with pytest.raises(ValueError, match="not the upper triangle"):
        symmetric_from_upper(np.zeros(7))

    folder = tmp_path / "old"
    shutil.copytree(gated_variant[0], folder)
    gate = OodGate.load(folder)
    with np.load(folder / GATE_FILE) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["precision"] = symmetric_from_upper(arrays.pop("precision_upper")).astype(np.float32)
    np.savez(folder / GATE_FILE, **arrays)  # the format before this release
    assert upgrade_gates(tmp_path) == [folder / GATE_FILE]
    np.testing.assert_allclose(OodGate.load(folder).precision, gate.precision)
    assert upgrade_gates(tmp_path) == []


def test_verify_compares_a_rebuilt_variant_with_the_release_image_by_image(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    import duckdb

    from core.jobs.release import verify_rebuild

    info = _build(gated_variant, tmp_path / "release")
    install_release(info.folder)
    run = info.manifest["run_id"]
    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copy(info.folder / "results.duckdb", rebuilt)
    same = verify_rebuild(info.folder, db=rebuilt, run_id=run)
    assert same.matches and set(same.agreement) == {"val", "test"} and same.max_prob_difference == 0

    with duckdb.connect(str(rebuilt)) as con:  # a rebuild that ranks the classes the other way round
        con.execute("UPDATE predictions SET probs = list_reverse(probs) WHERE run_id = ?", [run])
    changed = verify_rebuild(info.folder, db=rebuilt, run_id=run)
    assert not changed.matches and min(changed.agreement.values()) < 0.99
    with duckdb.connect(str(rebuilt)) as con:
        con.execute("UPDATE predictions SET label = (label + 1) % 7 WHERE run_id = ?", [run])
    with pytest.raises(ReleaseError, match="not the same data"):
        verify_rebuild(info.folder, db=rebuilt, run_id=run)
