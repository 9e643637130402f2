"""Account views. Messages never reveal whether an email is registered."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from flask import abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from webapp import users
from webapp.auth import bp
from webapp.auth.forms import (
    ChangeEmailForm,
    ChangePasswordForm,
    ConfirmForm,
    DeleteAccountForm,
    EmailForm,
    LoginForm,
    NewPasswordForm,
    ProfileForm,
    RegisterForm,
)
from webapp.db import get_db
from webapp.extensions import limiter
from webapp.mailer import send
from webapp.security import (
    hash_api_token,
    hash_password,
    make_token,
    new_api_token,
    password_fingerprint,
    password_problem,
    read_token,
    verify_password,
)
from webapp.storage import delete_user_files

CHECK_MAIL = "If that address can be used, we have sent it an email with a link. Please check your inbox."


def _limit(name: str) -> str:
    return current_app.config[name]


def _send_verification(user: users.User) -> None:
    token = make_token("verify", {"uid": user.id, "email": user.email})
    send(user.email, "confirm your email", "verify", link=url_for("auth.verify", token=token, _external=True))


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(lambda: _limit("RATELIMIT_REGISTER"), methods=["POST"])
def register():  # noqa: ANN201
    form = RegisterForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=form.email.data)
        if problem:
            form.password.errors.append(problem)
        else:
            existing = users.by_email(form.email.data)
            if existing is None:
                _send_verification(users.create(form.email.data, form.password.data))
            else:  # tell the owner, not the visitor
                send(existing.email, "someone tried to register with your address", "already_registered",
                     link=url_for("auth.reset_request", _external=True))
            flash(CHECK_MAIL)
            return redirect(url_for("auth.login"))
    return render_template("auth/register.html", form=form)


@bp.route("/verify/<token>")
def verify(token: str):  # noqa: ANN201
    data = read_token("verify", token, max_age=current_app.config["VERIFY_TOKEN_MAX_AGE"])
    user = users.by_id(int(data["uid"])) if data else None
    if user is None or user.email.lower() != str(data.get("email", "")).lower():
        flash("This link is invalid or has expired. Log in to ask for a new one.")
        return redirect(url_for("auth.login"))
    users.update(user.id, verified=1)
    flash("Your email is confirmed.")
    return redirect(url_for("detect.upload") if current_user.is_authenticated else url_for("auth.login"))


@bp.route("/resend", methods=["POST"])
@login_required
@limiter.limit(lambda: _limit("RATELIMIT_RESEND"))
def resend():  # noqa: ANN201
    if ConfirmForm().validate_on_submit() and not current_user.verified:
        _send_verification(current_user)
    flash(CHECK_MAIL)
    return redirect(url_for("auth.profile"))


def _safe_next(target: str | None) -> str:
    if target and urlsplit(target).netloc == "" and urlsplit(target).scheme == "" and target.startswith("/"):
        return target
    return url_for("detect.upload")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: _limit("RATELIMIT_LOGIN"), methods=["POST"])
def login():  # noqa: ANN201
    if current_user.is_authenticated:
        return redirect(url_for("detect.upload"))
    form = LoginForm()
    if form.validate_on_submit():
        user = users.by_email(form.email.data)
        if user is not None and verify_password(user.password_hash, form.password.data):
            session.clear()  # a fresh session at login: nothing from before survives (no fixation)
            login_user(user, remember=form.remember.data)
            return redirect(_safe_next(request.args.get("next")))
        if user is None:
            verify_password(_dummy_hash(), form.password.data)  # same work for unknown emails: no timing oracle
        flash("Invalid email or password.")
    return render_template("auth/login.html", form=form)


@functools.cache
def _dummy_hash() -> str:
    return hash_password("not-a-real-password-0000")


@bp.route("/logout", methods=["POST"])
@login_required
def logout():  # noqa: ANN201
    if not ConfirmForm().validate_on_submit():
        abort(400)
    users.rotate_session(current_user.id)  # ends this user's sessions everywhere, remember-me included
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(lambda: _limit("RATELIMIT_RESET"), methods=["POST"])
def reset_request():  # noqa: ANN201
    form = EmailForm()
    if form.validate_on_submit():
        user = users.by_email(form.email.data)
        if user is not None:
            token = make_token("reset", {"uid": user.id, "pw": password_fingerprint(user.password_hash)})
            send(user.email, "reset your password", "reset", link=url_for("auth.reset", token=token, _external=True))
        flash(CHECK_MAIL)
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_request.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: _limit("RATELIMIT_RESET"), methods=["POST"])
def reset(token: str):  # noqa: ANN201
    data = read_token("reset", token, max_age=current_app.config["RESET_TOKEN_MAX_AGE"])
    user = users.by_id(int(data["uid"])) if data else None
    if user is None or data.get("pw") != password_fingerprint(user.password_hash):  # expired, forged or used
        flash("This link is invalid, expired or already used. Ask for a new one.")
        return redirect(url_for("auth.reset_request"))
    form = NewPasswordForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=user.email)
        if problem:
            form.password.errors.append(problem)
        else:
            users.update(user.id, password_hash=hash_password(form.password.data), verified=1)
            users.rotate_session(user.id)
            flash("Your password is changed. Log in with the new one.")
            return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form)


@bp.route("/profile", methods=["GET"])
@login_required
def profile():  # noqa: ANN201
    tokens = get_db().execute("SELECT id, hint, created_at FROM api_tokens WHERE user_id = ? ORDER BY id",
                              (current_user.id,)).fetchall()
    return render_template("auth/profile.html", profile_form=ProfileForm(name=current_user.name),
                           email_form=ChangeEmailForm(), password_form=ChangePasswordForm(), confirm=ConfirmForm(),
                           delete_form=DeleteAccountForm(), tokens=tokens, new_token=session.pop("new_token", None))


@bp.route("/profile/name", methods=["POST"])
@login_required
def change_name():  # noqa: ANN201
    form = ProfileForm()
    if form.validate_on_submit():
        users.update(current_user.id, name=form.name.data or "")
        flash("Saved.")
    return redirect(url_for("auth.profile"))


@bp.route("/profile/email", methods=["POST"])
@login_required
def change_email():  # noqa: ANN201
    form = ChangeEmailForm()
    if form.validate_on_submit():
        if not verify_password(current_user.password_hash, form.current_password.data):
            flash("The current password is not correct.")
        elif users.by_email(form.email.data) is None:
            users.update(current_user.id, email=form.email.data.strip(), verified=0)
            _send_verification(users.by_id(current_user.id))  # type: ignore[arg-type]
            flash(CHECK_MAIL)
        else:
            flash(CHECK_MAIL)  # same answer whether or not the address is taken
    return redirect(url_for("auth.profile"))


@bp.route("/profile/password", methods=["POST"])
@login_required
def change_password():  # noqa: ANN201
    form = ChangePasswordForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=current_user.email)
        if not verify_password(current_user.password_hash, form.current_password.data):
            flash("The current password is not correct.")
        elif problem:
            flash(problem)
        else:
            users.update(current_user.id, password_hash=hash_password(form.password.data))
            users.rotate_session(current_user.id)
            session.clear()
            login_user(users.by_id(current_user.id))  # this session stays; every other one ends
            flash("Your password is changed; other sessions have been logged out.")
    return redirect(url_for("auth.profile"))


@bp.route("/profile/tokens", methods=["POST"])
@login_required
def create_token():  # noqa: ANN201
    if not ConfirmForm().validate_on_submit():
        abort(400)
    token, digest = new_api_token()
    db = get_db()
    with db:
        db.execute("INSERT INTO api_tokens (user_id, token_hash, hint) VALUES (?, ?, ?)",
                   (current_user.id, digest, token[-4:]))
    session["new_token"] = token  # shown once on the next page
    return redirect(url_for("auth.profile"))


@bp.route("/profile/tokens/<int:token_id>/revoke", methods=["POST"])
@login_required
def revoke_token(token_id: int):  # noqa: ANN201
    if not ConfirmForm().validate_on_submit():
        abort(400)
    db = get_db()
    with db:
        cur = db.execute("DELETE FROM api_tokens WHERE id = ? AND user_id = ?", (token_id, current_user.id))
    if cur.rowcount == 0:
        abort(404)
    flash("Token revoked.")
    return redirect(url_for("auth.profile"))


@bp.route("/profile/delete", methods=["POST"])
@login_required
def delete_account():  # noqa: ANN201
    form = DeleteAccountForm()
    if not form.validate_on_submit() or not verify_password(current_user.password_hash, form.current_password.data):
        flash("The current password is not correct.")
        return redirect(url_for("auth.profile"))
    user_id = current_user.id
    delete_user_files(user_id)
    db = get_db()
    with db:
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))  # detections and tokens cascade
    logout_user()
    session.clear()
    flash("Your account, images and results are deleted.")
    return redirect(url_for("auth.login"))


def api_user(token: str) -> users.User | None:
    row = get_db().execute("SELECT user_id FROM api_tokens WHERE token_hash = ?", (hash_api_token(token),)).fetchone()
    return users.by_id(row["user_id"]) if row else None


