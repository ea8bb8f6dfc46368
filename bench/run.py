#!/usr/bin/env python3
"""Benchmark: one refresh cycle across many namespaces, side by side with the kubectl
pipeline (baseline A) and the raw server-side-apply limit (baseline B), in one run on the same
API server and moto. Started by `make bench` inside a test world with the API server's audit
log on (REGCRED_WORLD_AUDIT=1), which is where request counts come from; token calls are
counted in moto's request log.

Writes bench/results/latest.json and prints a Markdown table with the ratios.
"""

import argparse
import base64
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ROOT / "target/release/regcred-refresher"
BASELINE_B = ROOT / "target/release/examples/bench_ssa"
WORLD = Path(os.environ.get("REGCRED_TEST_WORLD_DIR", "/nonexistent"))
AUDIT = WORLD / "logs/audit.log"
MOTO_LOG = WORLD / "logs/moto.log"
ACCOUNT = os.environ.get("REGCRED_TEST_AWS_ACCOUNT_ID", "123456789012")
ECR_HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
CONCURRENCY = 16
ALSO = []  # --also: more builds for --only heap|allocators


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class Window:
    """Counts API requests (from the audit log) and ECR token calls (moto's request log)
    made between start() and stop()."""

    def start(self):
        self.audit_at = AUDIT.stat().st_size
        self.moto_at = MOTO_LOG.stat().st_size
        return self

    def stop(self):
        time.sleep(0.3)  # the audit and moto logs are written after the response
        with open(AUDIT, "rb") as f:
            f.seek(self.audit_at)
            lines = f.read().decode().splitlines()
        kinds = {}
        for line in lines:
            ev = json.loads(line)
            user = ev.get("user", {}).get("username", "")
            if user.startswith("system:"):
                continue
            res = ev.get("objectRef", {}).get("resource", "-")
            key = f"{ev['verb']} {res}"
            kinds[key] = kinds.get(key, 0) + 1
        with open(MOTO_LOG, "rb") as f:
            f.seek(self.moto_at)
            tokens = sum(1 for l in f.read().decode().splitlines() if '"POST / HTTP' in l)
        writes = sum(v for k, v in kinds.items() if k.split()[0] in ("create", "patch", "update", "delete"))
        return {"requests": kinds, "total": sum(kinds.values()), "writes": writes, "token_calls": tokens}


def create_namespaces(prefix, n):
    docs = "".join(
        f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {prefix}{i}\n" for i in range(n)
    )
    subprocess.run(["kubectl", "create", "-f", "-"], input=docs, text=True, check=True, capture_output=True)


def timed_once(config, log_level="warn", wrap=(), env=None):
    """Wall time and peak RSS of one `--once` run, via /usr/bin/time -v (`wrap`: a profiler's
    command line before ours; `env`: extra environment, e.g. an allocator's LD_PRELOAD)."""
    t0 = time.monotonic()
    r = subprocess.run(
        ["/usr/bin/time", "-v", *wrap, str(OURS), "--once", "--config", config, "--log-level", log_level,
         "--concurrency", str(CONCURRENCY)],
        capture_output=True, text=True, env={**os.environ, **(env or {})},
    )
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"regcred-refresher --once failed ({r.returncode}):\n{r.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return {"seconds": round(wall, 3), "peak_rss_mib": round(rss_kb / 1024, 1)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode(errors="replace")


def metric(port, name):
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def api(method, path, body=None):
    """A request to the API server with curl (fast to start, admin identity)."""
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
            "--cacert", os.environ["REGCRED_TEST_CA_CERT"],
            "--cert", os.environ["REGCRED_TEST_ADMIN_CERT"], "--key", os.environ["REGCRED_TEST_ADMIN_KEY"],
            os.environ["REGCRED_TEST_API_SERVER"] + path]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return sh(*args).stdout


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def start_daemon(config, n, wrap=(), env=None):
    """Starts the daemon and waits for its first pass over N targets and 5 s of settling:
    (process, admin port, what the start cost). With `wrap` (a profiler) the RSS figures are
    the profiler's process, not ours."""
    port = free_port()
    w = Window().start()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*wrap, str(OURS), "--config", config, "--admin-addr", f"127.0.0.1:{port}", "--log-level", "warn",
         "--concurrency", str(CONCURRENCY)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if (metric(port, "regcred_cycle_duration_seconds_count") or 0) >= 1 and metric(port, "regcred_target_namespaces") == n:
                break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        proc.kill()
        sys.exit("daemon never finished its first cycle")
    first_pass = time.monotonic() - t0
    time.sleep(5)  # settle: watches established, first echoes reconciled
    return proc, port, {"rss_mib": round(status_kib(proc.pid, "VmRSS") / 1024, 1),
                        "peak_rss_mib": round(status_kib(proc.pid, "VmHWM") / 1024, 1),
                        "first_pass_seconds": round(first_pass, 3),
                        "start_counts": w.stop()}


def stop_daemon(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def daemon(config, prefix, n):
    """The daemon started over N namespaces that hold their secrets already (the `--once`
    cycles wrote them): its start (requests up to the end of the first pass and 5 s of
    settling), its memory, and how fast a new namespace gets its secret."""
    proc, _port, settled = start_daemon(config, n)
    try:
        # A new namespace: from the create request to the first 200 on its secret.
        latencies = []
        for k in range(5):
            name = f"{prefix}new{k}"
            t0 = time.monotonic()
            assert api("POST", "/api/v1/namespaces", {"metadata": {"name": name}}) == "201"
            while api("GET", f"/api/v1/namespaces/{name}/secrets/regcred") != "200":
                if time.monotonic() - t0 > 30:
                    sys.exit(f"{name} never got its secret")
                time.sleep(0.01)
            latencies.append(time.monotonic() - t0)
        settled["new_namespace_seconds"] = sorted(round(x, 3) for x in latencies)
        settled["new_namespace_median_seconds"] = sorted(latencies)[len(latencies) // 2]
        settled["peak_rss_after_mib"] = round(status_kib(proc.pid, "VmHWM") / 1024, 1)
        return settled
    finally:
        stop_daemon(proc)


def daemon_static(prefix, n, work):
    """A static source only (Docker Hub, Quay): its credentials are there before the namespace
    list is, the case where a start could look at a namespace twice. A first start creates
    the secrets, a second finds them."""
    pw = Path(work) / f"pw-static-{n}"
    pw.write_text("static-password")
    cfg = Path(work) / f"cfg-static-{n}.yaml"
    cfg.write_text(
        f"registries:\n  - name: quay\n    static: {{ server: quay.io, username: bench, passwordFile: {pw} }}\n"
        "secrets:\n  - name: regcred-static\n    registries: [quay]\n"
        # Not the namespaces the daemon phase added: the first pass counts exactly N.
        f"namespaces:\n  include: [\"{prefix}*\"]\n  exclude: [\"{prefix}new*\"]\n"
    )
    out = {}
    for start in ("first", "again"):
        proc, _port, out[start] = start_daemon(str(cfg), n)
        stop_daemon(proc)
    return out


def baseline_a(prefix, n, sample, aws):
    """The seeds' pipeline, one namespace after the other, as users run it from a CronJob."""
    count = min(n, sample) if sample else n
    script = (
        'for ns in "$@"; do kubectl create secret docker-registry regcred-a -n "$ns" '
        f'--docker-server={ECR_HOST} --docker-username=AWS '
        f'--docker-password="$({aws} ecr get-login-password --region us-east-1)" '
        '--dry-run=client -o yaml | kubectl apply -f - >/dev/null; done'
    )
    w = Window().start()
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", script, "a"] + [f"{prefix}{i}" for i in range(count)], check=True)
    secs = time.monotonic() - t0
    out = {"measured_namespaces": count, "measured_seconds": round(secs, 3), "counts": w.stop()}
    out["seconds"] = round(secs * n / count, 3)
    out["extrapolated"] = count < n
    return out


def baseline_b(prefix, n, payload_file):
    w = Window().start()
    t0 = time.monotonic()
    r = sh(str(BASELINE_B), prefix, str(n), str(CONCURRENCY), "regcred-b", payload_file)
    secs = time.monotonic() - t0
    inner = json.loads(r.stdout)
    assert inner["failures"] == 0, inner
    return {"seconds": round(secs, 3), "inner_seconds": inner["seconds"], "counts": w.stop()}


# Allocators to measure against glibc's (Debian 12 packages, preloaded into the same binary).
ALLOCATORS = {
    "glibc": {},
    "glibc, 2 arenas": {"MALLOC_ARENA_MAX": "2"},
    "jemalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    "mimalloc": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"},
}


def allocators(cfg, pw, n):
    """Peak RSS of the unchanged and update `--once` cycles and the daemon's settled RSS, for
    each allocator in ALLOCATORS (one that is not installed is left out, and said)."""
    out = {}
    for name, env in ALLOCATORS.items():
        lib = env.get("LD_PRELOAD")
        if lib and not Path(lib).exists():
            out[name] = {"missing": lib}
            continue
        row = {"unchanged": timed_once(cfg, env=env)}
        # Per build and allocator: a password seen before would make the "update" unchanged.
        pw.write_text(f"password-{OURS}-{name}")
        row["update"] = timed_once(cfg, env=env)
        proc, _port, d = start_daemon(cfg, n, env=env)
        stop_daemon(proc)
        row["daemon"] = {k: d[k] for k in ("rss_mib", "peak_rss_mib", "first_pass_seconds")}
        out[name] = row
        print(f"  {name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return out


def where_bytes_go(text, top=8):
    """heaptrack_print's peak backtraces summed by the first frame in our own code (src/…):
    [(bytes at the peak, call site)], largest first."""
    units = {"B": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    sums, amount = {}, None
    for line in text.splitlines():
        m = re.match(r"\s*([\d.]+)([BKMG]) consumed over \d+ calls from:", line)
        if m:
            amount = float(m.group(1)) * units[m.group(2)]
            continue
        m = re.match(r"\s+at (src/\S+)", line)
        if m and amount is not None:
            sums[m.group(1)] = sums.get(m.group(1), 0) + amount
            amount = None
    return sorted(((round(v / 2**20, 2), k) for k, v in sums.items()), reverse=True)[:top]


def heap_profiles(cfg, pw, n, work, label):
    """heaptrack of the unchanged and update `--once` cycles and of the daemon (first pass and
    5 s of settling) at N namespaces: the peak heap and where it goes (by our call site),
    with heaptrack_print's text in bench/results/heap-<label>-<phase>-<n>.txt."""
    out = {}
    data_dir = ROOT / "target/heap"
    data_dir.mkdir(parents=True, exist_ok=True)
    for phase in ("unchanged", "update", "daemon"):
        data = data_dir / f"{label}-{phase}-{n}"
        for old in data_dir.glob(f"{label}-{phase}-{n}*"):
            old.unlink()
        wrap = ["heaptrack", "-o", str(data)]
        if phase == "update":
            pw.write_text(f"heap-profile-password-{label}")
        if phase == "daemon":
            proc, _port, _ = start_daemon(cfg, n, wrap=wrap)
            stop_daemon(proc)
        else:
            timed_once(cfg, wrap=wrap)
        gz = next(data_dir.glob(f"{label}-{phase}-{n}*"))
        text = sh("heaptrack_print", "--print-peaks", "1", "--print-allocators", "0",
                  "--print-temporary", "0", "--print-leaks", "0", "-n", "20", "-s", "40", str(gz)).stdout
        (ROOT / f"bench/results/heap-{label}-{phase}-{n}.txt").write_text(text)
        peak = re.search(r"peak heap memory consumption: (.*)", text)
        out[phase] = {"peak_heap": peak.group(1) if peak else None, "where_mib": where_bytes_go(text)}
        print(f"  {label} {phase}: {json.dumps(out[phase])}", file=sys.stderr, flush=True)
    return out


def run_size(n, sample_a, aws, work, only=None):
    prefix = f"b{n}-"
    create_namespaces(prefix, n)
    pw = Path(work) / f"pw-{n}"
    pw.write_text("first-password")
    cfg = Path(work) / f"cfg-{n}.yaml"
    cfg.write_text(
        "registries:\n"
        "  - name: ecr\n    ecr: { region: us-east-1 }\n"
        f"  - name: quay\n    static: {{ server: quay.io, username: bench, passwordFile: {pw} }}\n"
        "secrets:\n  - name: regcred\n    registries: [ecr, quay]\n"
        f"namespaces:\n  include: [\"{prefix}*\"]\n"
    )
    res = {"namespaces": n}
    if only == "daemon-static":
        res["daemon_static"] = daemon_static(prefix, n, work)
        return res
    if only in ("allocators", "heap"):
        timed_once(str(cfg))  # the secrets exist: the cycles measured are unchanged and update
        global OURS
        res[only], first = {}, OURS
        for binary in [first, *ALSO]:
            OURS = binary
            label = binary.parent.name if binary.name == "regcred-refresher" else binary.name
            res[only][label] = (allocators(str(cfg), pw, n) if only == "allocators"
                                else heap_profiles(str(cfg), pw, n, work, label))
        OURS = first
        return res
    for phase in ("create", "unchanged", "update"):
        if phase == "update":
            pw.write_text("rotated-password")  # every secret's content changes
        w = Window().start()
        res[phase] = timed_once(str(cfg))
        res[phase]["counts"] = w.stop()
    res["daemon"] = daemon(str(cfg), prefix, n)
    res["daemon_static"] = daemon_static(prefix, n, work)
    payload = base64.b64decode(
        sh("kubectl", "-n", f"{prefix}0", "get", "secret", "regcred", "-o", "jsonpath={.data.\\.dockerconfigjson}").stdout
    )
    pf = Path(work) / "payload.json"
    pf.write_bytes(payload)
    res["baseline_b"] = baseline_b(prefix, n, str(pf))
    res["baseline_a"] = baseline_a(prefix, n, sample_a, aws)
    res["ratio_a_over_ours_create"] = round(res["baseline_a"]["seconds"] / res["create"]["seconds"], 1)
    res["ratio_ours_over_b_create"] = round(res["create"]["seconds"] / res["baseline_b"]["seconds"], 2)
    return res


def table(results, machine):
    rows = [
        "| namespaces | ours: create | unchanged | update | API requests (create / unchanged / update) | writes unchanged | token calls per cycle | --once peak RSS | daemon start: first pass, requests | daemon RSS settled (peak) | new namespace → secret (median of 5) | baseline A (kubectl pipeline) | baseline B (raw SSA) | A ÷ ours | ours ÷ B |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["baseline_a"]
        a_txt = f"{a['seconds']:.1f} s" + (f" (extrapolated from {a['measured_namespaces']}: {a['measured_seconds']:.1f} s)" if a["extrapolated"] else "")
        d = r["daemon"]
        rows.append(
            f"| {r['namespaces']} | {r['create']['seconds']:.2f} s | {r['unchanged']['seconds']:.2f} s | {r['update']['seconds']:.2f} s "
            f"| {r['create']['counts']['total']} / {r['unchanged']['counts']['total']} / {r['update']['counts']['total']} "
            f"| {r['unchanged']['counts']['writes']} | {r['create']['counts']['token_calls']} / {r['unchanged']['counts']['token_calls']} / {r['update']['counts']['token_calls']} "
            f"| {max(r[p]['peak_rss_mib'] for p in ('create', 'unchanged', 'update'))} MiB "
            f"| {d['first_pass_seconds']:.2f} s, {d['start_counts']['total']} "
            f"| {d['rss_mib']} MiB ({d['peak_rss_after_mib']} MiB) | {d['new_namespace_median_seconds']:.2f} s "
            f"| {a_txt} | {r['baseline_b']['seconds']:.2f} s | {r['ratio_a_over_ours_create']}× | {r['ratio_ours_over_b_create']}× |"
        )
    rows.append("")
    for r in results:
        ds = r["daemon_static"]
        rows.append(
            f"Daemon start at {r['namespaces']} namespaces, a static source only: first start "
            f"{ds['first']['start_counts']['total']} requests ({ds['first']['start_counts']['writes']} writes), "
            f"first pass {ds['first']['first_pass_seconds']:.2f} s; restart {ds['again']['start_counts']['total']} "
            f"requests ({ds['again']['start_counts']['writes']} writes), first pass {ds['again']['first_pass_seconds']:.2f} s."
        )
    rows.append("")
    rows.append(f"Machine: {machine}. Concurrency {CONCURRENCY} for ours and baseline B.")
    return "\n".join(rows)


def main():
    global OURS
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--baseline-a-sample", type=int, default=100,
                    help="run the kubectl pipeline on this many namespaces and scale linearly (0: all)")
    ap.add_argument("--aws", default="aws")
    ap.add_argument("--ours", type=Path, default=OURS,
                    help="the regcred-refresher binary to measure (another commit's build, side by side)")
    ap.add_argument("--out", default="latest", help="results file name under bench/results/")
    ap.add_argument("--only", choices=["daemon-static", "allocators", "heap"],
                    help="one phase alone, no table: daemon-static (a side-by-side of two builds), "
                         "allocators (glibc, jemalloc and mimalloc under the same binary), "
                         "heap (heaptrack profiles to bench/results/heap-*.txt; use a --ours "
                         "built with --profile profiling for named call sites)")
    ap.add_argument("--allocators", help="with --only allocators: a comma list of the ALLOCATORS to measure (default: all)")
    ap.add_argument("--also", type=Path, action="append", default=[],
                    help="with --only heap|allocators: another build measured in the same world")
    args = ap.parse_args()
    OURS = args.ours.resolve()
    if args.allocators:
        keep = args.allocators.split(",")
        unknown = [a for a in keep if a not in ALLOCATORS]
        if unknown:
            sys.exit(f"--allocators: unknown {unknown}; known: {list(ALLOCATORS)}")
        for name in list(ALLOCATORS):
            if name not in keep:
                del ALLOCATORS[name]
    ALSO.extend(p.resolve() for p in args.also)
    for f in (OURS, AUDIT, MOTO_LOG) + (() if args.only else (BASELINE_B,)):
        if not f.exists():
            sys.exit(f"missing {f}: run through `make bench`")
    machine = f"{os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.platform()}"
    results = []
    with tempfile.TemporaryDirectory() as work:
        for n in (int(x) for x in args.sizes.split(",")):
            print(f"== {n} namespaces", file=sys.stderr, flush=True)
            r = run_size(n, args.baseline_a_sample, args.aws, work, args.only)
            print(json.dumps(r, indent=1), file=sys.stderr, flush=True)
            results.append(r)
    size = OURS.stat().st_size
    out = {"machine": machine, "binary_bytes": size, "results": results,
           "command": "make bench BENCH_SIZES=" + args.sizes, "run_py_args": sys.argv[1:]}
    (ROOT / "bench/results").mkdir(exist_ok=True)
    (ROOT / f"bench/results/{args.out}.json").write_text(json.dumps(out, indent=1) + "\n")
    if args.only:
        return
    print(table(results, machine))
    print(f"\nStripped release binary: {size / 1e6:.1f} MB ({size} bytes).")


if __name__ == "__main__":
    main()
