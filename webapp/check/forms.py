from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, NumberRange, Optional

from core.fusion import LOCALIZATIONS, PatientMetadata

# Where on the body: lets a patient follow one lesion over time (HAM10000's localization values, grouped).
BODY_SITES: tuple[tuple[str, str], ...] = (
    ("", "Not given"), ("scalp", "Scalp"), ("face", "Face or ear"), ("neck", "Neck"), ("chest", "Chest"),
    ("abdomen", "Abdomen"), ("back", "Back"), ("upper extremity", "Arm"), ("hand", "Hand"),
    ("lower extremity", "Leg"), ("foot", "Foot"), ("genital", "Genital area"), ("other", "Elsewhere"),
)
BODY_SITE_NAMES = dict(BODY_SITES)
SEX_CHOICES: tuple[tuple[str, str], ...] = (("", "Not given"), ("female", "Female"), ("male", "Male"))
SPOT_MAX = 60


def patient_metadata(*, age: float | None, sex: str, body_site: str) -> PatientMetadata:
    """What the form's fields tell the model: the body site in HAM10000's vocabulary ("Elsewhere" and "Not given"
    are not given)."""
    return PatientMetadata(age=age, sex=sex or None,
                           localization=body_site if body_site in LOCALIZATIONS else None)


class UploadForm(FlaskForm):
    image = FileField("Dermatoscopic image (JPEG or PNG)", validators=[FileRequired("Choose an image to upload.")],
                      render_kw={"accept": "image/jpeg,image/png,image/*"})
    body_site = SelectField("Where on the body (optional)", default="",
                            choices=[SelectChoice(value, label) for value, label in BODY_SITES])
    age = IntegerField("Your age in years (optional)", validators=[Optional(), NumberRange(
        min=0, max=120, message="Enter an age from 0 to 120 years, or leave it empty.")],
        render_kw={"min": 0, "max": 120, "inputmode": "numeric"})
    sex = SelectField("Sex (optional)", default="",
                      choices=[SelectChoice(value, label) for value, label in SEX_CHOICES])
    spot = StringField("Which spot is this? (optional: name it, e.g. \"mole left shoulder\", and pick the same "
                       "name next time to see the photos side by side)", validators=[Length(max=SPOT_MAX)],
                       render_kw={"maxlength": SPOT_MAX, "list": "spots", "autocomplete": "off"})
    note = TextAreaField("Note for yourself or your clinician (optional)", validators=[Length(max=500)],
                         render_kw={"rows": 2, "maxlength": 500})


class SpotForm(FlaskForm):
    """Name the spot a check shows afterwards (or correct it), so its photos line up with the same lesion's."""

    spot = StringField("This check shows the spot", validators=[Length(max=SPOT_MAX)],
                       render_kw={"maxlength": SPOT_MAX, "list": "spots", "autocomplete": "off"})
