from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length

# Where on the body: lets a patient follow one lesion over time (HAM10000's localization values, grouped).
BODY_SITES: tuple[tuple[str, str], ...] = (
    ("", "Not given"), ("scalp", "Scalp"), ("face", "Face or ear"), ("neck", "Neck"), ("chest", "Chest"),
    ("abdomen", "Abdomen"), ("back", "Back"), ("upper extremity", "Arm"), ("hand", "Hand"),
    ("lower extremity", "Leg"), ("foot", "Foot"), ("genital", "Genital area"), ("other", "Elsewhere"),
)
BODY_SITE_NAMES = dict(BODY_SITES)


class UploadForm(FlaskForm):
    image = FileField("Dermatoscopic image (JPEG or PNG)", validators=[FileRequired("Choose an image to upload.")],
                      render_kw={"accept": "image/jpeg,image/png,image/*"})
    body_site = SelectField("Where on the body (optional)", default="",
                            choices=[SelectChoice(value, label) for value, label in BODY_SITES])
    note = TextAreaField("Note for yourself or your clinician (optional)", validators=[Length(max=500)],
                         render_kw={"rows": 2, "maxlength": 500})
