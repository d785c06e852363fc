"""JSON API: search, reindex, health, and the collection's images and thumbnails."""
from __future__ import annotations

import json
import time
from urllib.parse import quote

from flask import Blueprint, current_app, jsonify, request, send_file

from engine import CalibrationRunning, ReindexRunning, TextSearchUnavailable, UnreadableImage, parse_weights
from web.current import config, engine

bp = Blueprint("api", __name__)
MAX_TOP_K = 200
# CLIP reads 77 tokens; longer text only costs tokenising.
MAX_TEXT = 300
# A collection file may be replaced under its name; a preview is named by its bytes' hash.
IMAGE_CACHE_SECONDS = 300
THUMB_CACHE_SECONDS = 3600


def bad_request(message: str, status: int = 400):
    return jsonify(error=message), status


@bp.post("/search")
def search():
    upload = request.files.get("image")
    has_image = upload is not None and bool(upload.filename or upload.content_length)
    text = (request.form.get("text") or "").strip()
    if not has_image and not text:
        return bad_request("send the query image as multipart field 'image', or words as field 'text'")
    try:
        top_k = _top_k(request.form.get("top_k"))
        weights = _weights(request.form)
        text_weight = _fraction(request.form.get("text_weight"), 0.5, "text_weight")
    except ValueError as exc:
        return bad_request(str(exc))
    data = upload.read() if has_image else None  # in memory only: queries never touch the disk
    started = time.perf_counter()
    try:
        if text:
            results = engine().search_text(text[:MAX_TEXT], top_k, data, text_weight)
        else:
            results = engine().search_bytes(data, top_k, weights)
    except UnreadableImage as exc:
        return bad_request(f"not a usable image: {exc}")
    except TextSearchUnavailable as exc:
        return bad_request(str(exc))
    progress, snapshot = engine().progress.as_dict(), engine().snapshot
    return jsonify(
        results=[_with_urls(r.as_dict()) for r in results],
        features=list(snapshot.features),
        elapsed_ms=round(1000 * (time.perf_counter() - started), 1),
        # How many designs the answer covers, and the index being built meanwhile: a search
        # during the first index must not read as "nothing alike".
        searched=snapshot.size,
        indexing={k: progress[k] for k in ("done", "total")} if progress["running"] else None,
    )


@bp.post("/collection")
def add_images():
    """Add one or more designs (multipart field 'images'); reindex to make them searchable."""
    files = request.files.getlist("images")
    if not files:
        return bad_request("send the designs as multipart field 'images' (several allowed)")
    added = [engine().files.add_design(f.filename or "design", f.read()) for f in files]
    body = {"added": [a.path for a in added if a.path], "rejected": [{"name": a.name, "reason": a.error} for a in added if a.error]}
    return jsonify(body), (201 if body["added"] else 400)


@bp.post("/reindex")
def start_reindex():
    try:
        engine().start_reindex()
    except ReindexRunning:
        return jsonify(error="a reindex is already running", progress=engine().progress.as_dict()), 409
    return jsonify(status="started", progress=engine().progress.as_dict()), 202


@bp.post("/calibrate")
def start_calibration():
    """Choose the verdicts' thresholds on this collection, in the background."""
    try:
        engine().start_calibration()
    except CalibrationRunning:
        return jsonify(error="a calibration is already running", progress=engine().calibration.progress.as_dict()), 409
    return jsonify(status="started", progress=engine().calibration.progress.as_dict()), 202


@bp.get("/calibrate")
def calibration_progress():
    status = engine().status()
    return jsonify(status["calibration"] | {"verdicts": status["verdicts"]})


@bp.get("/reindex")
def reindex_progress():
    return jsonify(engine().progress.as_dict())


@bp.get("/health")
def health():
    status = engine().status()
    status["status"] = "degraded" if status["features_off"] or status["store"]["problem"] else "ok"
    return jsonify(status)


@bp.get("/duplicates")
def duplicates():
    return _duplicates(as_csv=request.args.get("format") == "csv")


@bp.get("/duplicates.csv")
def duplicates_csv():
    return _duplicates(as_csv=True)


def _duplicates(as_csv: bool):
    try:
        threshold = _threshold(request.args.get("threshold"))
    except ValueError as exc:
        return bad_request(str(exc))
    if as_csv:
        return _csv_download(engine().duplicates_csv(threshold))
    return jsonify(groups=[g.as_dict() for g in engine().duplicates(threshold)])


def _csv_download(text: str):
    return current_app.response_class(
        text, mimetype="text/csv", headers={"Content-Disposition": "attachment; filename=lookalike-duplicates.csv"}
    )


def _threshold(value: str | None) -> float | None:
    return _fraction(value, None, "threshold")


@bp.get("/image/<path:relative>")
def image(relative: str):
    found = engine().files.image_file(relative)
    if found is None:
        return bad_request("no such image in the collection", 404)
    path, mimetype = found
    return send_file(path, mimetype=mimetype, max_age=IMAGE_CACHE_SECONDS)


@bp.get("/thumb/<path:relative>")
def thumb(relative: str):
    path = engine().files.thumbnail(relative)
    if path is None:
        return image(relative)  # not indexed (yet): the image itself, if it is one
    return send_file(path, mimetype="image/jpeg", max_age=THUMB_CACHE_SECONDS)


def _with_urls(result: dict) -> dict:
    result["image_url"] = "/image/" + quote(result["path"])
    result["thumb_url"] = "/thumb/" + quote(result["path"])
    return result


def _top_k(value: str | None) -> int:
    if value in (None, ""):
        return config().top_k
    try:
        top_k = int(value)
    except ValueError:
        raise ValueError("top_k must be a whole number") from None
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}")
    return top_k


def _fraction(value: str | None, default: float, name: str) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number between 0 and 1") from None
    if not 0 <= number <= 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return number


def _weights(form) -> dict[str, float] | None:
    """'weights' as JSON or 'clip=0.5,...', or separate weight_clip / weight_resnet / weight_hsv fields."""
    if form.get("weights"):
        try:
            return parse_weights(form["weights"])
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"bad weights: {exc}") from None
    separate = {k[len("weight_"):]: v for k, v in form.items() if k.startswith("weight_") and v != ""}
    if not separate:
        return None
    try:
        return parse_weights(",".join(f"{k}={v}" for k, v in separate.items()))
    except ValueError as exc:
        raise ValueError(f"bad weights: {exc}") from None
