"""Who may do what: login page, session / Basic / Bearer checks, CSRF, login rate limit.

Every request passes `require_auth`, so a new route is protected unless it is
explicitly listed in PUBLIC_ENDPOINTS.

A browser never gets a Basic challenge: one it answered would be remembered and
attached by the browser to any later request, a cross-site form included.  Scripts
send their credentials unasked (`curl -u`, a Bearer token).  Every state-changing
request whose credentials a browser could attach by itself (the session cookie, or
Basic) must come from this origin; cookie requests also carry the CSRF token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, jsonify, redirect, render_template, request, session, url_for

from web import current

bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = {"auth.login", "static"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
LOGIN_NONCE_COOKIE = "lookalike_login"


# -- rate limit ------------------------------------------------------------------
@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class LoginLimiter:
    """Failed passwords per client: FREE_FAILURES free, then a lockout that doubles
    with every further failure (1 s, 2 s, 4 s ... up to MAX_LOCKOUT).  A success clears it,
    and a client quiet for FORGET_AFTER is forgotten, so the right password is
    never refused for longer than the current lockout.

    Checking and counting are one step per client (`attempt`): parallel wrong
    passwords are checked one after another, each counted before the next is
    looked at, so a burst gets no more tries than a sequence.
    """

    FREE_FAILURES = 10
    MAX_LOCKOUT = 300.0
    FORGET_AFTER = 900.0

    def __init__(self, first_lockout: float = 1.0, clock=time.monotonic) -> None:
        self.first_lockout = first_lockout
        self._clock = clock
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()
        self._client_locks = [threading.Lock() for _ in range(64)]

    def retry_after(self, client: str) -> int:
        """Seconds the client must wait, 0 when it may try now."""
        with self._lock:
            state = self._current(client)
            wait = state.locked_until - self._clock() if state else 0.0
        return max(1, int(wait) + 1) if wait > 0 else 0

    def attempt(self, client: str, check) -> tuple[bool, int]:
        """(accepted, seconds to wait): `check()` runs only when the client is not locked out."""
        with self._client_locks[hash(client) % len(self._client_locks)]:
            wait = self.retry_after(client)
            if wait:
                return False, wait
            if check():
                with self._lock:
                    self._failures.pop(client, None)
                return True, 0
            self.failed(client)
            return False, 0

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            state = self._current(client) or self._failures.setdefault(client, _Failures())
            state.count += 1
            state.last = now
            beyond = state.count - self.FREE_FAILURES
            if beyond >= 0:
                state.locked_until = now + min(self.first_lockout * 2.0 ** beyond, self.MAX_LOCKOUT)

    def _current(self, client: str) -> _Failures | None:
        state = self._failures.get(client)
        if state and self._clock() - state.last > self.FORGET_AFTER:
            del self._failures[client]
            return None
        return state


def _client() -> str:
    """The address failures are counted against; behind the configured proxy, the one it forwarded."""
    address = request.remote_addr or "unknown"
    proxy = current.config().trusted_proxy
    if proxy and address == proxy:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]  # the entry the proxy itself appended; earlier ones are the client's word
    return address


# -- tokens -------------------------------------------------------------------------
def _equal(sent: str, expected: str) -> bool:
    """Constant-time comparison that refuses empty values and accepts any characters."""
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def csrf_token() -> str:
    """The token forms and scripts send back: the session's own once logged in; before
    that, the login form's."""
    return session["csrf"] if session.get("user") else login_form_token()


def login_form_token() -> str:
    """The login form's token, bound to a random cookie of this browser (no session is
    stored before a login, so the cookie carries what the token is checked against)."""
    if "login_nonce" not in g:
        g.login_nonce = request.cookies.get(LOGIN_NONCE_COOKIE) or secrets.token_urlsafe(32)
    return _login_token(g.login_nonce)


def _login_token(nonce: str) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"login:" + nonce.encode(), hashlib.sha256).hexdigest()


def set_login_nonce(response):
    """after_request: hand out the cookie that a login form's token was bound to."""
    nonce = g.get("login_nonce")
    if nonce and request.cookies.get(LOGIN_NONCE_COOKIE) != nonce:
        response.set_cookie(LOGIN_NONCE_COOKIE, nonce, httponly=True, samesite="Strict",
                            secure=current_app.config["SESSION_COOKIE_SECURE"])
    return response


def _login_form_token_valid() -> bool:
    nonce = request.cookies.get(LOGIN_NONCE_COOKIE, "")
    return bool(nonce) and _equal(request.form.get("csrf_token", ""), _login_token(nonce))


def _same_origin() -> bool:
    """Whether a browser says the request comes from our own pages; clients that are not
    browsers send neither header and are judged by their credentials alone."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.host


# -- the check on every request -------------------------------------------------------
def _credentials() -> str | None:
    """The password sent with HTTP Basic (any user name) or as a Bearer token; '' when malformed."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip().encode("ascii"), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeError):  # not base64, or not ASCII / UTF-8: a failed attempt
            return ""
    return None


def _error(message: str, status: int):
    response = jsonify(error=message)
    response.status_code = status
    return response


def _too_many(wait: int):
    response = _error(f"too many failed attempts; try again in {wait} s", 429)
    response.headers["Retry-After"] = str(wait)
    return response


def _refuse(challenge: bool = False):
    if request.blueprint == "pages" and request.method == "GET":
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    response = _error("authentication required: log in, or send the password with HTTP Basic or Bearer", 401)
    if challenge:  # only to a client that chose Basic itself
        response.headers["WWW-Authenticate"] = 'Basic realm="Lookalike"'
    return response


def require_auth():
    """before_request hook: admit the login page, static files and authenticated callers."""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    password = _credentials()
    if password is not None:
        checker = current_app.extensions["password_checker"]
        accepted, wait = current_app.extensions["login_limiter"].attempt(_client(), lambda: checker.check(password))
        if wait:
            return _too_many(wait)
        basic = request.headers["Authorization"].lower().startswith("basic")
        if not accepted:
            return _refuse(challenge=basic)
        g.auth = "password"
        if basic and request.method in STATE_CHANGING and not _same_origin():
            return _error("cross-site request refused", 403)
        return None
    if not session.get("user"):
        return _refuse()
    g.auth = "session"
    if request.method in STATE_CHANGING:
        sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
        if not _equal(sent, session.get("csrf", "")) or not _same_origin():
            return _error("missing or wrong CSRF token; reload the page", 403)
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    error = None
    status = 200
    wait = 0
    if request.method == "POST":
        checker = current_app.extensions["password_checker"]
        if not _login_form_token_valid() or not _same_origin():
            error, status = "The form expired. Please try again.", 400
        else:
            accepted, wait = current_app.extensions["login_limiter"].attempt(
                _client(), lambda: checker.check(request.form.get("password", "")))
            if wait:
                error, status = f"Too many failed attempts. Try again in {wait} seconds.", 429
            elif accepted:
                current_app.session_interface.regenerate(session)
                session.clear()
                session["user"] = True
                session["csrf"] = secrets.token_urlsafe(32)
                return redirect(_safe_next(request.args.get("next")))
            else:
                error, status = "Wrong password.", 401
    response = current_app.make_response((render_template("login.html", error=error), status))
    if wait:
        response.headers["Retry-After"] = str(wait)
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
