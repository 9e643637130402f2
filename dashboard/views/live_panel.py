"""Live test: upload a dermatoscopic image (or pick a sample) and run it through the selected variants."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from core.artifacts.card import read_variant_card
from core.classes import CLASSES, clinical_name
from core.data.synthetic import synthetic_example
from core.errors import ModelError
from core.fusion import LOCALIZATIONS, SEXES, PatientMetadata
from core.serve.facts import model_facts
from core.serve.gradcam import grad_cam_view
from core.serve.imaging import ImageRejected, check_image, reencode_jpeg
from core.serve.ood import NOT_A_LESION
from core.store.choosing import deployed_variant
from core.store.frames import variant_card_paths
from core.triage import DISCLAIMER, NEXT_STEPS_SHORT
from dashboard.charts import cam_figure, phone_friendly
from dashboard.state import deployed_model, reader, samples_dir
from dashboard.wording import agreement_sentence

st.title("Test an image")
st.warning(DISCLAIMER, icon=":material/medical_information:")

with reader() as store:
    cards = variant_card_paths(store)
    try:
        deployed = str(deployed_variant(store))
    except ModelError:
        deployed = None
cards = cards[[Path(p).is_file() for p in cards["path"]]]
if cards.empty:
    st.info("No deployable variants with their files on this machine. Run a sweep to create some.")
    st.stop()
# The parent run's id tail tells apart variants of two trainings of the same architecture.
# The variant first: in a narrow table column "efficientnet_lite0 / de…" told two variants of one model apart badly.
labels = {f"{r.variant} · {r.model} (run …{r.run_id.split('.')[0][-4:]})": str(Path(r.path).parent)
          for r in cards.itertuples()}
# Default: the variant the web app deploys, beside its dense PyTorch parent.
first = next((k for k, folder in labels.items() if folder == deployed), next(iter(labels)))
baseline = str(Path(labels[first]).parent / "dense-torch_fp32")
default = [first, *(k for k, folder in labels.items() if folder == baseline and k != first)]
chosen = st.multiselect("Variants", list(labels), default=default, key="live_variants")
cards_of = {label: read_variant_card(labels[label]) for label in chosen}
demo = [label for label, card in cards_of.items() if model_facts(card).is_demo]
if demo:
    st.warning("Trained on synthetic demo images, not real skin: " + ", ".join(demo) + ". Their answers on a real "
             "photo mean nothing.", icon=":material/science:")

source = st.radio("Image", ["Upload", "Sample image", "Synthetic example"], horizontal=True, key="live_source")
data: bytes | None = None
truth: str | None = None
if source == "Upload":
    upload = st.file_uploader("Dermatoscopic image (JPEG or PNG, up to 10 MB)", type=["jpg", "jpeg", "png"],
                              key="live_upload")
    data = upload.getvalue() if upload is not None else None
elif source == "Sample image":
    sample_csv = samples_dir() / "samples.csv"
    if sample_csv.is_file():
        samples = pd.read_csv(sample_csv)
        pick = st.selectbox("Sample (HAM10000, CC BY-NC 4.0)", samples["image_id"] + " (" + samples["dx"] + ")",
                            key="live_sample")
        image_id = pick.split(" ")[0]
        truth = str(samples.set_index("image_id").loc[image_id, "dx"])
        data = next(samples_dir().rglob(f"{image_id}.jpg")).read_bytes()
    else:
        st.info(f"No sample images at {samples_dir()} (set LESIONLITE_SAMPLES to a folder with samples.csv).")
else:
    dx = st.selectbox("Class to draw", list(CLASSES), format_func=clinical_name, key="live_synth_dx")
    data = reencode_jpeg(synthetic_example(dx, seed=int(st.number_input("Seed", 0, 10_000, 0, key="live_seed"))))
    truth = dx

if data is None or not chosen:
    st.stop()
try:
    checked = check_image(data)
except ImageRejected as exc:
    st.error(f"This file cannot be used: {exc}.")
    st.stop()

models = {label: deployed_model(labels[label]) for label in chosen}
metadata = None
if any(model.fuses_metadata for model in models.values()):
    with st.expander("About the person (optional): variants with metadata fusion use it, the others ignore it"):
        cols = st.columns(3)
        age = cols[0].number_input("Age", min_value=0, max_value=120, value=None, key="live_age")
        sex = cols[1].selectbox("Sex", ["", *SEXES], key="live_sex")
        site = cols[2].selectbox("Body site (HAM10000's)", ["", *LOCALIZATIONS], key="live_site")
        metadata = PatientMetadata.parse(age=age, sex=sex, localization=site)
answers = {label: model.classify(checked.image, name=label, metadata=metadata) for label, model in models.items()}
refusals = [label for label, answer in answers.items() if not answer.accepted]
if refusals:
    st.image(checked.image, width=300)
    st.error(f"{NOT_A_LESION} (judged by the gate of: {', '.join(refusals)}.)")
    st.stop()
if all(model.gate is None for model in models.values()):
    st.warning("No photo check: none of the chosen variants has an out-of-distribution gate, so any picture gets a "
               "lesion class (fit one with `python -m scripts.fit_ood_gate --model <variant folder>`).")

quality = next(iter(answers.values())).quality
if not quality.ok:  # what the site tells a patient with the result
    st.info("Photo check: " + " ".join(i.message for i in quality.issues), icon=":material/photo_camera:")

left, right = st.columns([1, 2])
left.image(checked.image, caption=f"{checked.width}x{checked.height} {checked.format}", width="stretch")
if truth is not None:
    left.markdown(f"Ground truth: **{clinical_name(truth)}** ({truth})")
results = [answer.prediction for answer in answers.values()]
overlays = {label: view for label, model in models.items()
            if (view := grad_cam_view(model.predictor, checked.image)) is not None}


def _stored_latency(label: str) -> str:
    deployment = cards_of[label].deployment
    if deployment is None or deployment.latency is None:
        return "not stored"  # a trained model's own card: timed in the sweep's cells, not here
    return f"{deployment.latency.b1_median:.2f} (IQR {deployment.latency.b1_iqr:.2f})"


def _screening(r) -> dict[str, object]:
    """The site's decision for this result: the card's operating point and the next step a patient would read."""
    d = answers[r.model].decision
    refer = ("yes" if d.refer else "no") if models[r.model].triage else "no operating point"
    return {"possibly malignant": d.malignant_probability, "refer (operating point)": refer,
            "advice": NEXT_STEPS_SHORT[d.urgency], "metadata used": ", ".join(answers[r.model].metadata_used) or "none"}


summary = pd.DataFrame([{"variant": r.model, "prediction": r.top_name,
                         **({"correct": r.top == truth} if truth else {}), "confidence": r.confidence,
                         **_screening(r), "this image, ms (one run)": r.latency_ms,
                         "sweep median ms": _stored_latency(r.model)} for r in results])
probs = pd.DataFrame([{"variant": r.model, "class": clinical_name(c), "probability": float(r.probs[i])}
                      for r in results for i, c in enumerate(CLASSES)])
probs_chart = px.bar(probs, x="probability", y="class", color="variant", barmode="group", orientation="h",
                     range_x=[0, 1], title="Per-class probabilities")
probs_chart.update_layout(yaxis_title=None)
phone_friendly(probs_chart, plot_height=320)  # long class names need the width: the legend goes below
right.plotly_chart(probs_chart, width="stretch", key="live_probs")
right.write(agreement_sentence(results))
# Full width, and narrow columns for the figures: at 1440 px the latency columns were cut off beside the image.
st.dataframe(summary, hide_index=True, width="stretch", key="live_summary",
             column_config={"variant": st.column_config.TextColumn(width="medium"),
                            "prediction": st.column_config.TextColumn(width="medium"),
                            "correct": st.column_config.CheckboxColumn(width="small"),
                            "confidence": st.column_config.ProgressColumn(min_value=0, max_value=1, format="%.2f",
                                                                          width="small"),
                            "possibly malignant": st.column_config.ProgressColumn(min_value=0, max_value=1,
                                                                                  format="%.2f", width="small"),
                            "refer (operating point)": st.column_config.TextColumn("refer", width="small"),
                            "advice": st.column_config.TextColumn(width="medium"),
                            "this image, ms (one run)": st.column_config.NumberColumn("ms, this run", format="%.1f",
                                                                                      width="small"),
                            "sweep median ms": st.column_config.TextColumn("ms, sweep median (IQR)",
                                                                           width="small")})
st.caption("'One run' is a single timing on this page (first calls include warm-up); the sweep's figure is "
           "the median of many runs at batch 1 with fixed threads.")
st.header("Grad-CAM: where the model looked")
if overlays:
    first_view = next(iter(overlays.values()))
    cols = st.columns(len(overlays) + 1)
    cols[0].plotly_chart(cam_figure(first_view.crop, None, title="What the model saw (centre crop)"),
                         width="stretch", key="live_cam_crop")
    for i, (col, (label, view)) in enumerate(zip(cols[1:], overlays.items(), strict=True)):
        col.plotly_chart(cam_figure(view.crop, view.cam, title=label, colorbar=i == len(overlays) - 1),
                         width="stretch", key=f"live_cam_{i}")
    st.caption("Same crop, same scale: the heat map sits on the pixels the model saw. Jet scale: blue = no influence "
               "on the predicted class, through green and yellow, to red = strongest influence (each map scaled to "
               "its own maximum).")
no_cam = [label for label in chosen if label not in overlays]
if no_cam:
    st.caption("No Grad-CAM for " + ", ".join(no_cam) + ": Grad-CAM needs gradients, which ONNX Runtime and "
               "quantized int8 models do not provide. Choose the variant's dense-torch_fp32 parent to see where the "
               "model it was made from looks.")
