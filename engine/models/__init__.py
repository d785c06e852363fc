"""The networks: their weights files (where they are expected, fetching, importing,
which is which), building every extractor the registry lists, the bundled designs
their lower precision is checked on, and `Networks`, the engine's part that holds
the extractors and computes a query's features."""
from engine.models.build import check_loads, fetch, load_extractors
from engine.models.sample import calibration_id, calibration_sample, precision_sample
from engine.models.weights import HASH_MEMO, WeightsStatus, find_weights, identify, import_file, status

__all__ = [
    "HASH_MEMO", "WeightsStatus", "calibration_id", "calibration_sample", "check_loads", "fetch", "find_weights",
    "identify", "import_file", "load_extractors", "precision_sample", "status",
]
