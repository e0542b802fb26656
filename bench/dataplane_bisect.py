# SPDX-License-Identifier: GPL-3.0-or-later
"""Bisection of the data plane's cost: the hand-built path (``dataplane.HandCluster``) with
the collection's features added one at a time, against the plain hand-built path and the
path the collection built (a 2-node lab, ``site.yml``), all in the same run, interleaved.

    python bench/dataplane_bisect.py [--backend vxlan|host-gw]... [--reps N] [--variants a,b]

Each repetition visits every variant in a new random order; a variant is applied to the one
hand-built cluster just before it is measured and undone right after, so every variant is
measured on the same links, interleaved with the plain baseline (A B A C A D … shuffled).
The collection's lab is measured as built, and without its nftables table (taken out and put
back, exactly as it was, around that one measurement).

Per variant and path (same node through the bridge; across nodes):
- RTT: ``ping -i 0.001`` x N (1 ms apart keeps the CPUs awake, so the figure is the path, not
  the wake-up), summarised per sample by the interquartile mean of the per-packet times
  (1 µs resolution each; the mean of the middle half resolves much less);
- TCP_RR: a Python TCP echo loop (1-byte request and reply, TCP_NODELAY) of M round trips,
  the median per sample (Python's own time is in it: a constant, so ratios understate);
- throughput: one iperf3 TCP run.
Reported: medians over the repetitions, min–max spread, and ratios to the plain hand-built
path. The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import Skip, kill_group, median, on_cleanup, done, ratio, run, table  # noqa: E402
import dataplane  # noqa: E402
import labctl  # noqa: E402

sys.path.insert(0, common.collection_root())
from ansible_collections.flatnet.cluster.plugins.module_utils import firewall_nft  # noqa: E402

RR_PORT = 5301
VXLAN_PORT = 8472
CLUSTER_CIDR = "10.250.0.0/16"  # HandCluster's pod networks, 10.250.0/24 and 10.250.1/24

RR_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(4)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d:
            break
        c.sendall(d)
    c.close()
"""

RR_CLIENT = r"""
import socket, sys, time, statistics, json
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for attempt in range(100):
    try:
        c = socket.create_connection((host, port), timeout=5); break
    except OSError:
        time.sleep(0.05)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t, clock = [], time.perf_counter_ns
for i in range(n + 50):
    a = clock(); c.sendall(b"x"); c.recv(1); b = clock()
    if i >= 50:
        t.append(b - a)
c.close()
print(json.dumps({"median_us": statistics.median(t) / 1000}))
"""


def iqm(values):
    """Interquartile mean: the mean of the middle half."""
    values = sorted(values)
    k = len(values) // 4
    mid = values[k:len(values) - k] or values
    return statistics.mean(mid)


def ping_rtt(client, ip, count):
    res = run(client.argv("ping", "-n", "-c", str(count), "-i", "0.001", "-W", "1", ip), timeout=count + 60)
    times = [float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", res.stdout)]
    if len(times) < count * 0.9:
        raise RuntimeError(f"ping {ip} from {client.pod}: {len(times)} of {count} answered")
    return iqm(times)


class RRServer:
    """A TCP echo server in a pod, killed by PID."""

    def __init__(self, endpoint):
        self.proc = subprocess.Popen(endpoint.argv("python3", "-c", RR_SERVER, str(RR_PORT)),
                                     start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.entry = on_cleanup(kill_group, self.proc)

    def close(self):
        done(self.entry)


def tcp_rr(client, ip, count):
    res = run(client.argv("python3", "-c", RR_CLIENT, ip, str(RR_PORT), str(count)), timeout=120)
    return json.loads(res.stdout)["median_us"]


# --- the collection's features, added to the hand-built cluster one at a time -------------
class Hand:
    """``dataplane.HandCluster`` plus ways to add (and take back) one feature at a time."""

    def __init__(self, backend):
        self.backend = backend
        self.cluster = dataplane.HandCluster(backend)
        self.pre = self.cluster.node.prefix()
        self.servers = [RRServer(self.cluster.local), RRServer(self.cluster.remote)]

    def sh(self, ns, script, data=None):
        run(self.pre + ["ip", "netns", "exec", ns, "sh", "-c", script], input=data)

    def nodes(self):
        return ("h1", "h2")

    def table(self, node, old=False, **parts):
        """The collection's own table (module_utils/firewall_nft.render) for this node, or with
        ``old`` the table of 0.1 (``old_table``); chains left out on request (parts: raw, nat,
        input = False)."""
        other = "h2" if node == "h1" else "h1"
        vxlan = VXLAN_PORT if self.backend == "vxlan" else None
        if old:
            text = old_table(CLUSTER_CIDR, vxlan, dataplane.HandCluster.UNDERLAY[other])
        else:
            text = firewall_nft.render([CLUSTER_CIDR], masquerade=parts.get("nat", True), vxlan_port=vxlan,
                                       peer_underlay_ips=[dataplane.HandCluster.UNDERLAY[other]],
                                       notrack=parts.get("raw", True), vxlan_guard=parts.get("input", True))
        for chain, keep in (("prerouting", parts.get("raw", True)), ("output", parts.get("raw", True)),
                            ("forward", parts.get("forward", True)), ("postrouting", parts.get("nat", True)),
                            ("input", parts.get("input", True))):
            if not keep:
                text = re.sub(r"\n\tchain " + chain + r" \{.*?\n\t\}\n?", "\n", text, flags=re.S)
        return text

    def load_table(self, **parts):
        for node in self.nodes():
            self.sh(node, "nft -f -", data=firewall_nft.transaction(self.table(node, **parts)))

    def load_text(self, text):
        for node in self.nodes():
            self.sh(node, "nft -f -", data=text)

    def drop_table(self):
        for node in self.nodes():
            self.sh(node, f"nft delete table {firewall_nft.FAMILY} {firewall_nft.TABLE} 2>/dev/null; true")

    def neigh(self, add):
        """Static neighbours both ways, as flatnet.cluster.pods makes them."""
        for node, pods in dataplane.HandCluster.PODS.items():
            net = dataplane.HandCluster.POD_NET[node]
            br_mac = self._mac(node, None, "cni0")
            for i, pod in enumerate(pods):
                pod_mac = self._mac(node, pod, "eth0")
                if add:
                    self.sh(pod, f"ip neigh replace {net}.1 lladdr {br_mac} dev eth0 nud permanent")
                    self.sh(node, f"ip neigh replace {net}.{i + 2} lladdr {pod_mac} dev cni0 nud permanent")
                else:
                    self.sh(pod, f"ip neigh del {net}.1 dev eth0 2>/dev/null; true")
                    self.sh(node, f"ip neigh del {net}.{i + 2} dev cni0 2>/dev/null; true")

    def _mac(self, node, pod, dev):
        ns = pod or node
        out = run(self.pre + ["ip", "-n", ns, "-j", "link", "show", "dev", dev]).stdout
        return json.loads(out)[0]["address"]

    def sysctl(self, values):
        for node in self.nodes():
            self.sh(node, " && ".join(f"sysctl -qw {k}={v}" for k, v in values.items()))

    def rp_filter(self, on):
        self.sysctl({"net.ipv4.conf.all.rp_filter": 2 if on else 0})

    def br_nf(self, on):
        self.sysctl({"net.bridge.bridge-nf-call-iptables": 1 if on else 0})

    def link_options(self, on):
        """Aliases on the bridge and veths, as the collection marks what it owns."""
        for node, pods in dataplane.HandCluster.PODS.items():
            cmds = [f"ip link set cni0 alias '{'flatnet' if on else ''}'"]
            cmds += [f"ip link set veth{pod} alias '{('flatnet pod ' + pod) if on else ''}'" for pod in pods]
            self.sh(node, " && ".join(cmds))

    def route_proto(self, on):
        proto = "157" if on else "boot"
        for node, other in (("h1", "h2"), ("h2", "h1")):
            peer_net = dataplane.HandCluster.POD_NET[other]
            if self.backend == "vxlan":
                via = f"via {peer_net}.0 dev vx onlink"
            else:
                via = f"via {dataplane.HandCluster.UNDERLAY[other]}"
            self.sh(node, f"ip route replace {peer_net}.0/24 {via} proto {proto}")

    def close(self):
        for server in self.servers:
            server.close()
        self.cluster.close()


def old_table(cidr, vxlan_port, peer):
    """The table inet flatnet of 0.1 (before the forward chain went and the rules got
    cheaper), for one IPv4 cluster CIDR: what the first bisection measured."""
    text = ["table inet flatnet {", "\tset cluster4 {", "\t\ttype ipv4_addr", "\t\tflags interval",
            f"\t\telements = {{ {cidr} }}", "\t}", ""]
    if vxlan_port:
        text += ["\tset nodes4 {", "\t\ttype ipv4_addr", f"\t\telements = {{ {peer} }}", "\t}", "",
                 "\tset nodes6 {", "\t\ttype ipv6_addr", "\t}", ""]
    text += ["\tchain prerouting {", "\t\ttype filter hook prerouting priority raw; policy accept;",
             "\t\tip saddr @cluster4 ip daddr @cluster4 meta mark & 0x8000 == 0 notrack"]
    if vxlan_port:
        text += [f"\t\tudp dport {vxlan_port} notrack", "\t}", "", "\tchain output {",
                 "\t\ttype filter hook output priority raw; policy accept;", f"\t\tudp dport {vxlan_port} notrack"]
    text += ["\t}", "", "\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;",
             "\t\tip saddr @cluster4 accept", "\t\tip daddr @cluster4 accept", "\t}", "",
             "\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;",
             "\t\tip saddr @cluster4 ip daddr != @cluster4 ip daddr != 224.0.0.0/4 masquerade fully-random", "\t}"]
    if vxlan_port:
        text += ["", "\tchain input {", "\t\ttype filter hook input priority filter; policy accept;",
                 f"\t\tip saddr @nodes4 udp dport {vxlan_port} accept",
                 f"\t\tip6 saddr @nodes6 udp dport {vxlan_port} accept", f"\t\tudp dport {vxlan_port} drop", "\t}"]
    return "\n".join(text + ["}"]) + "\n"


def hand_variants(backend):
    """name -> (what it adds, apply(hand), undo(hand)). The plain path is ``hand-built``."""
    v = {
        "+ table of 0.1": ("the table inet flatnet of 0.1 (forward chain, set lookups, 3-rule guard)",
                           lambda h: h.load_table(old=True), lambda h: h.drop_table()),
        "+ table of 0.1, no forward chain": ("the table of 0.1 without its forward chain (accept-only, policy accept)",
                                             lambda h: h.load_table(old=True, forward=False), lambda h: h.drop_table()),
        "+ table (now)": ("the collection's table as rendered now (defaults: masquerade, notrack, guard)",
                          lambda h: h.load_table(), lambda h: h.drop_table()),
        "+ table (now), no guard": ("the table now with flatnet_vxlan_guard: false (masquerade + notrack)",
                                    lambda h: h.load_table(input=False), lambda h: h.drop_table()),
        "+ conntrack only": ("an empty nat chain: the kernel tracks every packet, nothing else",
                             lambda h: h.load_text("table inet bisect {\n\tchain p {\n\t\ttype nat hook "
                                                   "postrouting priority srcnat; policy accept;\n\t}\n}\n"),
                             lambda h: [h.sh(n, "nft delete table inet bisect") for n in h.nodes()]),
        "+ raw notrack chain only": ("the raw chains' notrack rules, no nat chain (so no conntrack)",
                                     lambda h: h.load_table(nat=False, input=False), lambda h: h.drop_table()),
        "+ forward chain of 0.1 only": ("the forward chain of 0.1 (accept-only, policy accept), nothing else",
                                        lambda h: h.load_table(old=True, nat=False, raw=False, input=False),
                                        lambda h: h.drop_table()),
        "+ static neighbours": ("permanent neighbour entries pod -> gateway and bridge -> pods",
                                lambda h: h.neigh(True), lambda h: h.neigh(False)),
        "+ rp_filter=2": ("net.ipv4.conf.all.rp_filter=2 on the nodes", lambda h: h.rp_filter(True),
                          lambda h: h.rp_filter(False)),
        "+ aliases": ("link aliases on the bridge and the veths", lambda h: h.link_options(True),
                      lambda h: h.link_options(False)),
        "+ route proto 157": ("the peer routes with the collection's route protocol",
                              lambda h: h.route_proto(True), lambda h: h.route_proto(False)),
        "+ table (now), br_netfilter off": (
            "the table now, with net.bridge.bridge-nf-call-iptables=0 in the nodes",
            lambda h: (h.load_table(), h.br_nf(False)),
            lambda h: (h.drop_table(), h.br_nf(True))),
    }
    if backend == "vxlan":
        v["+ guard only (masquerade off)"] = ("the VXLAN guard (input chain) alone: the table with "
                                              "flatnet_masquerade: false and no services",
                                              lambda h: h.load_table(nat=False, raw=False),
                                              lambda h: h.drop_table())
    return v


class Collection:
    """The collection's 2-node lab; its table can be taken out and put back as it was."""

    def __init__(self, backend, group_vars=None, tag="c"):
        lab = labctl.Lab(2, pods_per_node=2, backend=backend, group_vars=group_vars, tag=tag + backend[0])
        try:
            lab.start()
            lab.playbook("site.yml")
        except BaseException:
            lab.stop()
            raise
        self.paths = dataplane.LabPaths(backend, lab)
        self.lab = lab
        self.prefixes = [self.lab.node_prefix(n) for n in ("n1", "n2")]
        self.saved = [run(p + ["nft", "list", "table", firewall_nft.FAMILY, firewall_nft.TABLE], check=False).stdout
                      for p in self.prefixes]
        self.servers = [RRServer(self.paths.local), RRServer(self.paths.remote)]

    def without_table(self):
        for p in self.prefixes:
            run(p + ["nft", "delete", "table", firewall_nft.FAMILY, firewall_nft.TABLE])

    def restore(self):
        for p, text in zip(self.prefixes, self.saved):
            run(p + ["nft", "-f", "-"], input=firewall_nft.transaction(text))

    def close(self):
        for server in self.servers:
            server.close()
        self.lab.stop()


LEAN = {"flatnet_masquerade": False, "flatnet_vxlan_guard": False}


def measure(backend, reps, pings=1000, rr=2000, seconds=2, only=None, lean=True, log=print):
    for tool in ("iperf3", "nft", "ping"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed")
    result = {"backend": backend, "reps": reps, "pings": pings, "rr": rr, "iperf_seconds": seconds,
              "load_before": os.getloadavg(), "variants": {}, "describe": {}}
    hand = coll = lean_coll = None
    try:
        log(f"{backend}: building the lab (site.yml) and the hand-built cluster")
        coll = Collection(backend)
        if lean:
            log(f"{backend}: building the lean lab ({LEAN})")
            lean_coll = Collection(backend, LEAN, tag="l")
        hand = Hand(backend)
        variants = hand_variants(backend)
        if only:
            variants = {k: v for k, v in variants.items() if any(o in k for o in only)}
        c, hc = coll.paths, hand.cluster
        # name -> (client, {path: server}, apply, undo)
        plan = {"hand-built": (hc.client, {"local": hc.local, "remote": hc.remote}, None, None),
                "collection (as built)": (c.client, {"local": c.local, "remote": c.remote}, None, None),
                "collection, table removed": (c.client, {"local": c.local, "remote": c.remote},
                                              coll.without_table, coll.restore)}
        result["describe"] = {"hand-built": "HandCluster: no firewall, no static neighbours, default sysctls",
                              "collection (as built)": "2-node lab, site.yml, defaults",
                              "collection, table removed": "the same lab with table inet flatnet deleted"}
        if lean_coll:
            lc = lean_coll.paths
            plan["collection, lean"] = (lc.client, {"local": lc.local, "remote": lc.remote}, None, None)
            result["describe"]["collection, lean"] = f"2-node lab, site.yml with {LEAN}"
        for name, (what, apply, undo) in variants.items():
            plan[name] = (hc.client, {"local": hc.local, "remote": hc.remote},
                          (lambda a=apply: a(hand)), (lambda u=undo: u(hand)))
            result["describe"][name] = what
        ips = {id(s): s.ip() for _n, (_c, servers, _a, _u) in plan.items() for s in servers.values()}
        samples = {name: {path: [] for path in ("local", "remote")} for name in plan}
        for rep in range(reps):
            order = list(plan)
            random.shuffle(order)
            for name in order:
                client, servers, apply, undo = plan[name]
                if apply:
                    apply()
                try:
                    for path, server in servers.items():
                        ip = ips[id(server)]
                        sample = {"rtt_us": ping_rtt(client, ip, pings), "rr_us": tcp_rr(client, ip, rr)}
                        sample.update(dataplane.iperf(server, client, seconds))
                        samples[name][path].append(sample)
                finally:
                    if undo:
                        undo()
            log(f"{backend}: repetition {rep + 1}/{reps} done (load {os.getloadavg()[0]:.1f})")
    finally:
        if hand:
            hand.close()
        if coll:
            coll.close()
        if lean_coll:
            lean_coll.close()
    result["load_after"] = os.getloadavg()
    base = samples["hand-built"]
    for name, paths in samples.items():
        out = result["variants"][name] = {}
        for path, runs in paths.items():
            row = {}
            for key in ("rtt_us", "rr_us", "gbps"):
                vals = [s[key] for s in runs]
                row[key] = median(vals)
                row[key + "_spread"] = [min(vals), max(vals)]
                row[key + "_vs_hand"] = ratio(row[key], median([s[key] for s in base[path]]))
            row["runs"] = runs
            out[path] = row
    return result


def report(result):
    rows = []
    for name, paths in result["variants"].items():
        for path, r in paths.items():
            rows.append([name, path, r["rtt_us"], f"{r['rtt_us_spread'][0]:.1f}-{r['rtt_us_spread'][1]:.1f}",
                         r["rtt_us_vs_hand"], r["rr_us"], r["rr_us_vs_hand"], r["gbps"],
                         f"{r['gbps_spread'][0]:.2f}-{r['gbps_spread'][1]:.2f}", r["gbps_vs_hand"]])
    rows.sort(key=lambda r: (r[1], r[0] != "hand-built", r[0]))
    load = f"load {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after"
    return table(f"Data-plane bisection, {result['backend']} ({result['reps']} reps interleaved; ping x{result['pings']} "
                 f"1 ms apart, IQM; TCP_RR x{result['rr']}, median; iperf3 {result['iperf_seconds']} s; medians "
                 f"over reps; {load})",
                 ["variant", "path", "RTT us", "spread", "vs hand", "TCP_RR us", "vs hand", "Gbit/s", "spread",
                  "vs hand"], rows)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--backend", action="append", choices=("vxlan", "host-gw"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--rr", type=int, default=2000)
    parser.add_argument("--iperf-seconds", type=int, default=2)
    parser.add_argument("--variants", help="comma-separated substrings of the variants to run (default: all)")
    parser.add_argument("--no-lean", action="store_true", help="no second lab with masquerade and VXLAN guard off")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("dataplane_bisect: needs root", file=sys.stderr)
        return 2
    common.install_handlers()
    labctl.require("site.yml", "lab_up.yml", "lab_down.yml")
    started = time.time()
    results = {"machine": common.machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "backends": {}}

    def log(msg):
        print(f"  [{time.time() - started:6.1f} s] {msg}", flush=True)

    only = args.variants.split(",") if args.variants else None
    for backend in args.backend or ["vxlan", "host-gw"]:
        res = measure(backend, args.reps, args.pings, args.rr, args.iperf_seconds, only, not args.no_lean, log)
        results["backends"][backend] = res
        print(report(res), flush=True)
        print(flush=True)
    results["duration_s"] = time.time() - started
    path = common.write_results(f"{time.strftime('%Y%m%d-%H%M%S')}-dataplane-bisect", results)
    print(f"results: {path}")
    common.cleanup_all()
    left = common.leftovers()
    if left:
        print("left behind: " + ", ".join(left), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ndataplane_bisect: interrupted; cleaning up", file=sys.stderr)
        common.cleanup_all()
        sys.exit(130)
