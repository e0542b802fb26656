#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Service figures of flatnet.cluster (docs/performance.md, "Services"). Run as root.

    python bench/services.py [--services 1000] [--endpoints 10] [--reps 5] [--connects 2000] [--iperf-seconds 3]

Also ``bench/run --only services``. Two parts, each interleaved (A B A B …) so that the load of
the machine falls on both sides of every ratio alike:

1. Control plane: in a throwaway namespace per run, one ``flatnet.cluster.services`` call
   (given ``services_json``, as the role passes it) programming S services x E endpoints, an
   unchanged rerun, a change of one service (a partial write) and a rerun of that; the same
   for 10 services.
2. Data plane, in throwaway namespaces with the firewall and services tables: TCP connect
   latency (connect only, median of --connects) and iperf3 throughput from a pod to a pod
   behind a router ("another node"), through the ClusterIP and to the pod IP directly. Two
   more paths split the price of the ClusterIP: the pod IP with conntrack forced on (a raw
   chain sets the firewall's "track" mark, so the firewall does not skip conntrack) and a
   bare one-rule DNAT to the same pod (another virtual IP, in a table of its own).

Everything it makes carries the run prefix and is removed, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import PREFIX, collection_root, fmt, kill_group, on_cleanup, done, table  # noqa: E402

MODULE = "ansible_collections.flatnet.cluster.plugins.modules.services"
FIREWALL = "ansible_collections.flatnet.cluster.plugins.modules.firewall"


def sh(*argv, check=True, input=None):  # noqa: A002 (as subprocess.run)
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


CPU = {"last": 0.0}


def _children_cpu():
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def module(ns, name, args, state_dir, root):
    """Run one module process; return (wall seconds, result). CPU["last"] is the CPU time
    (user + system) of that process and of the nft/ip processes it waited for: on a loaded
    machine the wall clock also counts the time spent waiting for a CPU."""
    args = dict(args, state_dir=state_dir)
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", name],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=root, LC_ALL="C"), check=False)
    seconds = time.perf_counter() - start
    CPU["last"] = _children_cpu() - cpu
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"{name}: {proc.stdout[-500:]}{proc.stderr[-2000:]}") from None
    if out.get("failed"):
        raise RuntimeError(out.get("msg"))
    return seconds, out


def make_services(count, endpoints, shift=0):
    out = []
    for i in range(count):
        eps = []
        for j in range(endpoints):
            k = i * endpoints + j + shift
            eps.append({"pod": f"p{i}-{j}", "node": "n",
                        "ip": f"10.{244 + k // 65000}.{(k % 65000) // 250}.{k % 250 + 2}"})
        out.append({"name": f"s{i}", "namespace": "default", "type": "ClusterIP",
                    "cluster_ip": f"10.96.{(i + 11) // 250}.{(i + 11) % 250 + 1}",
                    "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None}],
                    "session_affinity": "None", "session_affinity_timeout": 10800,
                    "external_traffic_policy": "Cluster", "endpoints": eps})
    return out


def control_plane_once(size, endpoints, rep, root):
    ns, state = f"{PREFIX}cp{size}x{rep}", f"/run/{PREFIX}-cp{size}x{rep}"
    sh("ip", "netns", "add", ns)
    try:
        svcs = make_services(size, endpoints)
        base = {"service_cidrs": ["10.96.0.0/12"], "cluster_cidrs": ["10.240.0.0/12"], "node": "n"}
        args = dict(base, services_json=json.dumps(svcs))
        first, out = module(ns, MODULE, args, state, root)
        first_cpu = CPU["last"]
        if not out["changed"]:
            raise RuntimeError("the first run changed nothing")
        rerun, out = module(ns, MODULE, args, state, root)
        rerun_cpu = CPU["last"]
        if out["changed"]:
            raise RuntimeError(f"an unchanged rerun of {size} services changed: {out['actions']}")
        # One service's endpoints change (the last one gets other pods).
        svcs[-1] = dict(svcs[-1], endpoints=make_services(1, endpoints, shift=size * endpoints)[0]["endpoints"])
        args = dict(base, services_json=json.dumps(svcs))
        change, out = module(ns, MODULE, args, state, root)
        change_cpu = CPU["last"]
        if not out["actions"] or not out["actions"][0].startswith("update table"):
            raise RuntimeError(f"a change of one service was not a partial write: {out['actions']}")
        rerun2, out = module(ns, MODULE, args, state, root)
        if out["changed"]:
            raise RuntimeError(f"a rerun after the change changed: {out['actions']}")
        chains = sh("ip", "netns", "exec", ns, "nft", "list", "chains", "ip").stdout.count("\tchain svc-")
        if chains != size:
            raise RuntimeError(f"{chains} service chains for {size} services")
        return {"first_s": first, "rerun_s": rerun, "change_one_s": change, "rerun_after_change_s": rerun2,
                "first_cpu_s": first_cpu, "rerun_cpu_s": rerun_cpu, "change_one_cpu_s": change_cpu}
    finally:
        sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", state, check=False)


def control_plane(count, endpoints, reps, root, log=print):
    samples = {10: [], count: []}
    for rep in range(reps):
        for size in (10, count):  # interleaved: 10, N, 10, N, …
            samples[size].append(control_plane_once(size, endpoints, rep, root))
        log(f"services: control plane rep {rep + 1}/{reps}: {count} services first "
            f"{fmt(samples[count][-1]['first_s'])} s, rerun {fmt(samples[count][-1]['rerun_s'])} s; "
            f"10 services rerun {fmt(samples[10][-1]['rerun_s'])} s")
    rows = {}
    for size, runs in samples.items():
        rows[size] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rows[size]["samples"] = runs
    return rows


CONNECTS = r"""
import socket, statistics, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    s = socket.socket()
    start = time.perf_counter()
    s.connect((host, port))
    times.append(time.perf_counter() - start)
    s.close()
print(statistics.median(times))
"""

SERVER = r"""
import selectors, socket
sel = selectors.DefaultSelector()
for port in (8080, 8090):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1024); sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept(); c.close()
"""

# The four paths: (label, address, port). "pod" is the endpoint itself (10.244.1.2:8080): the
# services table has conntrack follow every packet to and from an endpoint's port (a reply
# tracked without its request can be rewritten by an older DNATed entry), so it pays
# conntrack like the ClusterIP path. "pod_untracked" is the same pod on a port no service
# points at: pod-to-pod traffic the firewall leaves to no conntrack at all.
PATHS = (("pod", "10.244.1.2", 8080), ("clusterip", "10.96.0.20", 80),
         ("pod_untracked", "10.244.1.2", 8090), ("bare_dnat", "10.96.0.30", 80))


def data_plane(reps, connects, seconds, root, log=print):
    names = {k: f"{PREFIX}{k}" for k in ("node", "cli", "srv")}
    procs, state = [], f"/run/{PREFIX}-dp"

    def cleanup():
        for proc in procs:
            kill_group(proc)
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", state, check=False)

    entry = on_cleanup(cleanup)
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        node = names["node"]
        for peer, dev, node_ip, peer_ip in (("cli", "eth1", "10.244.0.1/24", "10.244.0.2/24"),
                                            ("srv", "eth2", "10.244.1.1/24", "10.244.1.2/24")):
            sh("ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", names[peer])
            sh("ip", "-n", node, "addr", "add", node_ip, "dev", dev)
            sh("ip", "-n", node, "link", "set", dev, "up")
            sh("ip", "-n", names[peer], "addr", "add", peer_ip, "dev", "eth0")
            sh("ip", "-n", names[peer], "link", "set", "eth0", "up")
            sh("ip", "-n", names[peer], "route", "add", "default", "via", node_ip.split("/", maxsplit=1)[0])
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        module(node, FIREWALL, {"cluster_cidrs": ["10.244.0.0/16"]}, state, root)
        ports = [{"name": "c", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None},
                 {"name": "i", "port": 5201, "target_port": 5201, "protocol": "tcp", "node_port": None}]
        svc = {"name": "srv", "namespace": "default", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
               "ports": ports, "session_affinity": "None", "session_affinity_timeout": 10800,
               "external_traffic_policy": "Cluster", "endpoints": [{"pod": "srv", "node": "n", "ip": "10.244.1.2"}]}
        module(node, MODULE, {"services_json": json.dumps([svc]), "service_cidrs": ["10.96.0.0/12"],
                              "cluster_cidrs": ["10.244.0.0/16"], "node": "n"}, state, root)
        # The bare DNAT path, in a table of the benchmark's own: 10.96.0.30:80 is DNATed by one
        # rule, ahead of flatnet-svc.
        sh("ip", "netns", "exec", node, "nft", "-f", "-", input=(
            "table ip bench {\n"
            "\tchain nat {\n\t\ttype nat hook prerouting priority -101; policy accept;\n"
            "\t\tip daddr 10.96.0.30 tcp dport 80 dnat to 10.244.1.2:8080\n\t}\n"
            "}\n"))
        for argv in ([sys.executable, "-c", SERVER], ["iperf3", "-s"]):
            procs.append(subprocess.Popen(["ip", "netns", "exec", names["srv"]] + argv,  # pylint: disable=consider-using-with
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        time.sleep(1)

        lat = {label: [] for label, _h, _p in PATHS}
        bps = {"pod": [], "clusterip": []}
        for rep in range(reps):
            for label, host, port in PATHS:
                lat[label].append(float(sh("ip", "netns", "exec", names["cli"], sys.executable, "-c", CONNECTS,
                                           host, port, connects).stdout))
            for label, host in (("pod", "10.244.1.2"), ("clusterip", "10.96.0.20")):
                res = json.loads(sh("ip", "netns", "exec", names["cli"], "iperf3", "-J", "-c", host,
                                    "-t", seconds).stdout)
                bps[label].append(res["end"]["sum_received"]["bits_per_second"])
            log(f"services: data plane rep {rep + 1}/{reps}: connect µs " +
                ", ".join(f"{k} {v[-1] * 1e6:.1f}" for k, v in lat.items()))
        out = {label: {"connect_s": statistics.median(v), "connect_samples": v} for label, v in lat.items()}
        for label, v in bps.items():
            out[label].update(bits_per_second=statistics.median(v), bps_samples=v)
        # Per-rep ratios (same rep, minutes apart at most), then their median.
        out["latency_ratios"] = [c / p for c, p in zip(lat["clusterip"], lat["pod"])]
        return out
    finally:
        done(entry)


def measure(count=1000, endpoints=10, reps=5, connects=2000, seconds=3, log=print):
    root = collection_root()
    load_before = os.getloadavg()
    cp = control_plane(count, endpoints, reps, root, log=log)
    dp = data_plane(reps, connects, seconds, root, log=log)
    big, small = cp[count], cp[10]
    return {
        "services": count, "endpoints": endpoints, "reps": reps, "connects": connects,
        "load_before": load_before, "load_after": os.getloadavg(), "control_plane": {str(k): v for k, v in cp.items()},
        "program_s": big["first_s"], "rerun_s": big["rerun_s"], "change_one_s": big["change_one_s"],
        "small_rerun_s": small["rerun_s"], "small_first_s": small["first_s"],
        "program_cpu_s": big["first_cpu_s"], "rerun_cpu_s": big["rerun_cpu_s"], "change_one_cpu_s": big["change_one_cpu_s"],
        "small_rerun_cpu_s": small["rerun_cpu_s"],
        "rerun_ratio": big["rerun_s"] / small["rerun_s"],
        "rerun_cpu_ratio": big["rerun_cpu_s"] / small["rerun_cpu_s"],
        "rerun_ratios": [b["rerun_s"] / s["rerun_s"] for b, s in zip(big["samples"], small["samples"])],
        "latency_ratio": statistics.median(dp["latency_ratios"]),
        "throughput_ratio": dp["clusterip"]["bits_per_second"] / dp["pod"]["bits_per_second"],
        "dataplane": dp,
    }


def report(r):
    dp, n = r["dataplane"], r["services"]
    us = {k: dp[k]["connect_s"] * 1e6 for k in ("pod", "pod_untracked", "bare_dnat", "clusterip")}
    rows = [
        [f"program {n} services x {r['endpoints']} endpoints, one call", f"{fmt(r['program_s'])} s "
         f"(CPU {fmt(r['program_cpu_s'])} s)", "< 2 s"],
        ["unchanged rerun of that", f"{fmt(r['rerun_s'])} s (CPU {fmt(r['rerun_cpu_s'])} s)", ""],
        ["change of one service (partial write)", f"{fmt(r['change_one_s'])} s (CPU {fmt(r['change_one_cpu_s'])} s)", ""],
        ["unchanged rerun, 10 services", f"{fmt(r['small_rerun_s'])} s (CPU {fmt(r['small_rerun_cpu_s'])} s)", ""],
        [f"rerun ratio ({n} / 10)", f"{fmt(r['rerun_ratio'])} (CPU {fmt(r['rerun_cpu_ratio'])}; per rep "
         + ", ".join(fmt(x) for x in r["rerun_ratios"]) + ")", "<= 1.5"],
        ["connect latency, ClusterIP / pod IP", f"{fmt(r['latency_ratio'], 3)} ({us['clusterip']:.1f} / {us['pod']:.1f} µs)",
         "<= 1.1"],
        ["  pod IP, a port no service points at (untracked) / pod IP", fmt(us["pod_untracked"] / us["pod"], 3), ""],
        ["  bare one-rule DNAT / pod IP", fmt(us["bare_dnat"] / us["pod"], 3), ""],
        ["throughput, ClusterIP / pod IP", f"{fmt(r['throughput_ratio'], 3)} ({dp['clusterip']['bits_per_second'] / 1e9:.1f}"
         f" / {dp['pod']['bits_per_second'] / 1e9:.1f} Gbit/s)", ">= 0.95"],
    ]
    return table(f"Services (medians of {r['reps']} interleaved reps; load {r['load_before'][0]:.1f} -> "
                 f"{r['load_after'][0]:.1f})", ["figure", "value", "target"], rows)


def check_targets(r):
    n = r["services"]
    return [
        (f"services: {n} x {r['endpoints']} in one call < 2 s", r["program_s"] < 2, fmt(r["program_s"])),
        (f"services: unchanged rerun {n} <= 1.5x 10 services", r["rerun_ratio"] <= 1.5, fmt(r["rerun_ratio"])),
        ("services: ClusterIP connect latency <= 1.1x pod IP", r["latency_ratio"] <= 1.1, fmt(r["latency_ratio"], 3)),
        ("services: ClusterIP throughput >= 0.95x pod IP", r["throughput_ratio"] >= 0.95, fmt(r["throughput_ratio"], 3)),
    ]


def main(argv):
    parser = argparse.ArgumentParser(prog="bench/services.py")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--iperf-seconds", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/services.py: needs root (namespaces)", file=sys.stderr)
        return 2
    import common  # pylint: disable=import-outside-toplevel
    common.install_handlers()
    try:
        res = measure(args.services, args.endpoints, args.reps, args.connects, args.iperf_seconds)
    finally:
        common.cleanup_all()
    print(report(res))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
