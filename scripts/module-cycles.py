#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Usage: scripts/module-cycles.py CRATE_SRC...   (e.g. crates/train/src)

A module is a file under CRATE_SRC (`a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`); it imports
module M when it names `crate::M` (or `super::M` for a sibling) outside comments. Test modules
(`tests.rs`) are left out: they may use everything. Prints each circle found and exits 1.
"""
import pathlib
import re
import sys


def module_name(src: pathlib.Path, path: pathlib.Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    if parts in (["lib"], ["main"]):
        return ""
    return "::".join(parts)


def imports(text: str, name: str, modules: set) -> set:
    text = re.sub(r"//[^\n]*", "", text)
    found = set()
    parent = name.rsplit("::", 1)[0] if "::" in name else ""
    for prefix, path in re.findall(r"\b(crate|super)::((?:\w+::)*\w+)", text):
        base = path if prefix == "crate" else (f"{parent}::{path}" if parent else path)
        parts = base.split("::")
        # The longest module path that the named item lives in.
        for end in range(len(parts), 0, -1):
            candidate = "::".join(parts[:end])
            if candidate in modules:
                found.add(candidate)
                break
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        for item in re.split(r"[,\s]+", group):
            head = item.split("::")[0]
            if head in modules:
                found.add(head)
    found.discard(name)
    # A module may use its own children and parents freely.
    return {m for m in found if not m.startswith(name + "::") and not name.startswith(m + "::")}


def cycles(src: pathlib.Path) -> list:
    files = [p for p in src.rglob("*.rs") if p.name != "tests.rs"]
    names = {module_name(src, p): p for p in files}
    modules = set(names) - {""}
    graph = {n: imports(p.read_text(), n, modules) for n, p in names.items() if n}
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


def main() -> int:
    bad = 0
    for arg in sys.argv[1:]:
        for circle in cycles(pathlib.Path(arg)):
            print(f"{arg}: import circle: {' -> '.join(circle)}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
