# SPDX-License-Identifier: GPL-3.0-or-later
"""Runs inside a throwaway node (see common.ThrowawayNode): builds N pods one way, times it,
checks the pods work, reruns, tears down, and prints one JSON object.

Ways (``method``):
- ``module``: the collection's pods module, one module process for all pods.
- ``cni``: the CNI reference plugins, as a container runtime drives them: the runtime makes
  the netns (here one ``ip -batch``), then ``bridge`` (host-local IPAM) and ``loopback``
  ADD per pod; DEL per pod, then the netns go.
- ``ip``: a naive role, one ``ip`` process per step.

Only the standard library: it runs with whatever Python drives the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ENV = dict(os.environ, LC_ALL="C")


def sh(argv, data=None, env=None, check=True):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, env=env or ENV, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def pod_ip(i):
    return f"10.244.0.{i + 2}"


def module_call(spec, state):
    args = {
        "bridge": spec["bridge"], "mtu": spec["mtu"], "gateways": ["10.244.0.1"],
        "pods": [{"name": p, "ips": [pod_ip(i) + "/24"], "command": None} for i, p in enumerate(spec["pods"])],
        "prune": True, "state": state, "state_dir": spec["state_dir"],
    }
    env = dict(ENV, PYTHONPATH=spec["pythonpath"])
    start = time.perf_counter()
    proc = sh([spec["python"], "-m", "ansible_collections.flatnet.cluster.plugins.modules.pods"],
              data=json.dumps({"ANSIBLE_MODULE_ARGS": args}), env=env, check=False)
    elapsed = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"pods module printed no JSON (rc={proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    if result.get("failed") or proc.returncode != 0:
        raise RuntimeError(f"pods module failed: {result.get('msg')}")
    return elapsed, result


def cni_conf(spec):
    return {
        "cniVersion": "1.0.0", "name": spec["bridge"], "type": "bridge", "bridge": spec["bridge"],
        "isGateway": True, "ipMasq": False, "mtu": spec["mtu"],
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": spec["cni_dir"]},
    }


def cni_call(spec, command, plugin, conf, pod):
    env = dict(ENV, CNI_COMMAND=command, CNI_CONTAINERID=f"{pod}-id", CNI_NETNS=f"/run/netns/{pod}",
               CNI_IFNAME="eth0", CNI_PATH=spec["cni_path"])
    proc = sh([os.path.join(spec["cni_path"], plugin)], data=json.dumps(conf), env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"CNI {plugin} {command} {pod} failed: {proc.stdout.strip()} {proc.stderr.strip()}")


def cni_add(spec):
    bridge_conf = cni_conf(spec)
    lo_conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    start = time.perf_counter()
    sh(["ip", "-batch", "-"], data="".join(f"netns add {p}\n" for p in spec["pods"]))
    netns = time.perf_counter() - start
    bridge = 0.0
    for pod in spec["pods"]:
        t0 = time.perf_counter()
        cni_call(spec, "ADD", "bridge", bridge_conf, pod)
        bridge += time.perf_counter() - t0
        cni_call(spec, "ADD", "loopback", lo_conf, pod)
    return time.perf_counter() - start, {"netns_s": netns, "bridge_plugin_s": bridge}


def cni_del(spec):
    bridge_conf = cni_conf(spec)
    lo_conf = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}
    start = time.perf_counter()
    for pod in spec["pods"]:
        cni_call(spec, "DEL", "bridge", bridge_conf, pod)
        cni_call(spec, "DEL", "loopback", lo_conf, pod)
    sh(["ip", "-batch", "-"], data="".join(f"netns del {p}\n" for p in spec["pods"]))
    return time.perf_counter() - start


def veth(pod, i):
    return f"{pod.split('-')[0]}v{i}"


def ip_add(spec):
    start = time.perf_counter()
    br, mtu = spec["bridge"], str(spec["mtu"])
    for i, pod in enumerate(spec["pods"]):
        host = veth(pod, i)
        sh(["ip", "netns", "add", pod])
        sh(["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod])
        sh(["ip", "link", "set", host, "master", br])
        sh(["ip", "link", "set", host, "mtu", mtu, "up"])
        sh(["ip", "-n", pod, "addr", "add", pod_ip(i) + "/24", "dev", "eth0"])
        sh(["ip", "-n", pod, "link", "set", "eth0", "mtu", mtu, "up"])
        sh(["ip", "-n", pod, "link", "set", "lo", "up"])
        sh(["ip", "-n", pod, "route", "add", "default", "via", "10.244.0.1"])
    return time.perf_counter() - start


def ip_del(spec):
    start = time.perf_counter()
    for pod in spec["pods"]:
        # The veth goes with the namespace.
        sh(["ip", "netns", "del", pod])
    return time.perf_counter() - start


def check_pods(spec):
    """The pods must really be there and reach each other through the bridge."""
    names = set(sh(["ip", "netns", "list"]).stdout.split()) & set(spec["pods"])
    if len(names) != len(spec["pods"]):
        raise RuntimeError(f"{len(names)} of {len(spec['pods'])} pod namespaces exist")
    first, last = spec["pods"][0], spec["pods"][-1]
    addrs = json.loads(sh(["ip", "-n", last, "-j", "addr", "show", "dev", "eth0"]).stdout)
    have = [a["local"] for a in addrs[0].get("addr_info", [])]
    if pod_ip(len(spec["pods"]) - 1) not in have:
        raise RuntimeError(f"{last} eth0 has {have}, expected {pod_ip(len(spec['pods']) - 1)}")
    target = pod_ip(len(spec["pods"]) - 1) if len(spec["pods"]) > 1 else "10.244.0.1"
    sh(["ip", "netns", "exec", first, "ping", "-c", "1", "-W", "2", "-q", target])


def check_gone(spec):
    left = set(sh(["ip", "netns", "list"]).stdout.split()) & set(spec["pods"])
    if left:
        raise RuntimeError(f"{len(left)} pod namespaces left after teardown")


def fixed_bridge_mac(spec):
    """The MAC flatnet.cluster.node gives the bridge (the pods pin their gateway to it)."""
    sys.path.insert(0, spec["pythonpath"])
    from ansible_collections.flatnet.cluster.plugins.module_utils.names import bridge_mac

    return bridge_mac(spec["bridge"], ["10.244.0.1/24"])


def main():
    spec = json.load(sys.stdin)
    br = spec["bridge"]
    # Made as flatnet.cluster.node makes it, fixed MAC included, for every way alike.
    sh(["ip", "link", "add", br, "address", fixed_bridge_mac(spec), "type", "bridge"])
    sh(["ip", "link", "set", br, "mtu", str(spec["mtu"]), "alias", "flatnet", "up"])
    sh(["ip", "addr", "add", "10.244.0.1/24", "dev", br])
    sh(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    out = {"method": spec["method"], "n": len(spec["pods"])}
    method = spec["method"]
    if method == "module":
        out["add_s"], res = module_call(spec, "present")
        if not res.get("changed"):
            raise RuntimeError("pods module reported no change on first run")
        check_pods(spec)
        out["rerun_s"], res = module_call(spec, "present")
        out["rerun_changed"] = bool(res.get("changed"))
        out["del_s"], _res = module_call(spec, "absent")
    elif method == "cni":
        out["add_s"], detail = cni_add(spec)
        out.update(detail)
        check_pods(spec)
        out["del_s"] = cni_del(spec)
    elif method == "ip":
        out["add_s"] = ip_add(spec)
        check_pods(spec)
        out["del_s"] = ip_del(spec)
    else:
        raise SystemExit(f"unknown method {method}")
    check_gone(spec)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
