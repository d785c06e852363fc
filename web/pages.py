"""HTML pages: the search page (everything else is the JSON API it calls)."""
from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    engine = current_app.extensions["engine"]
    config = current_app.config["LOOKALIKE"]
    return render_template("index.html", status=engine.status(), top_k=config.top_k, weights=config.weights)
