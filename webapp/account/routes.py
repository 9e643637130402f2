"""The signed-in account: profile (name, address, password), API tokens, a copy of one's data, deleting it all.
Each change that matters asks the current password; a new address is confirmed from its own inbox."""

from __future__ import annotations

import io
import json
import zipfile

from flask import Blueprint, abort, current_app, flash, redirect, render_template, send_file, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm

from webapp import checks, tokens, users
from webapp.auth.forms import (
    ChangeEmailForm,
    ChangePasswordForm,
    ConfirmForm,
    CreateTokenForm,
    DeleteAccountForm,
    ProfileForm,
)
from webapp.extensions import configured_limit, limiter
from webapp.mailer import CHECK_MAIL, external_url, send
from webapp.security import hash_password, make_token, password_problem, read_token, verify_password
from webapp.storage import delete_image, image_path

# The account's addresses stay under /auth/ (links already mailed and bookmarks keep working).
bp = Blueprint("account", __name__, url_prefix="/auth")


WRONG_PASSWORD = "The current password is not correct."


def _profile_page(new_token: str | None = None, **failed: object) -> str:
    """The profile; ``failed``: a form that was refused, shown with its error beside the field (not at the top of
    the page, where it read like the other forms' confirmations)."""
    forms = {"profile_form": ProfileForm(name=current_user.name), "email_form": ChangeEmailForm(),
             "password_form": ChangePasswordForm(), "delete_form": DeleteAccountForm(), "token_form": CreateTokenForm(),
             **failed}
    return render_template("account/profile.html", confirm=ConfirmForm(), tokens=tokens.of_user(current_user.id),
                           new_token=new_token, **forms)


def _refused(name: str, form: FlaskForm, field: str, message: str) -> tuple[str, int]:
    getattr(form, field).errors = [*getattr(form, field).errors, message]
    return _profile_page(**{name: form}), 400


@bp.route("/profile", methods=["GET"])
@login_required
def profile():
    return _profile_page()


@bp.route("/profile/name", methods=["POST"])
@login_required
def change_name():
    form = ProfileForm()
    if form.validate_on_submit():
        users.update(current_user.id, name=form.name.data or "")
        flash("Saved.")
    return redirect(url_for("account.profile"))


@bp.route("/profile/email", methods=["POST"])
@login_required
@limiter.limit(lambda: configured_limit("RATELIMIT_ACCOUNT"))
def change_email():
    form = ChangeEmailForm()
    if form.validate_on_submit():
        if not verify_password(current_user.password_hash, form.current_password.data):
            return _refused("email_form", form, "current_password", WRONG_PASSWORD)
        else:
            # The account keeps its address until the new one is confirmed from its own inbox: nothing on the
            # profile (or in the database) differs between a free address and a taken one, and no account can
            # hold an address it does not own. The owner of a taken address is told instead.
            new = form.email.data.strip()
            token = make_token("change-email", {"uid": current_user.id, "old": current_user.email.lower(),
                                                "new": new})
            if users.by_email(new) is None:
                send(new, "confirm your new address", "change_email",
                     link=external_url("account.confirm_email", token=token))
            else:
                send(new, "someone tried to use your address", "address_in_use",
                     link=external_url("auth.reset_request"))
            flash(CHECK_MAIL)  # same answer whether or not the address is taken
    return redirect(url_for("account.profile"))


@bp.route("/email/<token>")
def confirm_email(token: str):
    data = read_token("change-email", token, max_age=current_app.config["VERIFY_TOKEN_MAX_AGE"])
    user = users.by_id(int(data["uid"])) if data else None
    if user is None or user.email.lower() != str(data.get("old", "")).lower():  # forged, expired, or used
        flash("This link is invalid, expired or already used.", "error")
        return redirect(url_for("auth.login"))
    if not users.change_email(user.id, str(data["new"])):  # taken since the mail was sent (or at this moment)
        flash("This address can no longer be used for your account. Nothing was changed.", "error")
        return redirect(url_for("auth.login"))
    users.rotate_session(user.id)  # sessions and reset links of the old address end
    flash("Your new address is confirmed. Please log in again.")
    return redirect(url_for("auth.login"))


@bp.route("/profile/password", methods=["POST"])
@login_required
@limiter.limit(lambda: configured_limit("RATELIMIT_ACCOUNT"))  # the current password is checked here too
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=current_user.email, name=current_user.name)
        if not verify_password(current_user.password_hash, form.current_password.data):
            return _refused("password_form", form, "current_password", WRONG_PASSWORD)
        elif problem:
            return _refused("password_form", form, "password", problem)
        else:
            users.update(current_user.id, password_hash=hash_password(form.password.data))
            users.rotate_session(current_user.id)
            tokens.revoke_all(current_user.id)
            session.clear()
            login_user(users.by_id(current_user.id))  # this session stays; every other one ends
            flash("Your password is changed; other sessions have been logged out and every API token revoked.")
    return redirect(url_for("account.profile"))


@bp.route("/profile/tokens", methods=["POST"])
@login_required
@limiter.limit(lambda: configured_limit("RATELIMIT_ACCOUNT"))  # the current password is checked here too
def create_token():
    form = CreateTokenForm()
    if not form.validate_on_submit() or not verify_password(current_user.password_hash, form.current_password.data):
        return _refused("token_form", form, "current_password", f"{WRONG_PASSWORD} No token was created.")
    token = tokens.create(current_user.id)
    if token is None:
        flash(f"This account already has {tokens.MAX_TOKENS_PER_ACCOUNT} tokens, the most it can hold: revoke one "
              "first.", "error")
        return redirect(url_for("account.profile"))
    # Shown once, in this response only: never stored in the (signed, readable) session cookie.
    return _profile_page(new_token=token)


@bp.route("/profile/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400)
    if token_id > tokens.MAX_ID or not tokens.revoke(current_user.id, token_id):  # SQLite ids are 64-bit
        abort(404)
    flash("Token revoked.")
    return redirect(url_for("account.profile"))


@bp.route("/profile/export", methods=["GET"])
@login_required
@limiter.limit(lambda: configured_limit("RATELIMIT_ACCOUNT"))
def export_data():
    """Everything the site keeps about the user as one ZIP: ``checks.json`` and each check's photo."""
    buffer = io.BytesIO()
    kept = checks.export(current_user.id)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", checks.EXPORT_README)
        archive.writestr("checks.json", json.dumps({"email": current_user.email, "name": current_user.name,
                                                    "checks": [c for c, _ in kept]}, indent=2))
        for check, key in kept:
            if image_path(key).is_file():
                archive.write(image_path(key), str(check["photo"]))
    response = send_file(io.BytesIO(buffer.getvalue()), mimetype="application/zip", as_attachment=True,
                         download_name="lesionlite-my-data.zip")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/profile/delete", methods=["POST"])
@login_required
@limiter.limit(lambda: configured_limit("RATELIMIT_ACCOUNT"))
def delete_account():
    form = DeleteAccountForm()
    if not form.validate_on_submit() or not verify_password(current_user.password_hash, form.current_password.data):
        return _refused("delete_form", form, "current_password", f"{WRONG_PASSWORD} Nothing was deleted.")
    for key in users.delete(current_user.id):  # rows first: a crash leaves files the start-up check removes
        delete_image(key)
    logout_user()
    session.clear()
    flash("Your account, images and results are deleted.")
    return redirect(url_for("auth.login"))
