#!/usr/bin/env python3
"""Writes kubeconform schemas from a live API server's OpenAPI v2 document (offline stand-in
for the schema repository kubeconform downloads by default).

    openapi2jsonschema.py OPENAPI_V2_JSON OUT_DIR

One file per kind, named as kubeconform's `-schema-location 'OUT_DIR/{{.ResourceKind}}-{{.Group}}-{{.ResourceAPIVersion}}.json'`
expects; each holds the kind's definition plus every definition it references. Like
openapi2jsonschema --strict, objects with declared properties get additionalProperties: false,
and int-or-string / quantity formats accept both strings and numbers.
"""
import copy
import json
import os
import sys


def fix(node):
    if isinstance(node, dict):
        if node.get("format") in ("int-or-string", "quantity") or "x-kubernetes-int-or-string" in node:
            return {"oneOf": [{"type": "string"}, {"type": "number"}]}
        out = {k: fix(v) for k, v in node.items()}
        if "$ref" in out:
            out["$ref"] = out["$ref"]  # already "#/definitions/NAME"
        if "properties" in out and "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [fix(v) for v in node]
    return node


def refs(node, acc):
    if isinstance(node, dict):
        r = node.get("$ref")
        if isinstance(r, str) and r.startswith("#/definitions/"):
            acc.add(r[len("#/definitions/"):])
        for v in node.values():
            refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            refs(v, acc)


def main():
    doc = json.load(open(sys.argv[1]))
    out = sys.argv[2]
    os.makedirs(out, exist_ok=True)
    defs = {k: fix(v) for k, v in doc["definitions"].items()}
    n = 0
    for name, d in doc["definitions"].items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            # closure of referenced definitions
            need, todo = set(), [name]
            while todo:
                cur = todo.pop()
                if cur in need:
                    continue
                need.add(cur)
                acc = set()
                refs(defs[cur], acc)
                todo.extend(acc - need)
            schema = copy.deepcopy(defs[name])
            schema["definitions"] = {k: defs[k] for k in need}
            kind = gvk["kind"].lower()
            group = gvk["group"].split(".")[0] if gvk["group"] else ""
            fn = f"{kind}-{group}-{gvk['version']}.json" if group else f"{kind}-{gvk['version']}.json"
            with open(os.path.join(out, fn), "w") as f:
                json.dump(schema, f)
            n += 1
    print(f"wrote {n} schemas to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
