"""HTML pages: search and duplicates (everything else is the JSON API they call)."""
from __future__ import annotations

from flask import Blueprint, render_template

from web.current import config, engine

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    settings = config()
    return render_template("index.html", status=engine().status(), top_k=settings.top_k, weights=settings.weights)


@bp.get("/duplicates/view")
def duplicates():
    return render_template("duplicates.html", status=engine().status())
