"""The Flask secret key: generated once, kept under the cache folder, owner-only."""
from __future__ import annotations

import secrets
from pathlib import Path

from web.passwords import write_private

SECRET_FILE = "secret_key"


def load_or_create_secret(cache: Path) -> str:
    path = cache / SECRET_FILE
    try:
        value = path.read_text().strip()
        if len(value) >= 32:
            return value
    except OSError:
        pass
    value = secrets.token_hex(32)
    write_private(path, value)
    return value
