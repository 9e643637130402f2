"""Signing in: register, verify the address, log in and out, reset a forgotten password. Messages never reveal
whether an email is registered, and neither does the time they take: both registration paths hash a password and
queue one mail; mail leaves in the background (webapp.mailer)."""

from __future__ import annotations

import functools
import re

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_limiter.util import get_remote_address
from flask_login import current_user, login_required, login_user, logout_user

from webapp import tokens, users
from webapp.auth.forms import (
    ConfirmForm,
    EmailForm,
    LoginForm,
    NewPasswordForm,
    RegisterForm,
)
from webapp.extensions import configured_limit, limiter
from webapp.mailer import CHECK_MAIL, external_url, send
from webapp.security import (
    hash_password,
    make_token,
    password_fingerprint,
    password_problem,
    read_token,
    verify_password,
)

bp = Blueprint("auth", __name__, url_prefix="/auth")

LOGIN_FAILED = ("Invalid email or password, or the address is not confirmed yet (if so, we have just sent it a new "
                "link: please check your inbox).")


def _send_verification(user: users.User) -> None:
    token = make_token("verify", {"uid": user.id, "email": user.email})
    send(user.email, "confirm your email", "verify", link=external_url("auth.verify", token=token))


def _tell_owner(email: str) -> None:
    send(email, "someone tried to register with your address", "already_registered",
         link=external_url("auth.reset_request"))


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(lambda: configured_limit("RATELIMIT_REGISTER"), methods=["POST"])
def register():
    form = RegisterForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=form.email.data)
        if problem:
            form.password.errors.append(problem)
        else:
            # Hash first on both paths: a known address must cost what a new one costs (no timing oracle).
            password_hash = hash_password(form.password.data)
            existing = users.by_email(form.email.data)
            created = users.create(form.email.data, password_hash) if existing is None else None
            if created is not None:
                _send_verification(created)
            else:  # known address, or a concurrent registration won: tell the owner, not the visitor
                _tell_owner(existing.email if existing is not None else form.email.data.strip())
            flash(CHECK_MAIL)
            return redirect(url_for("auth.login"))
    return render_template("auth/register.html", form=form)


@bp.route("/verify/<token>")
def verify(token: str):
    data = read_token("verify", token, max_age=current_app.config["VERIFY_TOKEN_MAX_AGE"])
    user = users.by_id(int(data["uid"])) if data else None
    if user is None or user.email.lower() != str(data.get("email", "")).lower():
        flash("This link is invalid or has expired. Log in with your password: an address that is not confirmed yet "
              "is sent a new link.", "error")
        return redirect(url_for("auth.login"))
    users.update(user.id, verified=1)
    flash("Your email is confirmed.")
    return redirect(url_for("check.upload") if current_user.is_authenticated else url_for("auth.login"))


# A local path and nothing else: one leading slash, then no second slash, backslash or control character (browsers
# read "//host", "/\\host" and "////host" — which Werkzeug collapses to "//host" in Location — as another site).
_LOCAL_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9/_.~%!$&'()*+,;=:@?#-]{0,500}")


def _safe_next(target: str | None) -> str:
    """``next`` when it is a plain path on this site, else the upload page (never an error for odd input)."""
    if target and _LOCAL_PATH.fullmatch(target) and "\\" not in target and "//" not in target.split("?")[0]:
        return target
    return url_for("check.upload")


def _login_failure_key() -> str:
    # Per account *and* client address: an attacker exhausting it cannot lock the owner out from elsewhere.
    return f"login-failures:{_login_email()}:{get_remote_address()}"


def _login_email() -> str:
    return request.form.get("email", "").strip().lower()


DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600


def _device_cookie_name() -> str:
    return "__Host-device" if current_app.config.get("SESSION_COOKIE_SECURE") else "device"


def _known_device() -> bool:
    """A browser that signed in to this account before (OWASP's device cookie): exempt from the account-wide
    failure limit, so guessing from many addresses cannot lock the owner out of their own devices."""
    raw = request.cookies.get(_device_cookie_name())
    data = read_token("device", raw, max_age=DEVICE_COOKIE_MAX_AGE) if raw else None
    return bool(data) and data.get("email") == _login_email()


def _remember_device(response, email: str):
    response.set_cookie(_device_cookie_name(), make_token("device", {"email": email.strip().lower()}),
                        max_age=DEVICE_COOKIE_MAX_AGE, secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
                        httponly=True, samesite="Lax", path="/")
    return response


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: configured_limit("RATELIMIT_LOGIN"), methods=["POST"])
@limiter.limit(lambda: configured_limit("RATELIMIT_LOGIN_FAILURES"), key_func=_login_failure_key, methods=["POST"],
               deduct_when=lambda response: response.status_code == 401)
# Failures per account from every address together (ASVS 2.2.1: at most 100 an hour), except from known devices.
@limiter.limit(lambda: configured_limit("RATELIMIT_LOGIN_FAILURES_ACCOUNT"),
               key_func=lambda: f"failures:{_login_email()}", methods=["POST"],
               deduct_when=lambda response: response.status_code == 401, exempt_when=_known_device)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("check.upload"))
    form = LoginForm()
    if form.validate_on_submit():
        user = users.by_email(form.email.data)
        right = user is not None and verify_password(user.password_hash, form.password.data)
        if right and user.verified:
            session.clear()  # a fresh session at login: nothing from before survives (no fixation)
            login_user(user, remember=form.remember.data)
            return _remember_device(redirect(_safe_next(request.args.get("next"))), user.email)
        if right:  # not confirmed: it can do nothing but confirm, and answers as any failure (no enumeration)
            _send_verification(user)
        if user is None:
            verify_password(_dummy_hash(), form.password.data)  # same work for unknown emails: no timing oracle
        flash(LOGIN_FAILED, "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form)


@functools.cache
def _dummy_hash() -> str:
    """A real password hash for unknown addresses, made once per process on first use (not at import): the
    unknown path then costs what the known one does (a fingerprint of a stored hash, no hashing per request)."""
    return hash_password("not-a-real-password-0000")


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if not ConfirmForm().validate_on_submit():
        abort(400)
    users.rotate_session(current_user.id)  # ends this user's sessions everywhere, remember-me included
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(lambda: configured_limit("RATELIMIT_RESET"), methods=["POST"])
def reset_request():
    form = EmailForm()
    if form.validate_on_submit():
        user = users.by_email(form.email.data)
        # Bound to the password (single use) and to the address it is sent to (it proves only that address). An
        # unknown address takes the same steps (a token, a link, a message rendered in the background) and only
        # the sending is skipped, so the answer's timing does not tell which addresses have accounts.
        token = make_token("reset", {"uid": user.id if user else 0,
                                     "pw": password_fingerprint(user.password_hash if user else _dummy_hash()),
                                     "email": (user.email if user else form.email.data.strip()).lower()})
        send(user.email if user else None, "reset your password", "reset",
             link=external_url("auth.reset", token=token))
        flash(CHECK_MAIL)
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_request.html", form=form)


@bp.route("/reset/<token>", methods=["GET", "POST"])
@limiter.limit(lambda: configured_limit("RATELIMIT_RESET"), methods=["POST"])
def reset(token: str):
    data = read_token("reset", token, max_age=current_app.config["RESET_TOKEN_MAX_AGE"])
    user = users.by_id(int(data["uid"])) if data else None
    if (user is None or data.get("pw") != password_fingerprint(user.password_hash)  # expired, forged or used
            or data.get("email") != user.email.lower()):  # the address changed since the mail was sent
        flash("This link is invalid, expired or already used. Ask for a new one.", "error")
        return redirect(url_for("auth.reset_request"))
    form = NewPasswordForm()
    if form.validate_on_submit():
        problem = password_problem(form.password.data, email=user.email)
        if problem:
            form.password.errors.append(problem)
        else:
            users.update(user.id, password_hash=hash_password(form.password.data), verified=1)
            users.rotate_session(user.id)
            tokens.revoke_all(user.id)  # a token taken with the account must not outlive its recovery
            flash("Your password is changed and every API token revoked. Log in with the new password.")
            return redirect(url_for("auth.login"))
    return render_template("auth/reset.html", form=form)
