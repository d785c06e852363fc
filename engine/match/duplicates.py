"""Every duplicate group in the library: neighbours from FAISS, confirmed, joined.

Each image asks the fused index for its nearest neighbours (not an all-pairs
loop), the local index for images sharing its points, and the thumbprints for
twins; a pair above the candidate threshold is confirmed by the same verdict
rules as a search (geometric verification, twin thumbprints, or a fused score
above the duplicate threshold), judged from both sides.  Confirmed pairs are
joined into connected components.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from engine.index.neighbours import library_vectors
from engine.match.judge import Evidence, compares_drawing, drawing_of, judge
from engine.index.snapshot import Snapshot
from engine.index.store import Entry
from engine.images.uploads import UPLOAD_FOLDER
from engine.match.verdict import DUPLICATE, EXACT, VERDICT_ORDER, support, verified
from engine.match.verify import MIN_MATCHES, NONE, TWIN_CORRELATION, Points, twin_checks, verify_all, view_queries
from features import thumbprint

NEIGHBOURS = 10
# Points per image asked of the local index in the library-wide pass (a search uses all):
# ORB keeps the strongest first, and a copy shares far more than this many.
LIBRARY_POINTS = 250
# ... and of the mirror image: a mirrored copy is one edit among many and is looked for from
# both sides, each with its own mirror image.  bench/duplicates_peers.py: the pass 1.3x
# faster than with 250, one draw of four two pairs short, the others unchanged.
LIBRARY_MIRROR_POINTS = 125
# Rows whose points are looked up in the local index in one search.
MATCH_BLOCK = 64
# Pairs below this fused score are not even verified.
CANDIDATE_SCORE = 0.5
# The report is computed once from this floor; any threshold above it is then a quick filter.
FLOOR_SCORE = 0.3
# Rows whose neighbours' exact scores are computed at once: rows x k x dim in one go is gigabytes.
SCORE_SLICE = 1024
# Content areas within this share of the largest are the same size, as far as previews tell.
SAME_AREA = 0.95

# Preview pixels darker than this are the design's ink (previews are flattened on white).
INK_LEVEL = 245


@dataclass
class Pair:
    a: str
    b: str
    score: float
    verdict: str
    inliers: int
    verified: bool = False  # confirmed by local features, whatever the fused score

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "score": round(self.score, 6), "verdict": self.verdict, "inliers": self.inliers}


@dataclass
class Group:
    paths: list[str]
    pairs: list[Pair] = field(default_factory=list)
    keep: str = ""

    def as_dict(self) -> dict:
        return {"paths": self.paths, "pairs": [p.as_dict() for p in self.pairs], "keep": self.keep}


# Grey preview of an indexed image (by row), or None where there is none.
Previews = Callable[[int], "np.ndarray | None"]


def find_groups(snapshot: Snapshot, threshold: float = CANDIDATE_SCORE, neighbours: int = NEIGHBOURS,
                previews: Previews | None = None) -> list[Group]:
    """Groups of two or more images that are copies of each other, largest first."""
    return group_pairs(snapshot, find_pairs(snapshot, threshold, neighbours, previews), threshold, previews)


def find_pairs(snapshot: Snapshot, floor: float = CANDIDATE_SCORE, neighbours: int = NEIGHBOURS,
               previews: Previews | None = None) -> list[tuple[int, int, Pair]]:
    """Every confirmed pair whose neighbours were checked from fused score `floor` up (the slow part).

    With `previews`, local-feature points and twin thumbprints count only when
    the two pictures' edges agree once aligned (engine/match/agreement.py): template
    siblings share points too; and a few points whose drawings coincide count.
    Without them the other rules (fused score) still apply."""
    if snapshot.size < 2 or not snapshot.features:
        return []
    return _confirmed_pairs(snapshot, floor, min(neighbours + 1, snapshot.size), previews)


def group_pairs(snapshot: Snapshot, pairs: list[tuple[int, int, Pair]], threshold: float,
                previews: Previews | None = None) -> list[Group]:
    """Connected components of the pairs that hold at `threshold` (fast: no search, no verification)."""
    pairs = [p for p in pairs if p[2].verified or p[2].score >= threshold]
    parent = list(range(snapshot.size))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in {i for pair in pairs for i in pair[:2]}:
        members.setdefault(root(i), []).append(i)
    entries = snapshot.data.entries
    groups = []
    for rows in members.values():
        rows.sort(key=lambda r: entries[r].path)
        inside = set(rows)
        measure = None
        if previews is not None:
            row_of = {entries[r].path: r for r in rows}
            measure = lambda e, area=content_area(previews): area(row_of[e.path], e)  # noqa: E731
        group = Group(paths=[entries[r].path for r in rows], keep=suggest_keeper([entries[r] for r in rows], measure))
        group.pairs = [pair for i, j, pair in pairs if i in inside]
        groups.append(group)
    groups.sort(key=lambda g: (-len(g.paths), g.paths[0]))
    return groups


def _confirmed_pairs(snapshot: Snapshot, threshold: float, k: int, previews: Previews | None) -> list[tuple[int, int, Pair]]:
    """Pairs of rows confirmed as copies, each pair once."""
    data = snapshot.data
    fused = snapshot.fused_rows()
    # A store (Milvus) answers the library's own rows as it answers searches.
    _, rows = (snapshot.index if snapshot.in_store else library_vectors(fused)).search(fused, k)
    # Exact scores for the neighbours found (the large-library index stores 8-bit codes).
    scores = np.empty(rows.shape, dtype=np.float32)
    for start in range(0, len(rows), SCORE_SLICE):
        block = rows[start:start + SCORE_SLICE]
        scores[start:start + SCORE_SLICE] = np.einsum("ij,ikj->ik", fused[start:start + SCORE_SLICE],
                                                      fused[np.maximum(block, 0)])
    twin_rows = _twin_neighbours(snapshot, k)
    # Each pair is judged from both sides: a crop's own points find its original
    # when the original's strongest points (elsewhere in the picture) do not.
    confirmed: dict[tuple[int, int], Pair] = {}
    local_matches = _local_matches(snapshot)
    for i in range(snapshot.size):
        candidates = {int(j): float(s) for s, j in zip(scores[i], rows[i]) if j >= 0 and j != i and s >= threshold}
        checks = {}
        points, found = next(local_matches)
        if points is not None:
            # Local features also find copies whose colours or framing changed.
            checks = verify_all(points, snapshot.local, exclude=i, found=found)
            for j, check in checks.items():
                # Support short of verification is weighed too when the drawings can be compared.
                if (verified(check) or (previews is not None and support(check) > 0)) and j not in candidates:
                    candidates[j] = float(fused[i] @ fused[j])
        for j in twin_rows.get(i, ()):
            candidates.setdefault(j, float(fused[i] @ fused[j]))
        twins = _twins(snapshot, i, list(candidates))
        for j, score in candidates.items():
            key = (min(i, j), max(i, j))
            cosines = {n: float(data.vectors[n][i] @ data.vectors[n][j]) for n in snapshot.features}
            check = replace(checks.get(j, NONE), twin=twins.get(j, 0.0))
            first, second = data.entries[i], data.entries[j]
            sizes = (first.width, first.height), (second.width, second.height)
            evidence = Evidence(cosines, score, check, first.sha256 == second.sha256, sizes[0] == sizes[1],
                                snapshot.score_networks)
            known = confirmed.get(key)
            if known is not None and not _may_upgrade(known, evidence, snapshot):
                continue  # confirmed from the other side already: its drawings need no second look
            if previews is not None and compares_drawing(check):
                evidence = evidence._replace(drawing=drawing_of(check, previews(i), sizes[0], previews(j), sizes[1]))
            label, check, confirmed_by_points, _ = judge(evidence, snapshot.thresholds)
            if label not in (EXACT, DUPLICATE):
                continue
            pair = Pair(data.entries[key[0]].path, data.entries[key[1]].path, score, label, check.inliers,
                        confirmed_by_points)
            if known is None or (VERDICT_ORDER[label], -check.inliers) < (VERDICT_ORDER[known.verdict], -known.inliers):
                confirmed[key] = pair
    return [(i, j, pair) for (i, j), pair in confirmed.items()]


def _may_upgrade(known: Pair, evidence: Evidence, snapshot: Snapshot) -> bool:
    """Whether a pair confirmed from one side can be judged better from the other: a pair
    confirmed by its fused score alone may be confirmed by points (which hold at any
    threshold), and an edited copy may turn out the same picture, which the rules must say
    without the drawings (comparing drawings takes points back or confirms a few; it never
    makes a pair `exact`).  Comparing drawings is most of the pass's cost after the lookups."""
    if not known.verified:
        return True
    return known.verdict != EXACT and judge(evidence, snapshot.thresholds).verdict == EXACT


def _twins(snapshot: Snapshot, row: int, candidates: list[int]) -> dict[int, float]:
    """The candidates whose thumbprint (and colours, when active) make them twins of `row`."""
    data = snapshot.data
    if snapshot.thumbprints is None or not candidates or not data.present["thumbprint"][row]:
        return {}
    colours = data.vectors["hsv"] if "hsv" in snapshot.features else None
    return twin_checks(data.vectors["thumbprint"][row], snapshot.thumbprints, colours,
                       None if colours is None else colours[row], rows=candidates, inks=snapshot.inks)


def _local_matches(snapshot: Snapshot):
    """Row after row: the row's points and what the local index found for each view (None,
    None where it has no local features), asked of the index for MATCH_BLOCK rows at once."""
    data, local = snapshot.data, snapshot.local
    stored, mirror = data.vectors.get("orb"), data.vectors.get("orb_mirror")
    for start in range(0, snapshot.size, MATCH_BLOCK):
        block = []
        for i in range(start, min(start + MATCH_BLOCK, snapshot.size)):
            if local is None or not data.present["orb"][i]:
                block.append(None)
                continue
            mirrored = mirror[i] if mirror is not None and data.present["orb_mirror"][i] else None
            block.append(Points.of_row(stored[i], LIBRARY_POINTS, mirrored, LIBRARY_MIRROR_POINTS))
        asked = [q for points in block if points is not None for q in view_queries(points)]
        answers = iter(local.matches_many(asked, at_least=MIN_MATCHES) if asked else [])
        for points in block:
            yield (None, None) if points is None else (points, [next(answers) for _ in points.views])


def _twin_neighbours(snapshot: Snapshot, k: int) -> dict[int, list[int]]:
    """For each row, the rows whose thumbprints (as is or mirrored) may make twins.

    Among hundreds of stars or icons in one palette the fused neighbours are
    all lookalikes; a resized star's own twin is found by its thumbprint."""
    if snapshot.thumbprints is None:
        return {}
    units = np.ascontiguousarray(snapshot.thumbprints)
    flipped = np.ascontiguousarray(thumbprint.units(thumbprint.mirrored(snapshot.data.vectors["thumbprint"])))
    index = snapshot.thumbprint_index if snapshot.in_store else library_vectors(units)
    found: dict[int, list[int]] = {}
    for query in (units, flipped):
        _, rows = index.above(query, np.nextafter(np.float32(TWIN_CORRELATION), -1), k)
        for i in np.flatnonzero((rows >= 0).any(axis=1)):
            found.setdefault(int(i), []).extend(int(j) for j in rows[i] if j != i and j >= 0)
    return found


def suggest_keeper(entries: list[Entry], content_area: Callable[[Entry], float] | None = None) -> str:
    """The original, as far as the files tell: never a design added from the page
    (uploads/) over one already in the collection, then the largest content (the
    design's own extent, not its canvas: a copy pasted onto a bigger canvas is not
    larger; within 5%, measured on previews, counts as the same), then the oldest
    file, then the shortest path."""
    area = content_area or (lambda e: e.width * e.height)
    already_there = [e for e in entries if not e.path.startswith(UPLOAD_FOLDER + "/")] or entries
    areas = {e.path: area(e) for e in already_there}
    largest = max(areas.values())
    contenders = [e for e in already_there if areas[e.path] >= SAME_AREA * largest]
    return min(contenders, key=lambda e: (e.mtime_ns, len(e.path), e.path)).path


def content_area(previews: Previews) -> Callable[[int, Entry], float]:
    """The area of a design's drawn part in its own pixels, from its preview's ink.

    Ink, not its bounding box: turning a design on its canvas widens its box, not its ink."""
    def area(row: int, entry: Entry) -> float:
        preview = previews(row)
        if preview is None:
            return float(entry.width * entry.height)
        share = np.count_nonzero(preview < INK_LEVEL) / preview.size
        return float(share * entry.width * entry.height)

    return area


def to_csv(groups: list[Group]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "path", "suggestion"])
    for number, group in enumerate(groups, 1):
        for path in group.paths:
            writer.writerow([number, spreadsheet_safe(path), "keep" if path == group.keep else "copy"])
    return out.getvalue()


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: one starting with a formula character gets a
    leading apostrophe (OWASP's rule), so `=HYPERLINK(...).png` is never evaluated."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
