# SPDX-License-Identifier: GPL-3.0-or-later
"""Measurement 3: the data plane between pods the collection built, against the same
traffic over a plain veth pair between two namespaces built by hand in the same run (the
limit of this machine), and against the same path built by hand (``HandCluster``: what a
careful shell script would make, with the lab's topology) in the same run.

Paths: same node (through the bridge), across nodes with host-gw routes, across nodes over
VXLAN. Short iperf3 runs (TCP throughput) and pings 1 ms apart (latency). Each path also gets a
fragmentation check: full-size packets with DF set pass at the configured pod MTU, one byte
more is refused, and no namespace on the path fragments or reassembles during the run.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time

from common import PREFIX, Skip, ThrowawayNode, fmt, kill_group, median, on_cleanup, done, ratio, run, table
import labctl

PORT = 5201


class Endpoint:
    """A pod (named netns) inside a node reached by nsenter."""

    def __init__(self, node_prefix, pod):
        self.node_prefix = node_prefix
        self.pod = pod

    def argv(self, *cmd):
        return self.node_prefix + ["ip", "netns", "exec", self.pod] + list(cmd)

    def ip(self):
        addrs = json.loads(run(self.node_prefix + ["ip", "-n", self.pod, "-j", "addr", "show", "dev", "eth0"]).stdout)
        return next(a["local"] for a in addrs[0]["addr_info"] if a["family"] == "inet")

    def mtu(self):
        return json.loads(run(self.node_prefix + ["ip", "-n", self.pod, "-j", "link", "show", "dev", "eth0"]).stdout)[0]["mtu"]


def iperf(server, client, seconds):
    """TCP throughput client → server in Gbit/s (iperf3, one test, server killed by PID)."""
    ip = server.ip()
    # iperf3 makes a temp file under $TMPDIR, which may name a host dir that a lab node's
    # private /tmp hides (a test runner's TMPDIR): use the node's own /tmp.
    srv = subprocess.Popen(server.argv("env", "TMPDIR=/tmp", "iperf3", "-s", "-1", "-p", str(PORT)), start_new_session=True,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    entry = on_cleanup(kill_group, srv)
    try:
        for _attempt in range(50):
            res = run(client.argv("env", "TMPDIR=/tmp", "iperf3", "-c", ip, "-p", str(PORT), "-t", str(seconds), "-J"),
                      timeout=seconds + 30, check=False)
            try:
                data = json.loads(res.stdout)
            except ValueError:
                data = {"error": res.stdout + res.stderr}
            if "error" in data and "connect" in data["error"] and srv.poll() is None:
                time.sleep(0.1)  # server not listening yet
                continue
            if "error" in data:
                raise RuntimeError(f"iperf3 {client.pod} -> {server.pod} ({ip}): {data['error']}")
            end = data["end"]
            return {"gbps": end["sum_received"]["bits_per_second"] / 1e9,
                    "retransmits": end["sum_sent"].get("retransmits")}
        raise RuntimeError(f"iperf3 server in {server.pod} never answered")
    finally:
        done(entry)


def ping(client, ip, count):
    """RTT of ``count`` pings 1 ms apart: close enough that the CPUs stay awake (20 ms apart,
    the wake-up dominated), summarised by the interquartile mean of the per-packet times,
    which a few packets delayed by other load on the machine do not move."""
    res = run(client.argv("ping", "-n", "-c", str(count), "-i", "0.001", "-W", "2", ip), timeout=count + 30)
    times = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", res.stdout))
    match = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", res.stdout)
    if not match or not times:
        raise RuntimeError(f"ping {ip} from {client.pod}: no rtt line in {res.stdout[-500:]!r}")
    k = len(times) // 4
    middle = times[k:len(times) - k] or times
    return {"iqm_ms": sum(middle) / len(middle), "avg_ms": float(match.group(2)), "min_ms": float(match.group(1))}


def _frag_counters(argv_prefix):
    text = run(argv_prefix + ["cat", "/proc/net/snmp"]).stdout
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Ip:")]
    stats = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return {k: stats[k] for k in ("FragCreates", "FragOKs", "ReasmReqds")}


def frag_check(server, client, watch, seconds=1):
    """DF packets of exactly the MTU pass, one byte more is refused, and a short TCP run
    fragments nothing in any namespace of ``watch`` (argv prefixes)."""
    ip, mtu = server.ip(), client.mtu()
    fits = run(client.argv("ping", "-M", "do", "-s", str(mtu - 28), "-c", "2", "-i", "0.1", "-W", "2", "-q", ip),
               check=False, timeout=30)
    over = run(client.argv("ping", "-M", "do", "-s", str(mtu - 27), "-c", "1", "-W", "1", "-q", ip),
               check=False, timeout=30)
    before = [_frag_counters(w) for w in watch]
    iperf(server, client, seconds)
    after = [_frag_counters(w) for w in watch]
    fragmented = sum(a[k] - b[k] for a, b in zip(after, before) for k in a)
    return {"mtu": mtu, "df_full_size_ok": fits.returncode == 0, "df_oversize_refused": over.returncode != 0,
            "fragments_during_tcp": fragmented,
            "ok": fits.returncode == 0 and over.returncode != 0 and fragmented == 0}


class HandPath:
    """The baseline: two namespaces joined by a plain veth pair, in a throwaway node."""

    def __init__(self):
        self.node = ThrowawayNode("dp")
        pre = self.node.prefix()
        a, b = f"{PREFIX}a", f"{PREFIX}b"
        run(pre + ["ip", "netns", "add", a])
        run(pre + ["ip", "netns", "add", b])
        run(pre + ["ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])
        for ns, addr in ((a, "10.250.0.1/24"), (b, "10.250.0.2/24")):
            run(pre + ["ip", "-n", ns, "addr", "add", addr, "dev", "eth0"])
            run(pre + ["ip", "-n", ns, "link", "set", "eth0", "up"])
            run(pre + ["ip", "-n", ns, "link", "set", "lo", "up"])
        self.client, self.server = Endpoint(pre, a), Endpoint(pre, b)
        self.watch = [self.client.argv(), self.server.argv()]

    def close(self):
        self.node.close()


class HandCluster:
    """The hand-built equivalent of a 2-node lab, in one throwaway node: a switch namespace
    with a bridge (the lab's underlay), two node namespaces on it, each with a bridge and
    pods on veths, and host-gw routes or a VXLAN device between the nodes. Nothing of the
    collection runs: no firewall table, no static neighbours, no sysctls beyond forwarding."""

    UNDERLAY = {"h1": "192.168.77.11", "h2": "192.168.77.12"}
    POD_NET = {"h1": "10.250.0", "h2": "10.250.1"}
    PODS = {"h1": ["p11", "p12"], "h2": ["p21"]}

    def __init__(self, backend):
        self.node = ThrowawayNode("h" + backend[0])
        pre = self.node.prefix()
        mtu = 1450 if backend == "vxlan" else 1500
        macs = {"h1": "0e:00:00:00:00:01", "h2": "0e:00:00:00:00:02"}

        def batch(ns, *cmds):
            text = "\n".join(" ".join(str(w) for w in c) for c in cmds) + "\n"
            run(pre + ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"], input=text)

        batch(None, *[["netns", "add", ns] for ns in ["sw", "h1", "h2", "p11", "p12", "p21"]])
        batch("sw", ["link", "add", "br0", "type", "bridge"], ["link", "set", "br0", "up"],
              *[c for h in ("h1", "h2") for c in (
                  ["link", "add", f"v-{h}", "type", "veth", "peer", "name", "eth0", "netns", h],
                  ["link", "set", f"v-{h}", "master", "br0", "up"])])
        for h, other in (("h1", "h2"), ("h2", "h1")):
            net, peer_net = self.POD_NET[h], self.POD_NET[other]
            run(pre + ["ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            cmds = [["link", "set", "lo", "up"], ["addr", "add", f"{self.UNDERLAY[h]}/24", "dev", "eth0"],
                    ["link", "set", "eth0", "up"], ["link", "add", "cni0", "mtu", mtu, "type", "bridge"],
                    ["addr", "add", f"{net}.1/24", "dev", "cni0"], ["link", "set", "cni0", "up"]]
            if backend == "vxlan":
                cmds += [["link", "add", "vx", "address", macs[h], "mtu", mtu, "type", "vxlan", "id", 1,
                          "local", self.UNDERLAY[h], "dev", "eth0", "dstport", 8472, "nolearning"],
                         ["addr", "add", f"{net}.0/32", "dev", "vx"], ["link", "set", "vx", "up"],
                         ["neigh", "add", f"{peer_net}.0", "lladdr", macs[other], "dev", "vx", "nud", "permanent"],
                         ["route", "add", f"{peer_net}.0/24", "via", f"{peer_net}.0", "dev", "vx", "onlink"]]
            else:
                cmds.append(["route", "add", f"{peer_net}.0/24", "via", self.UNDERLAY[other]])
            for pod in self.PODS[h]:
                cmds += [["link", "add", f"veth{pod}", "mtu", mtu, "type", "veth", "peer", "name", "eth0",
                          "mtu", mtu, "netns", pod],
                         ["link", "set", f"veth{pod}", "master", "cni0", "up"]]
            batch(h, *cmds)
            if backend == "vxlan":
                run(pre + ["ip", "netns", "exec", h, "bridge", "fdb", "append", macs[other], "dev", "vx",
                           "dst", self.UNDERLAY[other]])
            for i, pod in enumerate(self.PODS[h]):
                batch(pod, ["link", "set", "lo", "up"], ["addr", "add", f"{net}.{i + 2}/24", "dev", "eth0"],
                      ["link", "set", "eth0", "up"], ["route", "add", "default", "via", f"{net}.1"])
        node_argv = {h: pre + ["ip", "netns", "exec", h] for h in ("h1", "h2")}
        self.client, self.local, self.remote = Endpoint(pre, "p11"), Endpoint(pre, "p12"), Endpoint(pre, "p21")
        self.watch_local = [self.client.argv(), self.local.argv(), node_argv["h1"]]
        self.watch_remote = [self.client.argv(), self.remote.argv(), node_argv["h1"], node_argv["h2"]]

    def close(self):
        self.node.close()


class LabPaths:
    """Pods built by site.yml on a lab: n1-pod-1 is the client; n1-pod-2 (same node, when
    there is one) and n2-pod-1 (the other node) are the servers."""

    def __init__(self, backend, lab=None):
        self.backend = backend
        self.own = lab is None
        self.lab = lab or labctl.Lab(2, pods_per_node=2, backend=backend, tag="d" + backend[0])
        if self.own:
            try:
                self.lab.start()
                self.lab.playbook("site.yml")
            except BaseException:
                self.lab.stop()
                raise
        n1, n2 = self.lab.node_prefix("n1"), self.lab.node_prefix("n2")
        self.client = Endpoint(n1, "n1-pod-1")
        self.remote = Endpoint(n2, "n2-pod-1")
        self.local = Endpoint(n1, "n1-pod-2") if self.lab.pods_per_node >= 2 else None
        # Underlay fragmentation would show in the nodes' own namespaces.
        self.watch_local = [self.client.argv(), self.local.argv(), n1] if self.local else None
        self.watch_remote = [self.client.argv(), self.remote.argv(), n1, n2]

    def close(self):
        if self.own:
            self.lab.stop()


def measure(reps, seconds=3, pings=20, log=print, backends=("host-gw", "vxlan"), lab=None):
    """With ``lab`` (a started 2-node labctl.Lab that site.yml has built, backend host-gw),
    measure on it instead of building labs of our own."""
    if not shutil.which("iperf3"):
        raise Skip("iperf3 is not installed (apt-get install -y iperf3)")
    result = {"seconds": seconds, "pings": pings, "paths": {}, "frag": {}, "skipped": {}}
    paths = {}
    equivalent = {}  # the collection's path -> the same path built by hand
    hand = HandPath()
    labs, hands = [], []
    try:
        paths["veth pair (hand-built)"] = (hand.server, hand.client, hand.watch)
        try:
            if lab is None:
                labctl.require("site.yml", "lab_up.yml", "lab_down.yml")
            for backend in backends:
                try:
                    lab_paths = LabPaths(backend, lab)
                except RuntimeError as exc:
                    result["skipped"][backend] = str(exc)
                    log(f"dataplane: {backend} lab failed: {exc}")
                    continue
                labs.append(lab_paths)
                by_hand = HandCluster(backend)
                hands.append(by_hand)
                if lab_paths.local and not any(name.startswith("same node") for name in paths):
                    name = f"same node (bridge, {backend} lab)"
                    paths[name] = (lab_paths.local, lab_paths.client, lab_paths.watch_local)
                    equivalent[name] = "same node (bridge), hand-built"
                    paths[equivalent[name]] = (by_hand.local, by_hand.client, by_hand.watch_local)
                name = f"across nodes, {backend}"
                paths[name] = (lab_paths.remote, lab_paths.client, lab_paths.watch_remote)
                equivalent[name] = f"across nodes, {backend}, hand-built"
                paths[equivalent[name]] = (by_hand.remote, by_hand.client, by_hand.watch_remote)
        except Skip as exc:
            result["skipped"]["collection"] = str(exc)
            log(f"dataplane: collection paths skipped: {exc}")
        for name, (server, client, watch) in paths.items():
            result["frag"][name] = frag_check(server, client, watch, seconds=1)
        samples = {name: [] for name in paths}
        for rep in range(reps):
            order = list(paths)
            random.shuffle(order)
            for name in order:
                server, client, _watch = paths[name]
                sample = iperf(server, client, seconds)
                sample.update(ping(client, server.ip(), pings))
                samples[name].append(sample)
            log(f"dataplane: repetition {rep + 1}/{reps} done")
        base = "veth pair (hand-built)"
        base_gbps = median([s["gbps"] for s in samples[base]])
        base_ms = median([s["iqm_ms"] for s in samples[base]])
        for name, runs in samples.items():
            gbps = median([s["gbps"] for s in runs])
            rtt = median([s["iqm_ms"] for s in runs])
            result["paths"][name] = {"gbps": gbps, "rtt_ms": rtt, "gbps_vs_veth": ratio(gbps, base_gbps),
                                     "rtt_vs_veth": ratio(rtt, base_ms), "mtu": result["frag"][name]["mtu"],
                                     "runs": runs}
        for name, twin in equivalent.items():
            mine, theirs = result["paths"][name], result["paths"][twin]
            mine.update(hand_built=twin, gbps_vs_hand=ratio(mine["gbps"], theirs["gbps"]),
                        rtt_vs_hand=ratio(mine["rtt_ms"], theirs["rtt_ms"]))
    finally:
        for lab_paths in labs:
            lab_paths.close()
        for by_hand in hands:
            by_hand.close()
        hand.close()
    return result


def report(result):
    rows = [[name, str(p["mtu"]), p["gbps"], p["gbps_vs_veth"], p.get("gbps_vs_hand", "-"),
             p["rtt_ms"] * 1000, p["rtt_vs_veth"], p.get("rtt_vs_hand", "-")]
            for name, p in result["paths"].items()]
    out = [table(f"Data plane (iperf3 {result['seconds']} s TCP, ping x{result['pings']} 1 ms apart, "
                 f"interquartile mean; medians)",
                 ["path", "MTU", "Gbit/s", "vs veth", "vs hand-built", "RTT us", "RTT vs veth",
                  "RTT vs hand-built"], rows)]
    out.append(table("Fragmentation check", ["path", "MTU", "DF full size passes", "DF MTU+1 refused", "fragments", "ok"],
                     [[name, str(f["mtu"]), str(f["df_full_size_ok"]), str(f["df_oversize_refused"]),
                       str(f["fragments_during_tcp"]), str(f["ok"])] for name, f in result["frag"].items()]))
    for what, why in result["skipped"].items():
        out.append(f"not measured: {what}: {why}")
    return "\n\n".join(out)


def check_targets(result):
    targets = [(f"no fragmentation at the configured MTU ({name})", f["ok"], f"MTU {f['mtu']}")
               for name, f in result["frag"].items()]
    for name, p in result["paths"].items():
        if p.get("gbps_vs_hand") is not None:
            targets.append((f"throughput within 5% of the hand-built path ({name})",
                            p["gbps_vs_hand"] >= 0.95, fmt(p["gbps_vs_hand"])))
        if p.get("rtt_vs_hand") is not None:
            targets.append((f"RTT at most 1.05x the hand-built path ({name})",
                            p["rtt_vs_hand"] <= 1.05, fmt(p["rtt_vs_hand"])))
    return targets


__all__ = ["measure", "report", "check_targets", "fmt"]
