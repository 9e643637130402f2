"""Account forms (Flask-WTF: every form carries a CSRF token)."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Email, Length

from webapp.security import MAX_PASSWORD

_email = [DataRequired(), Email(check_deliverability=False), Length(max=254)]
# Password managers and phones fill these (WCAG 1.3.5 "identify input purpose").
_EMAIL = {"autocomplete": "email"}
_CURRENT = {"autocomplete": "current-password"}
_NEW = {"autocomplete": "new-password"}


class RegisterForm(FlaskForm):
    email = EmailField("Email", validators=_email, render_kw=_EMAIL)
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)], render_kw=_NEW)
    consent = BooleanField("I agree that LesionLite keeps the photos I upload and their results in my account, as "
                           "described above, until I delete them or the account",
                           validators=[DataRequired("Tick the box to agree, or the site cannot keep your checks.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=_email, render_kw=_EMAIL)
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)], render_kw=_CURRENT)
    remember = BooleanField("Remember me")


class EmailForm(FlaskForm):
    email = EmailField("Email", validators=_email, render_kw=_EMAIL)


class NewPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)], render_kw=_NEW)


class ProfileForm(FlaskForm):
    name = StringField("Name", validators=[Length(max=100)], render_kw={"autocomplete": "name"})


def _current_password(purpose: str, form_id: str) -> PasswordField:
    """The profile has several forms that ask for the password: each field says which and has its own id."""
    return PasswordField(f"Current password ({purpose})", validators=[DataRequired()], render_kw=_CURRENT,
                         id=f"{form_id}-current-password")


class ChangeEmailForm(FlaskForm):
    email = EmailField("New email", validators=_email, render_kw=_EMAIL)
    current_password = _current_password("to change your email", "email")


class ChangePasswordForm(FlaskForm):
    current_password = _current_password("to change it", "password")
    password = PasswordField("New password", validators=[DataRequired(), Length(max=MAX_PASSWORD)], render_kw=_NEW)


class ConfirmForm(FlaskForm):
    """A bare POST with CSRF (logout, revoke a token, delete a check)."""


class DeleteAccountForm(FlaskForm):
    current_password = _current_password("to delete your account", "delete")


class CreateTokenForm(FlaskForm):
    """A new API token needs the password: a stolen session alone cannot mint a credential that outlives it."""

    current_password = _current_password("to create a token", "token")
