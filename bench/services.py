#!/usr/bin/env python
# SPDX-License-Identifier: GPL-3.0-or-later
"""Service figures of flatnet.cluster (docs/performance.md, "Services"). Run as root.

    python bench/services.py [--services 1000] [--endpoints 10] [--reps 3] [--connects 2000] [--iperf-seconds 3]

1. Control plane: one flatnet.cluster.services call programming S services x E endpoints in a
   throwaway namespace, and an unchanged rerun, against the same for 10 services.
2. Data plane, in throwaway namespaces with the firewall and services tables: TCP connect
   latency (connect + close, median) and iperf3 throughput from a pod to another pod behind a
   router ("another node"), through the ClusterIP and to the pod IP directly.

Medians of --reps runs; ratios are measured in the same run. Prints a Markdown table and JSON.
Everything it makes carries a random prefix and is removed, even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "b" + secrets.token_hex(3)
MODULE = "ansible_collections.flatnet.cluster.plugins.modules.services"
FIREWALL = "ansible_collections.flatnet.cluster.plugins.modules.firewall"


def sh(*argv, check=True, input=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


def collections_path():
    """A directory where ``ansible_collections.flatnet.cluster`` is this checkout."""
    parts = ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "flatnet"]:
        return os.sep.join(parts[:-3])
    tmp = f"/run/{PREFIX}-coll"
    os.makedirs(os.path.join(tmp, "ansible_collections", "flatnet"), exist_ok=True)
    link = os.path.join(tmp, "ansible_collections", "flatnet", "cluster")
    if not os.path.exists(link):
        os.symlink(ROOT, link)
    return tmp


def module(ns, name, args, state_dir):
    args = dict(args, state_dir=state_dir)
    start = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", name],
                          input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=collections_path(), LC_ALL="C"), check=False)
    seconds = time.monotonic() - start
    out = json.loads(proc.stdout)
    if out.get("failed"):
        raise RuntimeError(out.get("msg"))
    return seconds, out


def make_services(count, endpoints):
    out = []
    for i in range(count):
        eps = [{"pod": f"p{i}-{j}", "node": "n", "ip": f"10.{244 + (i * endpoints + j) // 65000}."
                f"{((i * endpoints + j) % 65000) // 250}.{(i * endpoints + j) % 250 + 2}"} for j in range(endpoints)]
        out.append({"name": f"s{i}", "namespace": "default", "type": "ClusterIP",
                    "cluster_ip": f"10.96.{(i + 11) // 250}.{(i + 11) % 250 + 1}",
                    "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None}],
                    "session_affinity": "None", "session_affinity_timeout": 10800,
                    "external_traffic_policy": "Cluster", "endpoints": eps})
    return out


def control_plane(count, endpoints, reps):
    rows = {}
    for size in (10, count):
        first, rerun = [], []
        for rep in range(reps):
            ns, state = f"{PREFIX}cp{size}x{rep}", f"/run/{PREFIX}-cp{size}x{rep}"
            sh("ip", "netns", "add", ns)
            try:
                args = {"services": make_services(size, endpoints), "service_cidrs": ["10.96.0.0/12"],
                        "cluster_cidrs": ["10.240.0.0/12"], "node": "n"}
                seconds, out = module(ns, MODULE, args, state)
                assert out["changed"], out
                first.append(seconds)
                seconds, out = module(ns, MODULE, args, state)
                assert not out["changed"], out
                rerun.append(seconds)
            finally:
                sh("ip", "netns", "del", ns, check=False)
                sh("rm", "-rf", state, check=False)
        rows[size] = {"first": statistics.median(first), "rerun": statistics.median(rerun)}
    return rows


CONNECTS = r"""
import socket, statistics, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
times = []
for _ in range(n):
    start = time.perf_counter()
    s = socket.create_connection((host, port), timeout=2)
    times.append(time.perf_counter() - start)
    s.close()
print(statistics.median(times))
"""

SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()
"""


def data_plane(reps, connects, seconds):
    names = {k: f"{PREFIX}{k}" for k in ("node", "cli", "srv")}
    procs, state = [], f"/run/{PREFIX}-dp"
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
        module(node, FIREWALL, {"cluster_cidrs": ["10.244.0.0/16"]}, state)
        ports = [{"name": "c", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None},
                 {"name": "i", "port": 5201, "target_port": 5201, "protocol": "tcp", "node_port": None}]
        svc = {"name": "srv", "namespace": "default", "type": "ClusterIP", "cluster_ip": "10.96.0.20",
               "ports": ports, "session_affinity": "None", "session_affinity_timeout": 10800,
               "external_traffic_policy": "Cluster", "endpoints": [{"pod": "srv", "node": "n", "ip": "10.244.1.2"}]}
        module(node, MODULE, {"services": [svc], "service_cidrs": ["10.96.0.0/12"],
                              "cluster_cidrs": ["10.244.0.0/16"], "node": "n"}, state)
        for argv in ([sys.executable, "-c", SERVER], ["iperf3", "-s"]):
            procs.append(subprocess.Popen(["ip", "netns", "exec", names["srv"]] + argv,  # pylint: disable=consider-using-with
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        time.sleep(1)
        out = {}
        for label, host in (("pod", "10.244.1.2"), ("clusterip", "10.96.0.20")):
            lat = [float(sh("ip", "netns", "exec", names["cli"], sys.executable, "-c", CONNECTS, host, 80 if label
                            == "clusterip" else 8080, connects).stdout) for _rep in range(reps)]
            bps = []
            for _rep in range(reps):
                res = json.loads(sh("ip", "netns", "exec", names["cli"], "iperf3", "-J", "-c", host, "-t", seconds).stdout)
                bps.append(res["end"]["sum_received"]["bits_per_second"])
            out[label] = {"connect_s": statistics.median(lat), "bits_per_second": statistics.median(bps)}
        return out
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", state, check=False)


def main(argv):
    parser = argparse.ArgumentParser(prog="bench/services.py")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connects", type=int, default=2000)
    parser.add_argument("--iperf-seconds", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/services.py: needs root (namespaces)", file=sys.stderr)
        return 2
    try:
        cp = control_plane(args.services, args.endpoints, args.reps)
        dp = data_plane(args.reps, args.connects, args.iperf_seconds)
    finally:
        sh("rm", "-rf", f"/run/{PREFIX}-coll", check=False)
    big, small = cp[args.services], cp[10]
    figures = {
        "program_s": big["first"], "rerun_s": big["rerun"], "small_first_s": small["first"],
        "small_rerun_s": small["rerun"], "rerun_ratio": big["rerun"] / small["rerun"],
        "latency_ratio": dp["clusterip"]["connect_s"] / dp["pod"]["connect_s"],
        "throughput_ratio": dp["clusterip"]["bits_per_second"] / dp["pod"]["bits_per_second"],
        "dataplane": dp, "services": args.services, "endpoints": args.endpoints, "reps": args.reps,
    }
    print(f"| figure | value | target |\n|---|---|---|\n"
          f"| program {args.services} services x {args.endpoints} endpoints, one call | {big['first']:.2f} s | < 2 s |\n"
          f"| unchanged rerun of that | {big['rerun']:.2f} s | |\n"
          f"| unchanged rerun, 10 services | {small['rerun']:.2f} s | |\n"
          f"| rerun ratio ({args.services} / 10) | {figures['rerun_ratio']:.2f} | <= 1.5 |\n"
          f"| connect latency, ClusterIP / pod IP | {figures['latency_ratio']:.3f} "
          f"({dp['clusterip']['connect_s'] * 1e6:.0f} / {dp['pod']['connect_s'] * 1e6:.0f} us) | <= 1.1 |\n"
          f"| throughput, ClusterIP / pod IP | {figures['throughput_ratio']:.3f} "
          f"({dp['clusterip']['bits_per_second'] / 1e9:.1f} / {dp['pod']['bits_per_second'] / 1e9:.1f} Gbit/s) | >= 0.95 |")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
