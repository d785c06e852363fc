"""HTML pages: search and duplicates (everything else is the JSON API they call)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    engine = current_app.extensions["engine"]
    config = current_app.config["LOOKALIKE"]
    return render_template("index.html", status=engine.status(), top_k=config.top_k, weights=config.weights)


@bp.get("/duplicates/view")
def duplicates():
    return render_template("duplicates.html", status=current_app.extensions["engine"].status())
