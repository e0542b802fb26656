# SPDX-License-Identifier: GPL-3.0-or-later
"""docs/performance.png from a full bench/run result (needs matplotlib; smoke runs never import it)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(results, path):
    ms = results["measurements"]
    panels = [name for name in ("plumbing", "playbooks", "plan", "peers", "dataplane", "lab100") if name in ms]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.8 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, name in zip(flat, panels):
        globals()[f"_{name}"](ax, ms[name])
    for ax in flat[len(panels):]:
        ax.axis("off")
    m = results.get("machine") or {}
    fig.suptitle(f"flatnet.cluster benchmarks (medians)\n{m.get('nproc', '?')} CPUs, kernel {m.get('kernel', '?')}, "
                 f"{m['iproute2'].split(',')[1].strip() if m.get('iproute2') else ''}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plumbing(ax, res):
    labels = {"module": "flatnet pods module (one call)", "cni": "CNI bridge+host-local+loopback",
              "ip": "one ip process per step"}
    sizes = [r["pods"] for r in res["rows"]]
    for way in res["ways"]:
        ys = [r.get(f"{way}_add_ms_per_pod") for r in res["rows"]]
        ax.plot(sizes, ys, marker="o", label=labels.get(way, way))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pods on the node")
    ax.set_ylabel("ms per pod (create)")
    ax.set_title("Pod plumbing on one node")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _playbooks(ax, res):
    for nodes in res["node_counts"]:
        rows = [r for r in res["rows"] if r["nodes"] == nodes and r["deploy_s"] is not None]
        xs = [r["pods_per_node"] for r in rows]
        line = ax.plot(xs, [r["deploy_s"] for r in rows], marker="o", label=f"{nodes} nodes, deploy")[0]
        ax.plot(xs, [r["rerun_s"] for r in rows], marker="s", linestyle="--", color=line.get_color(),
                label=f"{nodes} nodes, rerun")
    ax.set_xscale("log")
    ax.set_xlabel("pods per node")
    ax.set_ylabel("site.yml wall time (s)")
    ax.set_title("Whole playbook on the lab")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def _dataplane(ax, res):
    names = list(res["paths"])
    vals = [res["paths"][n]["gbps_vs_veth"] for n in names]
    bars = ax.barh(range(len(names)), vals, color="tab:blue")
    for rect, name in zip(bars, names):
        p = res["paths"][name]
        ax.text(rect.get_width() + 0.01, rect.get_y() + rect.get_height() / 2,
                f"{p['gbps']:.1f} Gbit/s, MTU {p['mtu']}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.3, max(vals) * 1.3))
    ax.set_xlabel("TCP throughput / plain veth pair (same run)")
    ax.set_title("Data plane (iperf3)")
    ax.grid(True, axis="x", alpha=0.3)


def _plan(ax, res):
    # bench/run --only plan: build_plan at 100, 1,000, 5,000 nodes; time and plan file size.
    rows = sorted(res["rows"], key=lambda r: r["nodes"])
    nodes = [r["nodes"] for r in rows]
    ax.plot(nodes, [r["first_s"] for r in rows], marker="o", label="plan, first run (s)")
    ax.plot(nodes, [r["rerun_s"] for r in rows], marker="s", label="plan, rerun with the cached plan (s)")
    ax.plot(nodes, [r["plan_mb"] for r in rows], marker="^", label="plan file (MB)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes (10 pods each)")
    ax.set_ylabel("seconds / MB")
    ax.set_title("The plan grows linearly with the nodes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _peers(ax, res):
    # bench/run --only peers: one peers call on a node, first and unchanged rerun, by peer count.
    for mode in sorted({r["mode"] for r in res["rows"]}):
        rows = sorted((r for r in res["rows"] if r["mode"] == mode and r.get("form", "lines") == "lines"),
                      key=lambda r: r["peers"])
        label = {"direct": "host-gw", "vxlan": "VXLAN"}.get(mode, mode)
        ax.plot([r["peers"] for r in rows], [r["first_s"] for r in rows], marker="o", label=f"{label}, first call")
        ax.plot([r["peers"] for r in rows], [r["rerun_s"] for r in rows], marker="s", linestyle="--",
                label=f"{label}, unchanged rerun")
    ax.set_xscale("log")
    ax.set_xlabel("peers of the node")
    ax.set_ylabel("seconds (whole module process)")
    ax.set_title("One peers call")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _lab100(ax, res):
    # bench/lab100.py: one bar per step of the 100-node lab, wall time, peak memory and load.
    # The settings comparison ("compare, ..."; "rerun, ..." in the first version) is a table.
    rows = [r for r in res["rows"] if not r["step"].startswith(("compare, ", "rerun, "))]
    bars = ax.barh(range(len(rows)), [r["seconds"] for r in rows], color="tab:green")
    for rect, row in zip(bars, rows):
        ax.text(rect.get_width() + 2, rect.get_y() + rect.get_height() / 2,
                f"{row['seconds']:.0f} s, {row['peak_tree_mb'] / 1000:.1f} GB, load {row['load1']:.0f}",
                va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["step"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["seconds"] for r in rows) * 1.6)
    ax.set_xlabel("wall time (s); labels: peak memory (process tree), load")
    ax.set_title(f"{res['nodes']} nodes × {res['pods_per_node']} pods (lab)")
    ax.grid(True, axis="x", alpha=0.3)


def main(argv=None):
    """Draw the plot from saved results: ``python bench/plot.py RESULT.json... [-o PNG]``;
    later files add to (or replace) the measurements of earlier ones."""
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", nargs="+")
    parser.add_argument("-o", "--output",
                        default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "performance.png"))
    args = parser.parse_args(argv)
    merged = None
    for path in args.results:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if "measurements" not in data:  # a bench/lab100.py result
            data = {"measurements": {"lab100": data}}
        if merged is None:
            merged = data
        else:
            merged["measurements"].update(data["measurements"])
    print(plot(merged, args.output))


if __name__ == "__main__":
    main()
