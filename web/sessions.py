"""Server-side sessions: the cookie holds only a random id, the data stays in memory.

Only a logged-in session is ever stored, so anonymous requests cannot grow the
store.  Logging out deletes the server's record and revokes its id: a request
that was in flight at logout cannot bring the record back when it finishes.
A restart logs everyone out, which suits a single-office tool.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

IDLE_SECONDS = 12 * 3600
# More than any office has browsers; beyond it the least recently used session goes.
MAX_SESSIONS = 10_000
# Expired records are swept at most this often, never walked on every request.
SWEEP_SECONDS = 60.0


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
        self._store: OrderedDict[str, tuple[float, dict]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    def __len__(self) -> int:
        return len(self._store)

    def open_session(self, app, request):
        sid = request.cookies.get(self.get_cookie_name(app))
        with self._lock:
            record = self._store.get(sid) if sid else None
            if record and time.time() - record[0] < IDLE_SECONDS:
                return ServerSession(dict(record[1]), sid=sid)
        return ServerSession(new=True)

    def save_session(self, app, session, response):
        name, domain, path = self.get_cookie_name(app), self.get_cookie_domain(app), self.get_cookie_path(app)
        if not session.get("user"):
            # Logged out, or never logged in: nothing is kept for it.
            if session.sid:
                with self._lock:
                    self._store.pop(session.sid, None)
                response.delete_cookie(name, domain=domain, path=path)
            return
        with self._lock:
            if session.sid is not None and session.sid not in self._store:
                return  # revoked (logout, expiry) while this request ran: never re-created
            if session.sid is None:
                session.sid = secrets.token_urlsafe(32)
            self._store[session.sid] = (time.time(), dict(session))
            self._store.move_to_end(session.sid)
            self._trim()
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

    def _trim(self) -> None:
        while len(self._store) > MAX_SESSIONS:
            self._store.popitem(last=False)
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_SECONDS
        cutoff = time.time() - IDLE_SECONDS
        # Oldest first: stop at the first record still in use.
        while self._store and next(iter(self._store.values()))[0] < cutoff:
            self._store.popitem(last=False)
