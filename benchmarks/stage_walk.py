"""How far a stage reaches back up the pipeline: follow ``profile`` through the stage functions' calls.

Reads ``vstain/stages/*.py`` with ``ast`` (nothing is imported or run) and walks the call graph of the
stage functions from one of them (default ``infer.run_inference``), following only calls that hand on
the profile (an argument that is ``profile`` or an expression of it, e.g. ``profile.name``). Every
path is walked (a function reached twice is walked twice; a path stops where it would call a function
already on it). Prints

* climbs: calls into a module earlier in the workflow than the caller's (dataset < resolver < register
  < train < infer and the stain command < the stages after inference): each is a stage reaching back for
  another stage's outputs, the resolver (:mod:`vstain.stages.upstream`) counted as the way back up;
* calls above the start: calls into functions of modules earlier in the workflow than the start's (the
  upstream work one stage would set going);
* re-entries: calls into a stage function the walk has already been in (rooms: the distinct functions).

    python benchmarks/stage_walk.py                      # from infer.run_inference
    python benchmarks/stage_walk.py evaluate.evaluate --paths
    python benchmarks/stage_walk.py --stages /elsewhere/vstain/stages   # another checkout (before / after)

The figures are counts of the code, not timings: they do not depend on the machine.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

STAGES = Path(__file__).resolve().parent.parent / "vstain" / "stages"
PACKAGE = "vstain.stages"

#: Workflow order of the stage modules (lower: earlier). The resolver sits just after the dataset: a stage that
#: calls it reaches back for earlier outputs; it reaches back to the dataset (made on demand) alone.
RANK = {"dataset": 0, "upstream": 0.5, "register": 1, "register_cases": 1, "train": 2, "infer": 3, "stain": 3,
        "evaluate": 4, "frc": 4, "volume": 4, "uncertainty": 4, "he": 4, "summary": 4, "sweep": 5}


def read_functions(folder: Path = STAGES) -> tuple[dict[tuple[str, str], ast.FunctionDef], dict[str, dict]]:
    """``(module, function) -> its definition`` and, per module, ``name -> (module, function or None)``."""
    functions: dict[tuple[str, str], ast.FunctionDef] = {}
    names: dict[str, dict[str, tuple[str, str | None]]] = {}
    for path in sorted(folder.glob("*.py")):
        module = path.stem
        tree = ast.parse(path.read_text(), str(path))
        scope: dict[str, tuple[str, str | None]] = {}
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                functions[module, node.name] = node
                scope[node.name] = (module, node.name)
            elif isinstance(node, ast.ImportFrom) and node.module == PACKAGE:
                for alias in node.names:  # from vstain.stages import upstream
                    scope[alias.asname or alias.name] = (alias.name, None)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE + "."):
                source = node.module.rsplit(".", 1)[1]
                for alias in node.names:
                    scope[alias.asname or alias.name] = (source, alias.name)
        names[module] = scope
    return functions, names


def resolve(names: dict[str, dict], module: str, function: str, seen: int = 0) -> tuple[str, str] | None:
    """Follow re-exports (``from vstain.stages.upstream import fold_pairs`` in train) to the defining module."""
    target = names.get(module, {}).get(function)
    if target is None or target[1] is None or seen > 10:
        return None
    if target == (module, function):
        return target
    return resolve(names, target[0], target[1], seen + 1) or None


def mentions_profile(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "profile" for n in ast.walk(node))


def calls_with_profile(function: ast.FunctionDef, module: str, names: dict[str, dict]) -> list[tuple[str, str]]:
    """The stage functions ``function`` calls with the profile among the arguments, in source order."""
    out = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        arguments = list(node.args) + [k.value for k in node.keywords]
        if not any(mentions_profile(a) for a in arguments):
            continue
        target = None
        if isinstance(node.func, ast.Name):
            target = resolve(names, module, node.func.id)
        elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            holder = names.get(module, {}).get(node.func.value.id)
            if holder is not None and holder[1] is None:  # upstream.selected_checkpoint(...)
                target = resolve(names, holder[0], node.func.attr)
        if target is not None:
            out.append((node.lineno, target))
    return [target for _, target in sorted(out)]


def walk(start: tuple[str, str], functions: dict, names: dict) -> dict:
    """Every path of profile-carrying calls from ``start``: climbs, re-entries and the paths themselves."""
    climbs: Counter = Counter()
    above = 0  # calls into functions of modules earlier than the start's
    visits: Counter = Counter({start: 1})
    paths: list[list[tuple[str, str]]] = []
    edges = 0

    def visit(node: tuple[str, str], path: list[tuple[str, str]]) -> None:
        nonlocal edges, above
        callees = [c for c in calls_with_profile(functions[node], node[0], names) if c in functions]
        if not any(c not in path for c in callees):
            paths.append(path)
        for callee in callees:
            if callee in path:
                continue
            edges += 1
            above += RANK.get(callee[0], 4) < RANK.get(start[0], 4)
            if callee[0] != node[0] and RANK.get(callee[0], 4) < RANK.get(node[0], 4):
                climbs[node[0], callee[0]] += 1
            visits[callee] += 1
            visit(callee, path + [callee])

    visit(start, [start])
    return {"edges": edges, "above": above, "climbs": climbs, "visits": visits, "paths": paths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", nargs="?", default="infer.run_inference",
                        help="module.function (default: %(default)s)")
    parser.add_argument("--paths", action="store_true", help="print every path")
    parser.add_argument("--stages", type=Path, default=STAGES, help="the stages folder (default: this checkout's)")
    args = parser.parse_args(argv)
    functions, names = read_functions(args.stages)
    start = tuple(args.start.split(".", 1))
    if start not in functions:
        parser.error(f"no stage function {args.start}")
    result = walk(start, functions, names)
    rooms = result["visits"]
    re_entries = sum(n - 1 for n in rooms.values())
    print(f"following profile from stages/{start[0]}.{start[1]}: {result['edges']} calls, "
          f"{sum(result['climbs'].values())} climbs back up, {result['above']} calls above {start[0]}, "
          f"{re_entries} re-entries ({len(rooms)} rooms)")
    for (caller, callee), n in sorted(result["climbs"].items()):
        print(f"  climb {caller:>11s} -> {callee:<10s} x{n}")
    for (module, function), n in sorted(rooms.items(), key=lambda item: -item[1]):
        if n > 1:
            print(f"  re-entered {module}.{function} x{n - 1}")
    if args.paths:
        for path in result["paths"]:
            print("  " + " -> ".join(f"{m}.{f}" for m, f in path))
    return 0


if __name__ == "__main__":
    sys.exit(main())  # python benchmarks/stage_walk.py | head: fine, the output is short
