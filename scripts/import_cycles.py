#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

    scripts/import_cycles.py bins/worker/src engine/src

Each `.rs` file under a source folder is a module (`attempt/part.rs` is `attempt::part`,
`transcode/mod.rs` is `transcode`). A module depends on another when it names it by path —
`crate::a::b`, `super::b`, `self::b` — in a `use` line or in code. A module using its own
parent (`super::*`) or its own children is how Rust nests modules, not a circle; every other
circle is printed and makes the exit status 1. Comments and strings are not read.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def code_of(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def dependencies(module: tuple[str, ...], text: str, modules: set) -> set:
    found = set()
    for path in re.findall(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)", text):
        names = path.split("::")
        base = {"crate": (), "super": module[:-1], "self": module}[names[0]]
        rest = names[1:]
        while rest and rest[0] == "super":
            base, rest = base[:-1], rest[1:]
        target = base
        for name in rest:
            if target + (name,) in modules:
                target = target + (name,)
            else:
                break
        nested = target[: len(module)] == module or module[: len(target)] == target
        if target in modules and not nested:
            found.add(target)
    return found


def cycles(graph: dict) -> list:
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def main(folders) -> int:
    failed = False
    for folder in folders:
        src = Path(folder)
        files = {module_of(src, f): f for f in sorted(src.rglob("*.rs"))}
        modules = set(files)
        graph = {m: dependencies(m, code_of(f.read_text()), modules) for m, f in files.items()}
        for cycle in cycles(graph):
            failed = True
            print(f"{folder}: " + " -> ".join("::".join(m) or "crate" for m in cycle))
    if not failed:
        print(f"no import circles in {', '.join(folders)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["bins/worker/src", "engine/src"]))
