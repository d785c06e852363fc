"""The layers a newcomer relies on: web/ over the engine's front door over features/."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: str) -> dict[str, set[str]]:
    """For each module of the package, the modules it imports (at any depth of its code)."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_web_layer_uses_only_the_engines_front_door():
    reaching_in = {module: sorted(n for n in names if n.startswith("engine.") and n.split(".")[1] not in
                                  ("Engine", "Config", "ReindexRunning", "TextSearchUnavailable", "UnreadableImage",
                                   "parse_weights", "atomic_write", "CalibrationRunning", "StoreError"))
                   for module, names in imported_modules("web").items()}
    assert {m: n for m, n in reaching_in.items() if n} == {}
    assert not any(n.startswith("features") for names in imported_modules("web").values() for n in names)


def test_no_import_runs_back_up_the_layers():
    for package, above in (("features", ("engine", "web", "image")), ("engine", ("web", "image"))):
        for module, names in imported_modules(package).items():
            upward = sorted(n for n in names if n.split(".")[0] in above)
            assert not upward, f"{module} imports {upward}"


def test_what_the_front_door_exports_exists():
    import engine

    for name in engine.__all__:
        assert getattr(engine, name) is not None
