#!/usr/bin/env python3
"""Draws a chaos run's timeline (tests/integration/chaos.rs writes it): for each target
namespace the remaining life of its ECR and Google tokens as a fraction of their lifetime (asked
of the issuers, as the registries see it), each probe pod that was refused marked, and the faults
as shaded spans. Usage: plot.py TIMELINE.json OUT.png (or .svg)
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, out: str) -> None:
    with open(src) as f:
        tl = json.load(f)
    names = tl["namespaces"]
    by_ns = {i: ([], [], []) for i in range(len(names))}
    for t, i, ecr, gar in tl["samples"]:
        by_ns[i][0].append(t)
        by_ns[i][1].append(ecr)
        by_ns[i][2].append(gar)

    fig, (ax_e, ax_g) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True)
    for ax, idx, label, life in (
        (ax_e, 1, "ECR", tl["lifetimes_s"]["ecr"]),
        (ax_g, 2, "Google", tl["lifetimes_s"]["google"]),
    ):
        for i, series in by_ns.items():
            if series[0]:
                ax.plot(series[0], series[idx], lw=0.7, alpha=0.6)
        ax.axhline(0.10, color="tab:red", lw=1, ls="--")
        ax.text(0, 0.115, "target: ≥ 10 % left", color="tab:red", fontsize=8)
        ax.set_ylim(-0.03, 1.05)
        ax.set_ylabel(f"{label} token life left\n(lifetime {life:.0f} s)")
        for fault in tl["faults"]:
            control = fault["name"] == "refresher-stopped"
            end = tl["end_s"] if control else max(fault["end_s"], fault["start_s"] + 1)
            ax.axvspan(fault["start_s"], end, color="0.5" if control else "tab:orange",
                       alpha=0.12 if control else 0.25, lw=0)
    # Faults named once, on the top axis; two that start together are stacked.
    last = None
    for fault in tl["faults"]:
        y = 1.06 if last is None or fault["start_s"] - last[0] > 30 else last[1] + 0.12
        ax_e.text(fault["start_s"], y, fault["name"], rotation=30, fontsize=7,
                  ha="left", va="bottom")
        last = (fault["start_s"], y)
    # Each probe: [t, namespace index, started, pulls refused, seconds to start].
    refused = [(p[0], p[1]) for p in tl["probes"] if p[3]]
    started = sum(1 for p in tl["probes"] if p[2])
    if refused:
        ax_g.scatter([t for t, _ in refused], [-0.02] * len(refused), marker="x",
                     color="tab:red", s=14, label=f"probe pod refused a pull ({len(refused)})")
        ax_g.legend(loc="lower left", fontsize=8)
    ax_g.axvline(tl["main_phase_s"], color="k", lw=0.8)
    ax_g.text(tl["main_phase_s"], 0.5, " refresher stopped\n (the control)", fontsize=8)
    ax_g.set_xlabel(f"seconds into the run ({len(tl['probes'])} probe pods, {started} started; "
                    f"{len(names)} namespaces, one line each)")
    fig.suptitle(f"Chaos run '{tl['run']}': remaining credential life per namespace",
                 y=0.995)
    fig.tight_layout()
    fig.savefig(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py TIMELINE.json OUT.png")
    main(sys.argv[1], sys.argv[2])
