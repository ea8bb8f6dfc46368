#!/usr/bin/env python3
"""Fails when modules of src/ import each other in a circle.

Each `crate::a::b` path (in `use` lines and in code) is an arrow from the file's module to
the module it names, at two levels: between top-level modules (`config` -> `sources`) and
between the children of one module (`sources::google` -> `sources::http`). Tests
(`#[cfg(test)] mod tests` to the end of a file) are left out: a test may look anywhere.
`super::` paths are resolved against the file's own module; comments and doc links are not
arrows. Prints every circle found.

    python3 scripts/module-arrows.py [src]
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def module_of(src: Path, f: Path) -> list[str]:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def arrows(src: Path):
    for f in sorted(src.rglob("*.rs")):
        me = module_of(src, f)
        text = f.read_text()
        cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod tests", text, re.M)
        if cut:
            text = text[: cut.start()]
        # Doc links (`[`crate::once`]`) are no imports.
        text = re.sub(r"//.*", "", text)
        # Join `use crate::{a, b::c}` groups into the first segment only: enough for arrows.
        for m in PATH.finditer(text):
            root, rest = m.group(1), [p for p in m.group(2).split("::") if p]
            if root == "crate":
                target = rest
            else:
                # `super` from a file module `a/b.rs` (module a::b) is `a`; from `a/b/mod.rs`
                # (also a::b) it is `a` too.
                target = me[:-1] + rest
            yield me, target


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    known = {tuple(module_of(src, f)) for f in src.rglob("*.rs")}
    levels: dict[str, dict[str, set[str]]] = {}
    for me, target in arrows(src):
        # Keep the longest prefix of the path that is a module of ours (a path may end in
        # an item: crate::sources::ecr::EcrConfig).
        while target and tuple(target) not in known:
            target = target[:-1]
        if not target or not me:
            continue
        # Top level.
        if me[0] != target[0]:
            levels.setdefault("crate", {}).setdefault(me[0], set()).add(target[0])
        # Children of one parent.
        depth = 0
        while depth + 1 < len(me) and depth + 1 < len(target) and me[depth] == target[depth]:
            depth += 1
            parent = "::".join(me[:depth])
            a, b = me[depth], target[depth]
            if a != b:
                levels.setdefault(parent, {}).setdefault(a, set()).add(b)
                break
    found = 0
    for parent, edges in sorted(levels.items()):
        for c in circles(edges):
            found += 1
            print(f"import circle in {parent}: {' <-> '.join(c)}")
    n = sum(len(t) for e in levels.values() for t in e.values())
    print(f"{n} arrows between modules, {found} circle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
