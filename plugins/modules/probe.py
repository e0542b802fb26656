#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Probe the Kubernetes network model from one node: its pods and its host network."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe
short_description: Check the Kubernetes network model from one node
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Runs connectivity checks from this node against the probe agents that
    M(flatnet.cluster.probe_agents) started in the pods of every node, in parallel threads
    with short timeouts, and returns one result per check. It changes nothing.
  - Sources are the node's own pods (each thread enters the pod's network namespace with
    C(setns(2)) only to open its socket) and the node's host network.
  - C(pod-pod) (proto C(http) and C(udp)) - every local pod to every target pod (or a sample),
    same node and across nodes; the right pod must answer (C(/hostname)) and it must see the
    caller's pod IP (C(/clientip)), i.e. no NAT between pods.
  - C(node-pod-local) and C(node-pod-remote) - the host network to pods on this node and on
    other nodes; the right pod must answer and the source it sees must be one of O(node_ips)
    (the node's own addresses), never a translated one.
  - C(mtu) - from one local pod to each of O(mtu_targets), a UDP datagram of exactly
    O(mtu) bytes (IP header included) with DF set must get an answer, and one of O(mtu)+1
    bytes must be refused locally with C(EMSGSIZE).
  - C(egress) - from every local pod, C(GET /clientip) on an address outside the cluster must
    show the node's underlay IP (masquerade).
  - C(identity) - every local pod's C(eth0) is up and carries exactly its planned addresses
    (and has MTU O(mtu) when the C(mtu) check runs).
options:
  node:
    description: This node's name, as used in O(targets).
    type: str
    required: true
  local_pods:
    description: This node's pods, the sources of the pod checks.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Pod name (its named network namespace).
        type: str
        required: true
      ips:
        description: The pod's addresses, with or without prefix.
        type: list
        elements: str
        default: []
  targets:
    description:
      - Destinations, one entry per pod address, for the whole cluster (this node's pods included).
    type: list
    elements: dict
    default: []
  target_lines:
    description:
      - The same destinations as O(targets), one line C(NODE POD IP) each, as the
        P(flatnet.cluster.probe_targets#filter) filter gives them with C(lines=true). Ansible
        passes a string per target much faster than a mapping (1,000 pods and more).
      - Added to O(targets) (the C(flatnet.cluster.verify) role passes the pods as lines and the
        containers attached through CNI as O(targets)).
    type: list
    elements: str
    version_added: 0.2.0
  node_ips:
    description:
      - Addresses this node may show up as when its host network talks to pods - the underlay
        IP, the bridge gateway addresses and the VTEP addresses (no prefix).
      - Linux picks the source from the route - a local pod sees the gateway address, a remote
        pod the underlay IP (host-gw) or the node's VTEP address (VXLAN).
      - Empty means the source is not checked for node checks.
    type: list
    elements: str
    default: []
  http_port:
    description: HTTP port of the probe agents.
    type: int
    default: 8083
  udp_port:
    description: UDP port of the probe agents.
    type: int
    default: 8081
  timeout:
    description: Seconds each single probe may take.
    type: float
    default: 2.0
  workers:
    description: Probes run at the same time.
    type: int
    default: 32
  mtu:
    description: The pod MTU of the plan; the C(mtu) check runs only when it is set.
    type: int
  mtu_targets:
    description:
      - Pods on other nodes to send the MTU datagrams to (same suboptions as O(targets)); targets on
        this node (O(node)) are skipped.
      - The first local pod is the source.
    type: list
    elements: dict
    default: []
  egress:
    description: Outside endpoint for the C(egress) check (an HTTP C(/clientip) service).
    type: dict
    suboptions:
      ip:
        description: Address outside the cluster.
        type: str
        required: true
      port:
        description: Its HTTP port.
        type: int
        default: 8083
      expect_source:
        description: The address the endpoint must see, the node's underlay IP.
        type: str
        required: true
  sample:
    description:
      - V(null) probes every pair (pods x pods in the cluster).
      - A number N samples by node, so that a node's probes grow with the nodes and not with
        pods x nodes. Each local pod probes the next pod of its node; every other node is probed
        once by one local pod (the local pods take turns, and whole rounds more are made while a pod
        has no remote target yet); on top of that come N random pairs. The target pod on each
        node is chosen by this node's rank, so across the cluster every pod of every node is
        the target of cross-node probes, and every ordered pair of nodes is covered once.
      - The host network then probes every local pod and one pod on every other node.
      - The choice is deterministic for a given O(seed) and node.
    type: int
  seed:
    description: Seed of the sampling.
    type: str
    default: flatnet
  checks:
    description: Checks to run.
    type: list
    elements: str
    choices: [pod-pod, node-pod-local, node-pod-remote, mtu, egress, identity]
    default: [pod-pod, node-pod-local, node-pod-remote, mtu, egress, identity]
  retries:
    description:
      - How many times a failed probe is run again (V(0) or V(1)), after every probe ran once.
      - The retry's timeout is adapted to the load - max(O(timeout), O(retry_factor) times the
        median duration of the probes that passed at the first attempt), at most 5 times
        O(timeout). A probe that fails again is a failure; one that passes is reported with
        C(retried=true) ("passed on retry").
    type: int
    default: 1
    choices: [0, 1]
  retry_factor:
    description: Factor applied to the measured baseline (the median duration of the first passes).
    type: float
    default: 10.0
extends_documentation_fragment:
  - flatnet.cluster.probe_target
  - flatnet.cluster.attributes.read_only
attributes:
  check_mode:
    description: The probes only read; they run in check mode too.
  diff_mode:
    description: Nothing to show as a diff.
seealso:
  - module: flatnet.cluster.probe_agents
  - module: flatnet.cluster.verify_report
"""

EXAMPLES = r"""
- name: Probe the cluster from this node
  flatnet.cluster.probe:
    node: "{{ inventory_hostname }}"
    local_pods: [{name: node1-pod-1, ips: [10.244.0.2/24]}]
    targets:
      - {node: node1, pod: node1-pod-1, ip: 10.244.0.2}
      - {node: node2, pod: node2-pod-1, ip: 10.244.1.2}
    node_ips: [192.168.50.11, 10.244.0.1, 10.244.0.0]
    mtu: 1450
    mtu_targets: [{node: node2, pod: node2-pod-1, ip: 10.244.1.2}]
  register: probe
"""

RETURN = r"""
results:
  description: One entry per check.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description: C(pod-pod), C(node-pod-local), C(node-pod-remote), C(mtu), C(egress) or C(identity).
      type: str
    proto:
      description: C(http), C(udp) or C(addr) (identity).
      type: str
    src_node:
      description: Node the probe ran from.
      type: str
    src:
      description: Source pod, or C(host) for the node's host network.
      type: str
    src_ip:
      description: Address the source used (pod IP), or null for the host network.
      type: str
    dst_node:
      description: Node of the destination pod (null for egress).
      type: str
    dst:
      description: Destination pod (or C(outside)).
      type: str
    dst_ip:
      description: Destination address.
      type: str
    ok:
      description: Whether the check passed.
      type: bool
    reason:
      description:
        - C(ok), C(timeout), C(refused), C(unreachable), C(wrong-pod), C(wrong-source),
          C(mtu-too-small), C(mtu-not-enforced), C(bad-address), C(bad-mtu), C(error).
      type: str
    seen:
      description: What was observed (pod name and caller address seen by the receiver).
      type: str
    expected:
      description: What was expected.
      type: str
    error:
      description: Error text, null when ok.
      type: str
    seconds:
      description: How long the (last) attempt took.
      type: float
    retried:
      description: Whether the probe failed at its first attempt and was run again.
      type: bool
    first_reason:
      description: The reason of the first attempt's failure (retried probes only).
      type: str
    first_error:
      description: The error of the first attempt (retried probes only).
      type: str
summary:
  description: Counts of passed and failed results, and of the passes on retry.
  returned: always
  type: dict
  sample: {total: 12, failed: 0, retried: 1, passed_on_retry: 1}
retry:
  description:
    - The retry round - C(baseline) (median seconds of the first passes, null when none passed),
      C(timeout) (seconds each retried probe had), C(retried), C(passed_on_retry).
  returned: always
  type: dict
  sample: {baseline: 0.004, timeout: 2.0, retried: 1, passed_on_retry: 1}
neighbour_table_fulls:
  description:
    - How many new neighbour (ARP, ND) entries the kernel refused while the probes ran, because
      its neighbour table was full (C(table_fulls) of C(ip -s ntable show)), per family; a
      family whose counter cannot be read is left out.
    - Non-zero means timeouts may come from the table, not from the network. The table is one
      per kernel, so every lab node on the same machine sees the same count.
  returned: always
  type: dict
  sample: {ipv4: 0, ipv6: 0}
"""

import concurrent.futures
import copy
import ipaddress
import random
import statistics
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import IPRoute2
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.probe_client import (
    AGENT_OPTIONS,
    TARGET_OPTIONS,
    ProbeError,
    classify,
    family_of,
    http_get,
    plain_ip,
    probe_mtu,
    strip_port,
    udp_ask,
)

CHECKS = ["pod-pod", "node-pod-local", "node-pod-remote", "mtu", "egress", "identity"]
RETRY_CAP = 5  # a retry waits at most this many times the configured timeout


def check_answer(name_seen, client_seen, want_pod, want_sources):
    """(ok, reason, message) for what an agent answered."""
    if name_seen != want_pod:
        return False, "wrong-pod", f"answered by {name_seen!r}, not {want_pod!r} (duplicate IP or stale route/neighbour?)"
    if want_sources and plain_ip(client_seen) not in {plain_ip(s) for s in want_sources}:
        return False, "wrong-source", f"receiver saw {client_seen}, expected {' or '.join(want_sources)} (NAT on the path?)"
    return True, "ok", None


def probe_http(netns, ip, port, timeout, want_pod, want_sources):
    name = http_get(netns, ip, port, "/hostname", timeout)
    client = plain_ip(strip_port(http_get(netns, ip, port, "/clientip", timeout)))
    return (f"{name} from {client}",) + check_answer(name, client, want_pod, want_sources)


def probe_udp(netns, ip, port, timeout, want_pod, want_sources):
    reply = udp_ask(netns, ip, port, timeout)
    name, _sep, client = reply.partition(" ")
    client = plain_ip(client.strip())
    return (f"{name} from {client}",) + check_answer(name, client, want_pod, want_sources)


# --- planning the probes ---------------------------------------------------------------

def strip_prefix(ip):
    return str(ip).split("/", 1)[0]


def group_targets(targets):
    """{node: {pod: [ip, ...]}} with nodes and pods sorted."""
    out = {}
    for t in targets:
        out.setdefault(t["node"], {}).setdefault(t["pod"], []).append(strip_prefix(t["ip"]))
    return {n: dict(sorted(pods.items())) for n, pods in sorted(out.items())}


def parse_target_lines(lines):
    """Targets ``{node, pod, ip}`` from ``NODE POD IP`` lines; ValueError names a bad line."""
    targets = []
    for line in lines:
        words = str(line).split()
        if len(words) != 3:
            raise ValueError(f"target_lines: {line!r} is not 'NODE POD IP' (three words)")
        try:
            ipaddress.ip_address(words[2])
        except ValueError:
            raise ValueError(f"target_lines: {words[2]!r} in {line!r} is not an IP address") from None
        targets.append({"node": words[0], "pod": words[1], "ip": words[2]})
    return targets


def select_pairs(sources, targets, node, sample=None, seed="flatnet"):
    """Pairs (source, (dst_node, dst_pod)) to probe from this node.

    ``sources``: source names (pods of this node). Full mesh without ``sample``. With it, the
    pairs cover nodes rather than pods, so a node's share grows with the nodes, not with
    pods x nodes:

    - every other node once (whole rounds more while sources are left without one), the source
      rotating over this node's pods and the target pod over the target node's pods by this
      node's rank, so that across the cluster every pod is a source and a target of cross-node
      probes;
    - every source to one other pod of this node (the next one: each pod a target too);
    - ``sample`` random extra pairs.

    A source never probes itself. Deterministic for a given seed and node.
    """
    grouped = group_targets(targets)
    every = [(s, (n, p)) for s in sources for n, pods in grouped.items() for p in pods
             if not (n == node and p == s)]
    if sample is None or not sources:
        return every
    ranks = {n: k for k, n in enumerate(sorted(set(grouped) | {node}))}
    rank = ranks[node]
    chosen = []
    mine = list(grouped.get(node, {}))
    for i, s in enumerate(sources):
        others = [p for p in mine[i + 1:] + mine[:i + 1] if p != s]
        if others:
            chosen.append((s, (node, others[0])))
    far = [n for n in grouped if n != node]
    if far:
        # Whole rounds over the other nodes, as many as it takes to give every source one.
        for j in range(-(-len(sources) // len(far)) * len(far)):
            n = far[j % len(far)]
            pods = list(grouped[n])
            # This node's place among the nodes that probe n (0 .. nodes-2): distinct per
            # source node, so n's pods are the targets of different nodes in turn.
            place = rank if rank < ranks[n] else rank - 1
            chosen.append((sources[(j + rank) % len(sources)], (n, pods[(place + j // len(far) * len(far)) % len(pods)])))
    picked = set()
    # Few sources and few far pods can pick a pair twice: keep it once.
    chosen = [pair for pair in chosen if not (pair in picked or picked.add(pair))]
    rng = random.Random(f"{seed}:{node}")
    rest = [pair for pair in every if pair not in picked]
    chosen.extend(rng.sample(rest, min(max(sample, 0), len(rest))))
    return chosen


def plan_probes(params):
    """Every probe this node runs, as dicts (pure: no I/O, for tests and the module)."""
    node = params["node"]
    checks = set(params.get("checks") or CHECKS)
    local = {p["name"]: [strip_prefix(ip) for ip in p.get("ips") or []] for p in params.get("local_pods") or []}
    targets = params.get("targets") or []
    grouped = group_targets(targets)
    sample = params.get("sample")
    seed = params.get("seed") or "flatnet"
    node_ips = [strip_prefix(ip) for ip in params.get("node_ips") or []]
    probes = []

    def add(check, proto, src, src_ip, dst_node, dst, dst_ip, **extra):
        probes.append(dict(check=check, proto=proto, src_node=node, src=src, src_ip=src_ip,
                           dst_node=dst_node, dst=dst, dst_ip=dst_ip, **extra))

    if "pod-pod" in checks:
        for src, (dst_node, dst) in select_pairs(sorted(local), targets, node, sample, seed):
            for dst_ip in grouped[dst_node][dst]:
                src_ip = next((ip for ip in local[src] if family_of(ip) == family_of(dst_ip)), None)
                if src_ip is None:
                    continue  # the source has no address of that family
                for proto in ("http", "udp"):
                    add("pod-pod", proto, src, src_ip, dst_node, dst, dst_ip)

    host_pairs = select_pairs(["host"], targets, node, sample, seed) if sample is not None else \
        [("host", (n, p)) for n, pods in grouped.items() for p in pods]
    if sample is not None:
        # Every local pod stays covered from the host network; it is cheap.
        have = {pair[1] for pair in host_pairs}
        host_pairs += [("host", (node, p)) for p in grouped.get(node, {}) if (node, p) not in have]
    for _src, (dst_node, dst) in sorted(host_pairs, key=lambda x: x[1]):
        check = "node-pod-local" if dst_node == node else "node-pod-remote"
        if check not in checks:
            continue
        for dst_ip in grouped[dst_node][dst]:
            want = [ip for ip in node_ips if family_of(ip) == family_of(dst_ip)]
            for proto in ("http", "udp"):
                add(check, proto, "host", None, dst_node, dst, dst_ip, want=want)

    mtu = params.get("mtu")
    if "mtu" in checks and mtu and local:
        src = sorted(local)[0]
        for t in params.get("mtu_targets") or []:
            if t["node"] == node:
                continue  # the role passes every node's first pod, this node's too
            dst_ip = strip_prefix(t["ip"])
            src_ip = next((ip for ip in local[src] if family_of(ip) == family_of(dst_ip)), None)
            if src_ip is not None:
                add("mtu", "udp", src, src_ip, t["node"], t["pod"], dst_ip, mtu=mtu)

    egress = params.get("egress")
    if "egress" in checks and egress:
        for src in sorted(local):
            src_ip = next((ip for ip in local[src] if family_of(ip) == family_of(egress["ip"])), None)
            if src_ip is not None:
                add("egress", "http", src, src_ip, None, "outside", egress["ip"],
                    port=egress.get("port") or 8083, want=[egress["expect_source"]])

    if "identity" in checks:
        for src in sorted(local):
            add("identity", "addr", src, None, node, src, None, want=_planned_ips(params, src),
                mtu=params.get("mtu") if "mtu" in checks else None)
    return probes


def _planned_ips(params, pod):
    for p in params.get("local_pods") or []:
        if p["name"] == pod:
            return list(p.get("ips") or [])
    return []


# --- running them ------------------------------------------------------------------------

def run_probe(probe, params, read_addrs=None):
    """Run one planned probe; return its result dict."""
    timeout = params.get("timeout") or 2.0
    http_port = params.get("http_port") or 8083
    udp_port = params.get("udp_port") or 8081
    check, proto = probe["check"], probe["proto"]
    netns = None if probe["src"] == "host" else probe["src"]
    seen = expected = error = None
    started = time.monotonic()
    try:
        if check == "pod-pod":
            expected = f"{probe['dst']} from {probe['src_ip']}"
            fn = probe_http if proto == "http" else probe_udp
            port = http_port if proto == "http" else udp_port
            seen, ok, reason, error = fn(netns, probe["dst_ip"], port, timeout, probe["dst"], [probe["src_ip"]])
        elif check in ("node-pod-local", "node-pod-remote"):
            want = probe.get("want") or []
            expected = f"{probe['dst']} from {' or '.join(want) if want else 'any node address'}"
            fn = probe_http if proto == "http" else probe_udp
            port = http_port if proto == "http" else udp_port
            seen, ok, reason, error = fn(None, probe["dst_ip"], port, timeout, probe["dst"], want)
        elif check == "mtu":
            mtu = probe["mtu"]
            expected = f"{mtu} passed, {mtu + 1} refused (message too long)"
            seen, ok, reason, error = probe_mtu(netns, probe["dst_ip"], udp_port, mtu, timeout, probe["dst"])
        elif check == "egress":
            want = probe["want"]
            expected = f"seen as {want[0]}"
            client = plain_ip(strip_port(http_get(netns, probe["dst_ip"], probe["port"], "/clientip", timeout)))
            seen = f"seen as {client}"
            if client == plain_ip(want[0]):
                ok, reason = True, "ok"
            elif client == probe["src_ip"]:
                ok, reason, error = False, "wrong-source", "the outside saw the pod IP: no masquerade"
            else:
                ok, reason, error = False, "wrong-source", f"the outside saw {client}, not the node's underlay IP"
        elif check == "identity":
            want = sorted(probe.get("want") or [])
            expected = " ".join(want) + " on eth0 (up)"
            up, have, mtu = read_addrs(probe["src"])
            want_mtu = probe.get("mtu")
            if want_mtu:
                expected += f" mtu {want_mtu}"
            seen = " ".join(sorted(have)) + (" on eth0 (up)" if up else " on eth0 (down)") + f" mtu {mtu}"
            missing, extra = compare_addrs(want, have)
            if want_mtu and mtu != want_mtu and up and not missing and not extra:
                ok, reason, error = False, "bad-mtu", f"eth0 has MTU {mtu}, the plan says {want_mtu}"
            elif not up or missing or extra:
                ok, reason = False, "bad-address"
                parts = []
                if not up:
                    parts.append("eth0 is not up")
                if missing:
                    parts.append("missing " + " ".join(sorted(missing)))
                if extra:
                    parts.append("unexpected " + " ".join(sorted(extra)))
                error = "; ".join(parts)
            else:
                ok, reason = True, "ok"
        else:
            raise ProbeError("error", f"unknown check {check}")
    except Exception as exc:  # every failure becomes a result, never a module crash
        err = classify(exc)
        ok, reason, error = False, err.reason, str(err)
        if seen is None:
            seen = err.reason
    result = {k: probe[k] for k in ("check", "proto", "src_node", "src", "src_ip", "dst_node", "dst", "dst_ip")}
    result.update(ok=bool(ok), reason=reason, seen=seen, expected=expected, error=error,
                  seconds=round(time.monotonic() - started, 4), retried=False)
    return result


def compare_addrs(want, have):
    """(missing, unexpected) addresses of a pod; a planned address without prefix matches any prefix."""
    have_if = {str(ipaddress.ip_interface(h)) for h in have}
    have_ip = {h.split("/", 1)[0] for h in have_if}
    want_ip = {str(ipaddress.ip_interface(w)).split("/", 1)[0] for w in want}
    missing = sorted(w for w in want if ("/" in w and str(ipaddress.ip_interface(w)) not in have_if)
                     or ("/" not in w and strip_prefix(str(ipaddress.ip_address(w))) not in have_ip))
    extra = sorted(h for h in have_if if h.split("/", 1)[0] not in want_ip)
    return missing, extra


def neighbour_table_fulls(ntables):
    """``{4: n, 6: n}``: new neighbour entries the kernel refused so far, from
    ``ip -s -json ntable show`` (which, unlike /proc/net/stat, works in any namespace)."""
    families = {"inet": 4, "inet6": 6}
    counts = {}
    for table in ntables or []:
        family = families.get(table.get("family"))
        if family and "dev" not in table and isinstance(table.get("table_fulls"), int):
            counts[family] = table["table_fulls"]
    return counts


def _run_all(probes, params, read_addrs, workers):
    results = [None] * len(probes)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(run_probe, p, params, read_addrs): i for i, p in enumerate(probes)}
        for fut in concurrent.futures.as_completed(futures):
            results[futures[fut]] = fut.result()
    return results


def baseline(results):
    """Median seconds of the probes that passed (the load as the probes measured it), or None.
    Identity checks read addresses, they cross no network: left out."""
    times = [r["seconds"] for r in results
             if r["ok"] and r["check"] != "identity" and isinstance(r.get("seconds"), (int, float))]
    return statistics.median(times) if times else None


def retry_timeout(timeout, base, factor=10.0):
    """max(timeout, factor x baseline), at most RETRY_CAP x timeout; timeout without a baseline."""
    if base is None:
        return timeout
    return round(min(max(timeout, factor * base), RETRY_CAP * timeout), 3)


def run_probes(probes, params, read_addrs=None, workers=32, retries=0, retry_factor=10.0, before_retry=None):
    """Run every probe; with ``retries`` (1), run the failed ones once more with a timeout adapted
    to the measured baseline (``retry_timeout``). ``before_retry(failed_results)`` is called
    between the two rounds (tests use it to change the network in between)."""
    results = _run_all(probes, params, read_addrs, workers)
    failed = [i for i, r in enumerate(results) if not r["ok"]]
    base = baseline(results)
    timeout = retry_timeout(params.get("timeout") or 2.0, base, retry_factor)
    info = {"baseline": None if base is None else round(base, 4), "timeout": timeout,
            "retried": 0, "passed_on_retry": 0}
    if retries <= 0 or not failed:
        return results, info
    if before_retry is not None:
        before_retry([results[i] for i in failed])
    again = _run_all([probes[i] for i in failed], dict(params, timeout=timeout), read_addrs, workers)
    for i, second in zip(failed, again):
        first = results[i]
        second.update(retried=True, first_reason=first["reason"], first_error=first["error"])
        results[i] = second
    info["retried"] = len(failed)
    info["passed_on_retry"] = sum(1 for r in again if r["ok"])
    return results, info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type="str", required=True),
            local_pods=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True), ips=dict(type="list", elements="str", default=[]))),
            targets=dict(type="list", elements="dict", default=[], options=copy.deepcopy(TARGET_OPTIONS)),
            target_lines=dict(type="list", elements="str"),
            node_ips=dict(type="list", elements="str", default=[]),
            **copy.deepcopy(AGENT_OPTIONS),
            workers=dict(type="int", default=32),
            mtu=dict(type="int"),
            mtu_targets=dict(type="list", elements="dict", default=[], options=copy.deepcopy(TARGET_OPTIONS)),
            egress=dict(type="dict", options=dict(
                ip=dict(type="str", required=True), port=dict(type="int", default=8083),
                expect_source=dict(type="str", required=True))),
            sample=dict(type="int"),
            seed=dict(type="str", default="flatnet"),
            checks=dict(type="list", elements="str", choices=CHECKS, default=list(CHECKS)),
            retries=dict(type="int", default=1, choices=[0, 1]),
            retry_factor=dict(type="float", default=10.0),
        ),
        supports_check_mode=True,
    )
    if module.params["target_lines"] is not None:
        try:
            module.params["targets"] = module.params["targets"] + parse_target_lines(module.params["target_lines"])
        except ValueError as e:
            module.fail_json(msg=str(e))
    try:
        ip = IPRoute2(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))

    def read_addrs(pod):
        try:
            links = ip.json(["addr", "show", "dev", "eth0"], netns=pod)
        except (KernelError, ValueError) as exc:
            raise ProbeError("bad-address", str(exc)) from None
        if not links:
            raise ProbeError("bad-address", f"pod {pod} has no eth0")
        link = links[0]
        up = "UP" in link.get("flags", [])
        addrs = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                 if a.get("scope") == "global"]
        return up, addrs, link.get("mtu")

    try:
        probes = plan_probes(module.params)
    except (ValueError, KeyError) as e:
        module.fail_json(msg=f"cannot plan the probes: {e}")

    def table_fulls():
        try:
            return neighbour_table_fulls(ip.json(["-s", "ntable", "show"]))
        except (KernelError, ValueError):
            return {}

    fulls_before = table_fulls()
    results, retry = run_probes(probes, module.params, read_addrs, module.params["workers"],
                                module.params["retries"], module.params["retry_factor"])
    fulls_after = table_fulls()
    failed = sum(1 for r in results if not r["ok"])
    module.exit_json(changed=False, results=results, retry=retry,
                     summary={"total": len(results), "failed": failed, "retried": retry["retried"],
                              "passed_on_retry": retry["passed_on_retry"]},
                     neighbour_table_fulls={f"ipv{fam}": fulls_after[fam] - fulls_before[fam]
                                            for fam in sorted(fulls_after) if fam in fulls_before})


if __name__ == "__main__":
    main()
