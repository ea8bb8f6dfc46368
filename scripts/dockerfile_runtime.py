#!/usr/bin/env python3
"""What the Dockerfile's runtime (last) stage declares, as JSON: user, entrypoint, exposed
ports, labels (ARG defaults substituted, overridable with --arg NAME=VALUE) and the base image.

scripts/build-image.sh builds the image's config from this, and tests/image/test_image.py
compares the built image with it, so the image made without Docker and the Dockerfile
cannot drift apart. Only the instructions the runtime stage uses are understood; any other
instruction there is an error, so a new one cannot be silently left out of the image.
"""
import argparse
import json
import re
import shlex
import sys

KNOWN = {"FROM", "ARG", "LABEL", "COPY", "USER", "EXPOSE", "ENTRYPOINT"}


def logical_lines(text):
    """Instructions with their continuation lines joined; comments and blanks dropped."""
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield (buf + line).strip()
        buf = ""
    if buf:
        yield buf.strip()


def substitute(value, env):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def runtime_stage(path, overrides):
    lines = list(logical_lines(open(path, encoding="utf-8").read()))
    global_args = {}
    stages = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stages.append([])
        if not stages:
            if word == "ARG":
                name, _, default = rest.partition("=")
                global_args[name] = overrides.get(name, default)
            continue
        stages[-1].append((word, rest.strip()))
    if not stages:
        sys.exit("no FROM in %s" % path)
    out = {"base": None, "user": None, "entrypoint": None, "exposed_ports": [], "labels": {}}
    env = {}
    for word, rest in stages[-1]:
        if word not in KNOWN:
            sys.exit("the runtime stage uses %s, which scripts/build-image.sh does not build" % word)
        if word == "FROM":
            base = [t for t in rest.split() if not t.startswith("--")][0]
            out["base"] = substitute(base, global_args)
        elif word == "ARG":
            name, _, default = rest.partition("=")
            env[name] = overrides.get(name, global_args.get(name, default))
        elif word == "LABEL":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                out["labels"][k] = substitute(v, env)
        elif word == "USER":
            out["user"] = substitute(rest, env)
        elif word == "EXPOSE":
            for p in rest.split():
                out["exposed_ports"].append(p if "/" in p else p + "/tcp")
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "COPY":
            out.setdefault("copies", []).append(rest.split()[-1])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("dockerfile")
    ap.add_argument("--arg", action="append", default=[], help="NAME=VALUE, as docker build --build-arg")
    a = ap.parse_args()
    overrides = dict(x.split("=", 1) for x in a.arg)
    json.dump(runtime_stage(a.dockerfile, overrides), sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
