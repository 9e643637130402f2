from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired


class UploadForm(FlaskForm):
    image = FileField("Dermatoscopic image (JPEG or PNG)", validators=[FileRequired("Choose an image to upload.")])
