"""The release committed in the repository (results/release/), as a fresh clone has it: what `make webapp`
serves. Its build, check and install are tested on a tiny model in tests/test_release.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.artifacts.release import RELEASE_DIR, read_manifest
from core.jobs.release import MAX_RELEASE_BYTES, check_release, install_release
from tests.fresh_release import REPO, committed, fresh_copy


@committed
def test_the_committed_release_matches_its_manifest_and_fits_the_repository() -> None:
    assert check_release(REPO / RELEASE_DIR) == []
    assert read_manifest(REPO / RELEASE_DIR)["total_bytes"] <= MAX_RELEASE_BYTES


@pytest.mark.slow
@committed
def test_the_production_site_serves_the_committed_release_with_its_photo_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    """A fresh checkout: install, then the production site starts on it without any override, and its photo check
    turns a flat picture away."""
    from core.serve.deployed import DeployedModel
    from core.store.choosing import deployed_choice
    from core.store.frames import variant_card_paths
    from core.store.results import ResultsStore
    from tests.webapp.production import production_env
    from webapp import create_app

    copy = fresh_copy(tmp_path)
    install_release(copy)
    with ResultsStore(copy / "results.duckdb", read_only=True) as store:  # what the dashboard opens
        cards = variant_card_paths(store)
        assert deployed_choice(store).folder.resolve() == copy.resolve()
    assert str((copy / "card.json").resolve()) in set(cards["path"])
    env = production_env(tmp_path, copy, RATELIMIT_STORAGE_URI=redis_url)
    env.pop("LESIONLITE_ALLOW_NO_PHOTO_CHECK")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app = create_app()
    assert app.config["NO_PHOTO_CHECK"] is False and not app.config["DEPLOYED_FACTS"].is_demo
    assert app.config["DEPLOYED_REASON"].startswith("the release in this repository")
    assert not DeployedModel.load(copy).classify(Image.new("RGB", (600, 450), (40, 90, 200))).accepted


@pytest.mark.slow
@committed
def test_the_committed_release_classifies_real_samples(tmp_path: Path, samples_dir: Path) -> None:
    from core.serve.deployed import DeployedModel

    copy = fresh_copy(tmp_path)
    install_release(copy)
    model = DeployedModel.load(copy)
    results = [model.classify(Image.open(p)) for p in sorted(samples_dir.glob("*.jpg"))[:10]]
    assert sum(r.accepted for r in results) >= 9 and all(r.decision for r in results if r.accepted)
