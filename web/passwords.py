"""The one password: stored only as a werkzeug scrypt hash under the cache folder.

Checking scrypt costs tens of milliseconds by design; scripts send the
password with every request, so a verified password is remembered as an
HMAC under a per-process random key and later requests compare that in
constant time instead of re-running scrypt.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from engine import atomic_write

AUTH_FILE = "auth.json"
MIN_LENGTH = 12


def _auth_path(cache: Path) -> Path:
    return cache / AUTH_FILE


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    atomic_write(path, text, private=True)


class WeakPassword(ValueError):
    """A password too short to stand against guessing."""


def store_password(cache: Path, password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"the password must have at least {MIN_LENGTH} characters")
    write_private(_auth_path(cache), json.dumps({"password_hash": generate_password_hash(password)}))


def stored_hash(cache: Path) -> str | None:
    try:
        return json.loads(_auth_path(cache).read_text()).get("password_hash")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_password(cache: Path, from_environment: str | None) -> str | None:
    """Make sure a password hash exists; returns a generated password to show once, else None."""
    if from_environment:
        current = stored_hash(cache)
        if not current or not check_password_hash(current, from_environment):
            store_password(cache, from_environment)
        return None
    if stored_hash(cache):
        return None
    generated = secrets.token_urlsafe(15)
    store_password(cache, generated)
    return generated


class PasswordChecker:
    """Verifies the password against the stored hash, cheaply after the first success."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # stored hash -> HMAC of the password that matched it
        self._lock = threading.Lock()

    def check(self, password: str) -> bool:
        stored = stored_hash(self.cache)
        if not stored or not password:
            return False
        tag = hmac.new(self._key, password.encode(), hashlib.sha256).digest()
        known = self._verified.get(stored)
        if known is not None:
            return hmac.compare_digest(known, tag)
        if check_password_hash(stored, password):
            with self._lock:
                self._verified = {stored: tag}
            return True
        return False
