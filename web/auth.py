"""Who may do what: login page, session / Basic / Bearer checks, CSRF, login rate limit.

Every request passes `require_auth`, so a new route is protected unless it is
explicitly listed in PUBLIC_ENDPOINTS.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, session, url_for

bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = {"auth.login", "static"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0


class LoginLimiter:
    """At most FAILURES_ALLOWED failed logins per client per minute."""

    def __init__(self) -> None:
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait, 0 when it may try now."""
        with self._lock:
            recent = self._prune(client)
            if len(recent) < FAILURES_ALLOWED:
                return 0
            return max(1, int(recent[0] + FAILURE_WINDOW - time.monotonic()) + 1)

    def failed(self, client: str) -> None:
        with self._lock:
            self._prune(client).append(time.monotonic())

    def _prune(self, client: str) -> deque:
        recent = self._failures[client]
        while recent and time.monotonic() - recent[0] > FAILURE_WINDOW:
            recent.popleft()
        return recent


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def _credentials() -> str | None:
    """The password sent with HTTP Basic (any user name) or as a Bearer token."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return None


def _client() -> str:
    return request.remote_addr or "unknown"


def _too_many(wait: int):
    response = jsonify(error=f"too many failed attempts; try again in {wait} s")
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


def _refuse():
    if request.blueprint == "pages" and request.method == "GET":
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    response = jsonify(error="authentication required: log in, or send the password with HTTP Basic or Bearer")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="Lookalike"'
    return response


def require_auth():
    """before_request hook: admit the login page, static files and authenticated callers."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    password = _credentials()
    if password is not None:
        limiter = current_app.extensions["login_limiter"]
        wait = limiter.retry_after(_client())
        if wait:
            return _too_many(wait)
        if current_app.extensions["password_checker"].check(password):
            g.auth = "password"  # not cookie-based, so no CSRF token needed
            return None
        limiter.failed(_client())
        return _refuse()
    if not session.get("user"):
        return _refuse()
    g.auth = "session"
    if request.method in STATE_CHANGING:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
        if not hmac.compare_digest(sent, session.get("csrf", "")):
            return jsonify(error="missing or wrong CSRF token; reload the page"), 403
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    status = 200
    if request.method == "POST":
        limiter = current_app.extensions["login_limiter"]
        wait = limiter.retry_after(_client())
        sent = request.form.get("csrf_token", "")
        if wait:
            error, status = f"Too many failed attempts. Try again in {wait} seconds.", 429
        elif not hmac.compare_digest(sent, session.get("csrf", "")):
            error, status = "The form expired. Please try again.", 400
        elif current_app.extensions["password_checker"].check(request.form.get("password", "")):
            current_app.session_interface.regenerate(session)
            session.clear()
            session["user"] = True
            session["csrf"] = secrets.token_urlsafe(32)
            return redirect(_safe_next(request.args.get("next")))
        else:
            limiter.failed(_client())
            error, status = "Wrong password.", 401
    response = current_app.make_response((render_template("login.html", error=error), status))
    if status == 429:
        response.headers["Retry-After"] = str(limiter.retry_after(_client()))
    return response


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: no open redirect through ?next=."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("pages.index")
