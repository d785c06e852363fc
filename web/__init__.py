"""The web layer: app factory wiring auth, pages and the JSON API to one engine."""
from __future__ import annotations

from pathlib import Path

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from engine import Config, Engine, StoreError
from web import api, auth, current, pages
from web.passwords import PasswordChecker
from web.secret import load_or_create_secret
from web.sessions import MemorySessionInterface

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: Config, engine=None) -> Flask:
    """Build the app; `engine` may be given (tests), else it is built from config."""
    if engine is None:
        engine = Engine(config)
        engine.keep_duplicates_warm()
        engine.keep_calibrated()
        engine.warm_networks()
        engine.keep_up_to_date(config.rescan_minutes)
    # Only static/ui is public; the sample collection under static/images is served
    # through the authenticated, path-checked /image route like any collection.
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static" / "ui"),
                static_url_path="/static")
    app.config.update(
        SECRET_KEY=load_or_create_secret(config.cache),
        MAX_CONTENT_LENGTH=config.max_upload_mb * 1024 * 1024,
        SESSION_COOKIE_NAME="lookalike_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
    )
    app.session_interface = MemorySessionInterface()
    app.extensions["engine"] = engine
    app.extensions["password_checker"] = PasswordChecker(config.cache)
    app.extensions["login_limiter"] = auth.LoginLimiter()
    app.before_request(auth.require_auth)
    app.after_request(auth.set_login_nonce)
    app.after_request(_security_headers)
    app.jinja_env.globals["csrf_token"] = auth.csrf_token
    app.jinja_env.globals["login_form_token"] = auth.login_form_token
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_error_handler(HTTPException, _json_error)
    app.register_error_handler(StoreError, _store_error)
    app.register_error_handler(Exception, _internal_error)
    return app


# Scripts and styles come only from static/ui; nothing may frame the pages.  Inline style
# attributes stay allowed: the result cards place the matched-region box with one.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _security_headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _internal_error(error: Exception):
    from flask import current_app

    current_app.logger.exception("Unhandled error")
    response = jsonify(error="internal error; the server log says more")
    response.status_code = 500
    return response


def _store_error(error: StoreError):
    """Milvus down or refusing: the request cannot be answered now, and says why."""
    response = jsonify(error=f"the vector store cannot answer: {error}")
    response.status_code = 503
    return response


def _json_error(error: HTTPException):
    """Errors as JSON with a message, e.g. 413 for an upload over the size limit."""
    messages = {413: "upload too large: the limit is {} MB"}
    message = error.description
    if error.code == 413:
        message = messages[413].format(current.config().max_upload_mb)
    response = jsonify(error=message)
    response.status_code = error.code or 500
    return response
