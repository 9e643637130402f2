"""Account forms (Flask-WTF: every form carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from webapp.security import MAX_PASSWORD

_email = [DataRequired(), Email(check_deliverability=False), Length(max=254)]


class RegisterForm(FlaskForm):
    email = EmailField("Email", validators=_email)
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=_email)
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])
    remember = BooleanField("Remember me")


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=_email)


class NewPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])


class ProfileForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=100)])


class ChangeEmailForm(FlaskForm):
    email = EmailField("New email", validators=_email)
    current_password = PasswordField("Current password", validators=[DataRequired()])


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])


class ConfirmForm(FlaskForm):
    """A bare POST with CSRF (logout, resend, create/revoke token)."""


class DeleteAccountForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired()])
