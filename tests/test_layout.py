"""The house plan, measured from the code's own imports (every `import`, also inside functions).

Rooms are the top-level modules and packages of `propensity`. Stages meet only through storage,
so no stage imports another; the shared model kernel and the registry stand beneath them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import propensity

SRC = Path(propensity.__file__).parent
STAGES = {"events", "histories", "training", "scoring", "monitoring", "explain"}
MAX_FLOORS = 8


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "propensity" and len(parts) > 1 else None


def room_imports() -> dict[str, set[str]]:
    """room -> the other rooms it imports."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        room = rel.parts[0]
        if room == "__init__":
            continue
        deps = graph.setdefault(room, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                other = _room(name)
                is_room = other and ((SRC / other).is_dir() or (SRC / f"{other}.py").exists())
                if is_room and other != room:
                    deps.add(other)
    return graph


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 0 for a room importing no other, else 1 + its highest import's."""

    @cache
    def floor(room: str, path: tuple[str, ...] = ()) -> int:
        assert room not in path, f"import cycle: {' -> '.join((*path, room))}"
        deps = graph.get(room, set())
        return 1 + max((floor(d, (*path, room)) for d in deps), default=-1)

    return {room: floor(room) for room in graph}


def test_no_stage_imports_another_stage():
    graph = room_imports()
    crossings = {s: graph[s] & STAGES for s in STAGES if graph[s] & STAGES}
    assert not crossings, f"stages importing stages: {crossings}"


def test_the_kernel_and_the_registry_stand_beneath_every_stage():
    graph = room_imports()
    assert not graph["model"] & (STAGES | {"registry", "cycle", "cli"}), graph["model"]
    assert not graph["registry"] & (STAGES | {"cycle", "cli"}), graph["registry"]
    assert "training" not in graph["registry"]
    for stage in STAGES:
        assert "cycle" not in graph[stage] and "cli" not in graph[stage], stage


def test_the_cycle_calls_jobs_not_command_modules():
    for path in (SRC / "cycle").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[1:2] \
                    and node.module.split(".")[1] in STAGES:
                assert not node.module.endswith("commands"), f"{path.name}: {node.module}"
                assert "commands" not in {a.name for a in node.names}, f"{path.name}: {node.module}"


def test_at_most_eight_floors_and_no_cycle():
    levels = floors(room_imports())
    assert max(levels.values()) + 1 <= MAX_FLOORS, sorted(levels.items(), key=lambda kv: kv[1])
