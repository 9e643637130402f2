from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

# Where on the body: lets a patient follow one lesion over time (HAM10000's localization values, grouped).
BODY_SITES: tuple[tuple[str, str], ...] = (
    ("", "Not given"), ("scalp", "Scalp"), ("face", "Face or ear"), ("neck", "Neck"), ("chest", "Chest"),
    ("abdomen", "Abdomen"), ("back", "Back"), ("upper extremity", "Arm"), ("hand", "Hand"),
    ("lower extremity", "Leg"), ("foot", "Foot"), ("genital", "Genital area"), ("other", "Elsewhere"),
)
BODY_SITE_NAMES = dict(BODY_SITES)
SPOT_MAX = 60


class UploadForm(FlaskForm):
    image = FileField("Dermatoscopic image (JPEG or PNG)", validators=[FileRequired("Choose an image to upload.")],
                      render_kw={"accept": "image/jpeg,image/png,image/*"})
    body_site = SelectField("Where on the body (optional)", default="",
                            choices=[SelectChoice(value, label) for value, label in BODY_SITES])
    spot = StringField("Which spot is this? (optional: name it, e.g. \"mole left shoulder\", and pick the same "
                       "name next time to see the photos side by side)", validators=[Length(max=SPOT_MAX)],
                       render_kw={"maxlength": SPOT_MAX, "list": "spots", "autocomplete": "off"})
    note = TextAreaField("Note for yourself or your clinician (optional)", validators=[Length(max=500)],
                         render_kw={"rows": 2, "maxlength": 500})


class SpotForm(FlaskForm):
    """Name the spot a check shows afterwards (or correct it), so its photos line up with the same lesion's."""

    spot = StringField("This check shows the spot", validators=[Length(max=SPOT_MAX)],
                       render_kw={"maxlength": SPOT_MAX, "list": "spots", "autocomplete": "off"})
