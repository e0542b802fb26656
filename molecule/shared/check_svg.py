# SPDX-License-Identifier: GPL-3.0-or-later
"""Check the topology SVG of playbooks/show.yml against the live state read independently.

usage: check_svg.py SVG LIVE.json [--drift TEXT]...

LIVE.json: {node: {"routes": [ip -json route show proto 157 entries],
                    "pods": output of `ip -all netns exec ip -json addr show dev eth0`}}.
The SVG must parse as XML and name every node (with a group id node_<name>), every pod with
each of its addresses, every route (destination and "via GW dev DEV") and, per node pair with a
route, the path (group id path_<a>_<b>). Without --drift the title must say "no drift"; with it,
each TEXT must appear in the picture and the drift box must be there.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def pods_of(text):
    """``{netns: [addr/prefix]}`` from ``ip -all netns exec ip -json addr show dev eth0``."""
    pods, name = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("netns: "):
            name = line[len("netns: "):]
            pods[name] = []
        elif line.startswith("[") and name is not None:
            pods[name] = [f"{a['local']}/{a['prefixlen']}" for link in json.loads(line)
                          for a in link.get("addr_info", []) if a.get("scope") == "global"]
    return pods


def owner_of(live, dst):
    """The node whose pods have addresses in ``dst``."""
    net = ipaddress.ip_network(dst, strict=False)
    for node, st in live.items():
        for addrs in st["pods"].values():
            for addr in addrs:
                ip = ipaddress.ip_interface(addr).ip
                if ip.version == net.version and ip in net:
                    return node
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("svg")
    ap.add_argument("live")
    ap.add_argument("--drift", action="append", default=[])
    args = ap.parse_args()
    root = ET.parse(args.svg).getroot()  # raises on anything that is not well-formed XML
    if root.tag != NS + "svg":
        sys.exit(f"{args.svg}: the root element is {root.tag}, not svg")
    text = "\n".join("".join(t.itertext()) for t in root.iter(NS + "text"))
    ids = {g.get("id") for g in root.iter(NS + "g")}
    with open(args.live, encoding="utf-8") as f:
        live = json.load(f)
    for st in live.values():
        st["pods"] = pods_of(st["pods"])
    problems, counts = [], {"nodes": 0, "pods": 0, "routes": 0, "paths": 0}
    pairs = set()
    for node, st in sorted(live.items()):
        counts["nodes"] += 1
        if node not in text or f"node_{node}" not in ids:
            problems.append(f"node {node} is not in the picture")
        for pod, addrs in sorted(st["pods"].items()):
            counts["pods"] += 1
            if pod not in text:
                problems.append(f"pod {pod} of {node} is not in the picture")
            for addr in addrs:
                if addr not in text:
                    problems.append(f"address {addr} of pod {pod} is not in the picture")
        for r in st["routes"]:
            counts["routes"] += 1
            via = f"via {r.get('gateway')} dev {r.get('dev')}"
            if r["dst"] not in text or via not in text:
                problems.append(f"route {r['dst']} {via} of {node} is not in the picture")
            owner = owner_of(live, r["dst"])
            if owner and owner != node:
                pairs.add(tuple(sorted((node, owner))))
    for a, b in sorted(pairs):
        counts["paths"] += 1
        if f"path_{a}_{b}" not in ids:
            problems.append(f"the path between {a} and {b} is not in the picture")
    if args.drift:
        if "drift" not in ids:
            problems.append("the drift box is not in the picture")
        for want in args.drift:
            if want not in text:
                problems.append(f"drift {want!r} is not in the picture")
    elif "no drift" not in text:
        problems.append("the picture does not say 'no drift'")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
