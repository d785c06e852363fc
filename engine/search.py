"""Rank the collection against one query's per-feature vectors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.snapshot import Snapshot, cosines
from engine.verdict import verdict
from features.fusion import fuse_query, normalize_weights

# FAISS candidates per requested result, before exact re-scoring under the query's weights.
OVERFETCH = 4


@dataclass(frozen=True)
class SearchResult:
    path: str
    score: float
    scores: dict[str, float | None]
    verdict: str
    sha256: str
    width: int
    height: int

    def as_dict(self) -> dict:
        return {
            "path": self.path, "score": round(self.score, 6),
            "scores": {k: (None if v is None else round(v, 6)) for k, v in self.scores.items()},
            "verdict": self.verdict, "width": self.width, "height": self.height,
        }


def rank(
    snapshot: Snapshot,
    query: Mapping[str, np.ndarray],
    top_k: int,
    weights: Mapping[str, float],
    all_features: tuple[str, ...],
    query_sha256: str | None = None,
) -> list[SearchResult]:
    """The top_k images by weighted mean cosine under the query's weights."""
    features = [n for n in snapshot.features if n in query and weights.get(n, 0) > 0]
    if not features or snapshot.size == 0 or top_k <= 0:
        return []
    shares = normalize_weights(weights, features)
    blocks = {n: query[n] if n in features else np.zeros(snapshot.data.vectors[n].shape[1], np.float32)
              for n in snapshot.features}
    vector = fuse_query(
        {n: blocks[n].reshape(1, -1) for n in snapshot.features},
        {n: shares.get(n, 0.0) for n in snapshot.features},
        snapshot.weights,
    )
    k = min(snapshot.size, max(top_k * OVERFETCH, 50))
    _, rows = snapshot.index.search(vector.reshape(1, -1), k)
    rows = rows[0][rows[0] >= 0]
    per_feature = cosines(snapshot, {n: query[n] for n in snapshot.features if n in query}, rows)
    fused = sum(shares[n] * per_feature[n] for n in features)
    order = np.argsort(-fused, kind="stable")[:top_k]
    results = []
    for j in order:
        entry = snapshot.data.entries[rows[j]]
        scores = {n: (float(per_feature[n][j]) if n in per_feature else None) for n in all_features}
        score = float(fused[j])
        results.append(SearchResult(
            path=entry.path, score=score, scores=scores,
            verdict=verdict({n: scores[n] for n in features}, score, entry.sha256 == query_sha256),
            sha256=entry.sha256, width=entry.width, height=entry.height,
        ))
    return results

