"""Downloading model weights: every source of a network in turn, each verified, resumable.

A source is taken only when its bytes hash to what the source promises (a pinned
SHA-256, or the one the Hub reports for the file), and only when the file then
loads as the network it claims to be.  A transfer that breaks off resumes from its
`.part` file with an HTTP range request; nothing lands under the final name before
it is verified.  Proxies come from the standard environment variables (urllib's
own handling of http_proxy / https_proxy / no_proxy).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from http.client import HTTPException
from pathlib import Path
from typing import Callable, Iterable, Protocol

from features.files import atomic_write
from features.weights import WeightsSource, WeightsSpec

MIRROR_ENV = "LOOKALIKE_WEIGHTS_MIRROR"
PROVENANCE = "sources.json"
BLOCK = 1 << 20
TIMEOUT_SECONDS = 60
# A transfer that breaks off is resumed this many times before the next source is tried.
RESUMES = 3
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


class Progress(Protocol):
    def update(self, done: int) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[str, int | None, int], Progress]  # (what, total bytes, bytes already there)
LoadCheck = Callable[[WeightsSpec, Path], None]  # raises ValueError if the file is not the network


class SourceFailed(Exception):
    """This source could not give a verified file; the message is one line for the user."""


class Interrupted(SourceFailed):
    """The transfer broke off; what arrived is kept in the .part file."""


class ModelsFolderUnwritable(OSError):
    """The models folder cannot take the file (full disk, no permission): no source can help."""


@dataclass
class FetchFailed(RuntimeError):
    """Every source of some network failed: what was tried, why, and the way by hand."""

    attempts: dict[str, list[str]] = field(default_factory=dict)  # network -> one line per source
    specs: list[WeightsSpec] = field(default_factory=list)

    def __str__(self) -> str:
        lines = []
        for spec in self.specs:
            lines.append(f"{spec.name}: no source gave a verified file")
            lines += [f"  {line}" for line in self.attempts.get(spec.name, [])]
        return "\n".join(lines + ["", manual_route(self.specs)])


def manual_route(specs: Iterable[WeightsSpec]) -> str:
    """What to do by hand when no download works."""
    lines = ["To install the weights by hand: download one of these files in a browser (any machine),"]
    for spec in specs:
        lines.append(f"  {spec.description}:")
        lines += [f"    {source.url}" for source in spec.sources]
    lines.append("then run: python image.py models import FILE")
    return "\n".join(lines)


def fetch(models_dir: Path, specs: Iterable[WeightsSpec], check: LoadCheck, present: Callable[[WeightsSpec], bool],
          progress: ProgressFactory | None = None, report: Callable[[str], None] = lambda line: None,
          mirror: str | None = None) -> list[str]:
    """Fetch every network in `specs` that is not `present`; returns the names fetched.

    `report` receives one line per source that failed.  Raises FetchFailed, after
    trying every network, when some had no working source."""
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelsFolderUnwritable(f"cannot create the models folder {models_dir}: {exc.strerror or exc}") from exc
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    fetched, failed = [], FetchFailed()
    for spec in specs:
        if present(spec):
            continue
        tried = []
        for source in sources_for(spec, mirror):
            try:
                path = _download(source, models_dir / f"{spec.stem}{source.suffix}", progress, spec.name)
                _accept(spec, source, path, check, models_dir)
            except SourceFailed as exc:
                line = f"{source.label} ({source.url}): {exc}"
                tried.append(line)
                report(f"{spec.name}: {line}")
                continue
            fetched.append(spec.name)
            break
        else:
            failed.attempts[spec.name] = tried
            failed.specs.append(spec)
    if failed.specs:
        raise failed
    return fetched


def sources_for(spec: WeightsSpec, mirror: str | None) -> list[WeightsSource]:
    """The mirror's copies first (each verified like the original), then the sources themselves.

    A source vouched for only by the Hub's report has nothing to check a mirror's copy
    against, so it has no mirror copy."""
    mirrored = []
    if mirror:
        base = mirror.rstrip("/")
        for source in spec.sources:
            if source.sha256 is None:
                continue
            where = base + "/" + source.file_name if re.match(r"^https?://", base) else str(Path(base) / source.file_name)
            mirrored.append(replace(source, label=f"mirror ({source.label})", url=where, reports_sha256=False))
    return mirrored + list(spec.sources)


def _accept(spec: WeightsSpec, source: WeightsSource, path: Path, check: LoadCheck, models_dir: Path) -> None:
    """Load the verified file as the network; refuse it (and remove it) if it is not one."""
    try:
        check(spec, path)
    except Exception as exc:  # any failure to load means the file is not usable
        path.unlink(missing_ok=True)
        raise SourceFailed(f"the file does not load as {spec.description}: {exc}") from exc
    for suffix in spec.suffixes:  # one file per network: the loader would take the first it finds
        other = models_dir / f"{spec.stem}{suffix}"
        if other != path:
            other.unlink(missing_ok=True)
    record_source(models_dir, spec.name, source.label, source.url)


def record_source(models_dir: Path, network: str, label: str, url: str | None = None) -> None:
    """Where a network's file came from, for `models status` (informative only: trust is
    decided by hashing, never by this file)."""
    known = read_sources(models_dir)
    known[network] = {"source": label, **({"url": url} if url else {})}
    atomic_write(models_dir / PROVENANCE, json.dumps(known, indent=1))


def read_sources(models_dir: Path) -> dict:
    try:
        known = json.loads((models_dir / PROVENANCE).read_text())
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}


def _download(source: WeightsSource, target: Path, progress: ProgressFactory | None, name: str) -> Path:
    partial = target.with_name(target.name + ".part")
    for attempt in range(RESUMES + 1):
        try:
            if not re.match(r"^https?://", source.url):
                return _copy_local(source, Path(source.url), target, partial)
            return _transfer(source, target, partial, progress, name)
        except Interrupted:
            if attempt == RESUMES:
                raise
    raise AssertionError("unreachable")


def _copy_local(source: WeightsSource, origin: Path, target: Path, partial: Path) -> Path:
    if not origin.is_file():
        raise SourceFailed("no such file in the mirror folder")
    digest = hashlib.sha256()
    with origin.open("rb") as stream, _writing(partial, append=False) as out:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)
            _write(out, block, partial)
    return _finish(source, digest.hexdigest(), source.sha256, partial, target)


def _transfer(source: WeightsSource, target: Path, partial: Path, progress: ProgressFactory | None, name: str) -> Path:
    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"User-Agent": "lookalike-weights-fetch", **({"Range": f"bytes={offset}-"} if offset else {})}
    redirects = _RecordingRedirects()
    opener = urllib.request.build_opener(redirects)
    try:
        response = opener.open(urllib.request.Request(source.url, headers=headers), timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part is longer than the file: start again
            partial.unlink()
            raise Interrupted("the partial download did not fit the file; starting again") from exc
        raise SourceFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceFailed(f"unreachable: {reason}") from exc
    with response:
        reported = _reported_sha256([*redirects.headers, response.headers]) if source.reports_sha256 else None
        if source.reports_sha256 and reported is None:
            raise SourceFailed("the server reported no SHA-256 for the file, so it cannot be verified")
        if source.sha256 and reported and not reported.startswith(source.sha256):
            raise SourceFailed(f"the server reports SHA-256 {reported[:12]}..., not the pinned {source.sha256[:12]}...")
        resumed = offset > 0 and response.status == 206
        digest = _hash_of(partial) if resumed else hashlib.sha256()
        length = response.headers.get("Content-Length")
        total = (int(length) + (offset if resumed else 0)) if length else None
        bar = progress(f"{name}: {source.label}", total, offset if resumed else 0) if progress else None
        done = offset if resumed else 0
        try:
            with _writing(partial, append=resumed) as out:
                while True:
                    try:
                        block = response.read(BLOCK)
                    except (OSError, HTTPException) as exc:
                        raise Interrupted(f"the transfer broke off after {done} bytes: {exc}") from exc
                    if not block:
                        break
                    _write(out, block, partial)
                    digest.update(block)
                    done += len(block)
                    if bar:
                        bar.update(done)
        finally:
            if bar:
                bar.close()
        if total is not None and done < total:
            raise Interrupted(f"the transfer broke off after {done} of {total} bytes")
    return _finish(source, digest.hexdigest(), source.sha256 or reported, partial, target)


def _finish(source: WeightsSource, digest: str, expected: str | None, partial: Path, target: Path) -> Path:
    if expected is None or not digest.startswith(expected):
        partial.unlink(missing_ok=True)
        raise SourceFailed(f"SHA-256 {digest[:12]}... does not match the expected {str(expected)[:12]}...; "
                           "download discarded")
    os.replace(partial, target)
    return target


class _writing:
    """The .part file opened for writing, with an unwritable folder named as such."""

    def __init__(self, partial: Path, append: bool) -> None:
        self.partial, self.append = partial, append

    def __enter__(self):
        try:
            self.stream = self.partial.open("ab" if self.append else "wb")
        except OSError as exc:
            raise ModelsFolderUnwritable(
                f"cannot write {self.partial.name} in {self.partial.parent}: {exc.strerror or exc}") from exc
        return self.stream

    def __exit__(self, *exc) -> None:
        self.stream.close()


def _write(out, block: bytes, partial: Path) -> None:
    try:
        out.write(block)
    except OSError as exc:  # a full disk: the part stays for a resume once there is room
        raise ModelsFolderUnwritable(
            f"cannot write {partial.name} in {partial.parent}: {exc.strerror or exc}") from exc


def _hash_of(path: Path) -> "hashlib._Hash":
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(BLOCK), b""):
            digest.update(block)
    return digest


class _RecordingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, keeping each hop's headers: the Hub reports a
    file's SHA-256 (X-Linked-Etag) on the redirect to its storage, not on the file."""

    def __init__(self) -> None:
        self.headers: list = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)  # urllib carries the Range header over to the new request
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _reported_sha256(header_sets: list) -> str | None:
    for headers in header_sets:
        for name in ("X-Linked-Etag", "ETag"):
            match = _SHA256.match((headers.get(name) or "").strip())
            if match:
                return match.group(1)
    return None

