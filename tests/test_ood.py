"""The "is this a lesion photo at all?" gate: refuses shipped non-skin photographs and blank images, lets
lesion photos through at the chosen rate, survives its file, and is what the site and the API apply."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import ModelError
from core.jobs.gate_fit import bundled_photographs, generated_non_lesion_images
from core.serve.ood import GATE_BACKBONE_FILE, GATE_FILE, OodGate
from core.store.results import ResultsStore


def test_gate_refuses_non_skin_pictures_and_keeps_lesions(gated_variant: tuple[Path, dict[str, float]]) -> None:
    folder, figures = gated_variant
    gate = OodGate.load(folder)
    assert gate is not None and (folder / GATE_FILE).is_file()
    photos = bundled_photographs()  # scikit-image's pictures: people, a cat, coffee, text, scans, micrographs
    assert len(photos) >= 20
    refused = [name for name, im in photos.items() if not gate.check(im).accepted]
    assert len(refused) / len(photos) >= 0.9, f"let through: {sorted(set(photos) - set(refused))}"
    generated = generated_non_lesion_images()
    decisions = {name: gate.check(im) for name, im in generated.items()}
    assert not any(d.accepted for d in decisions.values())
    assert {decisions[n].reason for n in ("black", "white", "grey", "skin-tone")} == {"uniform"}
    # a flat skin tone with noise on it (issue 21 item 11): refused whatever the noise's strength
    rng = np.random.default_rng(0)
    for sigma in (12, 25, 60):  # weaker noise is refused as "uniform"
        noisy = np.clip(np.full((450, 600, 3), (200, 150, 130)) + rng.normal(0, sigma, (450, 600, 3)), 0, 255)
        assert gate.check(Image.fromarray(noisy.astype(np.uint8))).reason == "noise", sigma
    assert figures["rejection_photographs"] == pytest.approx(len(refused) / len(photos))
    # lesion photos: the synthetic splits are tiny (about 25 images), so a few refusals are a large share; the
    # real-data figures are in results/README.md
    assert figures["false_rejection_test"] <= 0.2
    assert figures["false_rejection_val"] <= 0.05


def test_gate_run_is_stored_with_its_figures(gated_variant: tuple[Path, dict[str, float]]) -> None:
    folder, figures = gated_variant
    with ResultsStore(folder.parent / "results.duckdb", read_only=True) as store:
        run = store.query("SELECT run_id, kind, parent_run_id FROM runs WHERE kind = 'ood_gate'")
        stored = store.query("SELECT name, value FROM metrics WHERE split = 'gate' AND run_id = ?",
                             [run["run_id"].iloc[0]])
    assert len(run) == 1 and run["parent_run_id"].iloc[0]
    assert dict(zip(stored["name"], stored["value"], strict=True)) == pytest.approx(figures)


def test_a_damaged_gate_file_is_a_clear_error(tmp_path: Path) -> None:
    assert OodGate.load(tmp_path) is None  # no gate: None, the caller decides
    (tmp_path / GATE_FILE).write_bytes(b"not a gate")
    with pytest.raises(ModelError, match="not a readable out-of-distribution gate"):
        OodGate.load(tmp_path)


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_site_and_api_refuse_a_cat_with_a_distinct_answer_and_store_nothing(
        gated_variant: tuple[Path, dict[str, float]], tmp_path: Path) -> None:
    from core.serve.ood import NOT_A_LESION
    from tests.webapp.conftest import RELAXED_LIMITS, AuthActions
    from webapp import create_app
    from webapp import tokens as tokens_mod
    from webapp.db import get_db

    folder, _ = gated_variant
    app = create_app({"TESTING": True, "SECRET_KEY": "d" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_VARIANT": str(folder), "WTF_CSRF_ENABLED": False, "MAIL_SUPPRESS_SEND": True,
                      **RELAXED_LIMITS})
    client = app.test_client()
    auth = AuthActions(app, client)
    auth.register()
    auth.login()
    cat = _jpeg(bundled_photographs()["chelsea"])
    page = client.post("/check/", data={"image": (io.BytesIO(cat), "cat.jpg"), "body_site": "back",
                                         "note": "itchy since May"}, content_type="multipart/form-data")
    assert page.status_code == 422 and NOT_A_LESION.encode() in page.data
    # issue 20: the refusal says what to do next, and what the patient typed is still there
    assert b"Retake it closer" in page.data and b"see a clinician anyway" in page.data
    assert b"itchy since May" in page.data and b'<option selected value="back">' in page.data
    assert b'id="no-photo-check"' not in page.data  # this variant has a photo check
    with app.app_context():
        user_id = get_db().execute("SELECT id FROM users").fetchone()["id"]
        token = tokens_mod.create(user_id)
    api = client.post("/api/v1/predict", headers={"Authorization": f"Bearer {token}"},
                      data={"image": (io.BytesIO(cat), "cat.jpg")}, content_type="multipart/form-data")
    assert api.status_code == 422
    body = api.get_json()
    assert body["code"] == "not_a_lesion" and body["error"] == NOT_A_LESION and "prediction" not in body
    blank = _jpeg(Image.fromarray(np.full((300, 400, 3), 255, np.uint8)))
    api = client.post("/api/v1/predict", headers={"Authorization": f"Bearer {token}"},
                      data={"image": (io.BytesIO(blank), "blank.jpg")}, content_type="multipart/form-data")
    assert api.status_code == 422 and "reason" not in api.get_json()  # which test failed is not told (item 11)
    with app.app_context():
        assert get_db().execute("SELECT count(*) FROM checks").fetchone()[0] == 0
    assert not list((Path(app.instance_path) / "uploads").glob("*.jpg"))


def test_the_noise_check_keeps_real_lesion_photos(real_subset_dir: Path, samples_dir: Path) -> None:
    """The fixed noise bound against real HAM10000 images: none of 1,000 subset images nor the 70 samples."""
    from core.serve.ood import MAX_FINE_DETAIL, fine_detail_share

    paths = sorted((real_subset_dir / "images").glob("*.jpg"))[::8][:1000] + sorted(samples_dir.rglob("*.jpg"))
    shares = [fine_detail_share(Image.open(p)) for p in paths]
    assert len(shares) > 1000 - 1 and max(shares) < MAX_FINE_DETAIL * 0.6


def test_the_fitter_refuses_a_gate_that_turns_lesions_away(gated_variant: tuple[Path, dict[str, float]],
                                                           trained_tiny, tmp_path: Path) -> None:
    """Issue 20: a gate that refuses its own lesion photos (e.g. fitted on synthetic images, then shown real ones)
    is not written, unless forced; the error names the figure and the limit. Here the "lesion photos" it is measured
    on are flat grey pictures, which any gate turns away."""
    import shutil

    from core.jobs.gate_fit import GateConfig, GateRefused, run_gate_fit
    from core.serve.ood import GATE_FILE

    source, _ = gated_variant
    folder = tmp_path / "variant"
    shutil.copytree(source, folder)
    (folder / GATE_FILE).unlink()
    samples = tmp_path / "samples"
    samples.mkdir()
    for i in range(4):
        Image.new("RGB", (600, 450), (120 + i, 100, 90)).save(samples / f"flat{i}.jpg")
    cfg = dict(model=str(folder), models_dir=str(trained_tiny.run_dir.parent), img_size=64,
               db=str(tmp_path / "r.duckdb"), max_false_rejection=0.5, samples_dir=str(samples))
    with pytest.raises(GateRefused, match=r"turns away samples 100.0% of lesion photos, above the limit of 50%"):
        run_gate_fit(GateConfig(**cfg))
    assert not (folder / GATE_FILE).exists() and not list(folder.glob(".ood-gate-*"))  # nothing left behind
    run_gate_fit(GateConfig(**cfg, force=True))
    assert (folder / GATE_FILE).is_file()


def test_a_model_without_photo_check_says_so_on_every_page(sweep_store: Path, tmp_path: Path) -> None:
    """Issue 20: where the deployed variant has no gate, a visible banner says any picture gets an answer."""
    from tests.webapp.conftest import RELAXED_LIMITS
    from webapp import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "d" * 40, "INSTANCE_PATH": str(tmp_path / "i"),
                      "LESIONLITE_VARIANT": str(next((sweep_store.parent / "variants").glob("*/pruned-0.5-static"))),
                      "MAIL_SUPPRESS_SEND": True, **RELAXED_LIMITS})
    page = app.test_client().get("/auth/login").data
    assert b'id="no-photo-check"' in page and b"any picture will get an answer" in page


def test_an_int8_backbone_gate_is_fitted_and_measured_on_its_own_file(
        gated_variant: tuple[Path, dict[str, float]], sweep_store: Path, trained_tiny, tmp_path: Path) -> None:
    import onnx

    from core.jobs.gate_fit import GateConfig, run_gate_fit

    fp32_folder, fp32_figures = gated_variant
    folder = tmp_path / "pruned-0.5-static"
    shutil.copytree(next((sweep_store.parent / "variants").glob("*/pruned-0.5-static")), folder)
    db = tmp_path / "results.duckdb"
    shutil.copy(sweep_store, db)
    figures = run_gate_fit(GateConfig(model=str(folder), models_dir=str(trained_tiny.run_dir.parent), img_size=96,
                                      db=str(db), max_false_rejection=0.5, backbone_int8=True))
    ops = {n.op_type for n in onnx.load(folder / GATE_BACKBONE_FILE).graph.node}
    assert "QuantizeLinear" in ops  # the file that serves is the int8 one
    assert (folder / GATE_BACKBONE_FILE).stat().st_size < 0.5 * (fp32_folder / GATE_BACKBONE_FILE).stat().st_size
    assert figures["threshold"] != fp32_figures["threshold"]  # fitted on the int8 embeddings, not reused
    gate = OodGate.load(folder)
    assert not gate.check(Image.new("RGB", (300, 300), (128, 128, 128))).accepted
    assert figures["rejection_generated"] == 1.0
