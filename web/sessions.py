"""Server-side sessions: the cookie holds only a random id, the data stays in memory.

Logging out deletes the server's record, so a copied cookie stops working;
a restart logs everyone out, which suits a single-office tool.
"""
from __future__ import annotations

import secrets
import threading
import time

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

IDLE_SECONDS = 12 * 3600


class ServerSession(CallbackDict, SessionMixin):
    def __init__(self, initial=None, sid: str | None = None, new: bool = False) -> None:
        def on_update(session):
            session.modified = True

        super().__init__(initial, on_update)
        self.sid = sid
        self.new = new
        self.modified = False


class MemorySessionInterface(SessionInterface):
    def __init__(self) -> None:
        self._store: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def open_session(self, app, request):
        sid = request.cookies.get(self.get_cookie_name(app))
        with self._lock:
            record = self._store.get(sid) if sid else None
            if record and time.time() - record[0] < IDLE_SECONDS:
                return ServerSession(dict(record[1]), sid=sid)
        return ServerSession(new=True)

    def save_session(self, app, session, response):
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        if not session:
            if session.sid:
                with self._lock:
                    self._store.pop(session.sid, None)
                response.delete_cookie(name, domain=domain, path=path)
            return
        if session.sid is None:
            session.sid = secrets.token_urlsafe(32)
        with self._lock:
            self._store[session.sid] = (time.time(), dict(session))
            self._expire()
        response.set_cookie(
            name, session.sid, httponly=True, samesite=app.config.get("SESSION_COOKIE_SAMESITE", "Lax"),
            secure=app.config.get("SESSION_COOKIE_SECURE", False), domain=domain, path=path,
        )

    def regenerate(self, session: ServerSession) -> None:
        """New id at login, so an id planted before login is worthless after it."""
        with self._lock:
            if session.sid:
                self._store.pop(session.sid, None)
        session.sid = None

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, (seen, _) in self._store.items() if now - seen >= IDLE_SECONDS]:
            del self._store[sid]
