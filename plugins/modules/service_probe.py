#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: service_probe
short_description: Check the cluster's Services from a node's pods and host network
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Run by the C(flatnet.cluster.verify) role while the probe agents listen in every pod. Results
    have the shape of M(flatnet.cluster.probe)'s, with the check C(service); C(proto) tells what
    was checked.
  - "C(tcp) and C(udp) (services with endpoints whose port targets the agent's O(http_port) over TCP
    or its O(udp_port) over UDP): every request answers, each endpoint sees the client's own address
    (the pod's, or the bridge address from the host network), except hairpin (a pod reaching
    itself), which must be masqueraded."
  - C(endpoints) (from the host network and the first pod of the node) sends 10 requests per endpoint
    and wants every endpoint to answer at least once.
  - C(affinity) (ClientIP services) wants one endpoint for 10 requests.
  - C(reject) (services without endpoints, any port) wants a refusal in under one second - a TCP
    reset, or for UDP an ICMP port unreachable (C(ECONNREFUSED); from the node's host network the
    output hook's reject makes the send fail with C(EPERM)), never a timeout.
  - C(dns) (when O(dns) is set, from every pod but the DNS pods) resolves C(<svc>.<ns>.svc.<domain>)
    and the short name (C(<svc>), C(default) namespace only) through the pod's own
    C(/etc/netns/<pod>/resolv.conf), search list and C(ndots) applied, and wants the ClusterIP.
  - Only pods get one request per service (linear in pods times services); the endpoint sweep runs
    from two places per node.
  - With O(mode=outside) it checks the C(NodePort) services instead, from a place outside the cluster
    (the lab's outside namespace, O(netns), or the host it runs on) against every node of O(nodes),
    check C(nodeport). Policy C(Cluster) - every node answers, the endpoint sees a masqueraded
    address (never the caller's), and the first node's sweep reaches every endpoint. Policy
    C(Local) - a node with endpoints of its own answers only from those, and the endpoint sees the
    caller's own address; a node without any does not answer (C(no-local)). A service without
    endpoints is refused at once on every node (C(reject)).
options:
  node:
    description: This node's name (required with O(mode=cluster)).
    type: str
  mode:
    description:
      - V(cluster) checks ClusterIPs and DNS from this node's pods and host network; V(outside) checks
        the node ports of O(nodes) from where the module runs (or from O(netns)).
    type: str
    choices: [cluster, outside]
    default: cluster
  nodes:
    description: With O(mode=outside), the nodes to reach (C(name), C(ip)).
    type: list
    elements: dict
    default: []
  netns:
    description: With O(mode=outside), a named network namespace to run the checks from (the lab's outside).
    type: str
  source_label:
    description: With O(mode=outside), how the place is named in the results.
    type: str
    default: outside
  workers:
    description: With O(mode=outside), checks of different nodes running at the same time.
    type: int
    default: 16
  local_pods:
    description: This node's pods (C(name), C(ips)).
    type: list
    elements: dict
    default: []
  services:
    description: The plan's services.
    type: list
    elements: dict
    default: []
  host_source:
    description: The address endpoints see for the node's host network (its bridge address).
    type: str
  http_port:
    description: The probe agents' HTTP port; TCP service ports that target it are checked end to end.
    type: int
    default: 8083
  udp_port:
    description: The probe agents' UDP port; UDP service ports that target it are checked end to end.
    type: int
    default: 8081
  timeout:
    description: Seconds per request.
    type: float
    default: 2.0
  dns:
    description: The cluster DNS (C({ip, domain, pods})); V(null) when it is off.
    type: dict
  netns_dir:
    description: Where the pods' C(resolv.conf) live.
    type: path
    default: /etc/netns
extends_documentation_fragment:
  - flatnet.cluster.attributes.read_only
attributes:
  check_mode:
    description: Only reads; it runs in check mode too.
  diff_mode:
    description: Nothing to show.
"""

EXAMPLES = r"""
- name: Check the services from this node
  flatnet.cluster.service_probe:
    node: "{{ inventory_hostname }}"
    local_pods: "{{ flatnet_plan.nodes[inventory_hostname].pods }}"
    services: "{{ flatnet_plan.services }}"
    dns: "{{ flatnet_plan.dns }}"

- name: Check the node ports of every node from the controller
  flatnet.cluster.service_probe:
    mode: outside
    services: "{{ flatnet_plan.services }}"
    nodes: [{name: node1, ip: 192.168.50.11}, {name: node2, ip: 192.168.50.12}]
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
results:
  description: One result per check, in the shape of M(flatnet.cluster.probe)'s results.
  returned: always
  type: list
  elements: dict
"""

import concurrent.futures
import copy
import json
import os
import random
import socket
import struct
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import netns
from ansible_collections.flatnet.cluster.plugins.module_utils import probe_client

SWEEP = 10  # requests per endpoint in the endpoint sweep


def _get(ns, ip, port, timeout):
    """(reply dict or None, error reason or None, seconds) of ``GET /`` on the agent."""
    start = time.monotonic()
    try:
        src, body = probe_client.http_get_with_source(ns, ip, port, "/", timeout)
        return dict(json.loads(body), _src=src), None, time.monotonic() - start
    except (OSError, ValueError, probe_client.ProbeError) as exc:
        return None, probe_client.service_reason(exc, "tcp"), time.monotonic() - start


def _udp(ns, ip, port, timeout):
    """Like ``_get`` over UDP: the agent answers a datagram with ``NAME CLIENT_IP``. A refusal is
    an ICMP port unreachable, or from the host network a send that the output hook rejects
    (``probe_client.service_reason``)."""
    start = time.monotonic()
    try:
        src, reply = probe_client.udp_ask_with_source(ns, ip, port, timeout, b"service")
    except (OSError, ValueError, probe_client.ProbeError) as exc:
        return None, probe_client.service_reason(exc, "udp"), time.monotonic() - start
    name, _sep, client_ip = reply.partition(" ")
    return {"name": name, "client_ip": client_ip.strip(), "_src": src}, None, time.monotonic() - start


def _ask(ns, ip, port, proto, timeout):
    """One request to ip:port over ``proto`` (looked up at call time, so tests can replace them)."""
    return (_get if proto == "tcp" else _udp)(ns, ip, port, timeout)


def _to_agent(p, port):
    """Whether this service port reaches the probe agents (so its answers can be checked)."""
    try:
        target = int(port["target_port"])
    except (KeyError, TypeError, ValueError):
        return False
    return (port["protocol"] == "tcp" and target == p["http_port"]) or \
        (port["protocol"] == "udp" and target == p.get("udp_port", 8081))


def _label(svc, port, number):
    proto = port.get("protocol") or "tcp"
    return f"{svc['namespace']}/{svc['name']}:{number}" + ("" if proto == "tcp" else f"/{proto}")


def _dns_query(ns, server, name, timeout):
    """The A records of ``name`` from ``server`` (a list; [] for NXDOMAIN/NODATA)."""
    qid = random.randint(0, 0xFFFF)
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    packet += b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.rstrip(".").split(".")) + b"\0"
    packet += struct.pack(">HH", 1, 1)
    with netns.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        reply = sock.recv(4096)
    finally:
        sock.close()
    answers = struct.unpack(">H", reply[6:8])[0]
    pos = len(packet)
    out = []
    for _answer in range(answers):
        while reply[pos] != 0 and reply[pos] < 0xC0:
            pos += reply[pos] + 1
        pos += 2 if reply[pos] >= 0xC0 else 1
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", reply[pos:pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            out.append(socket.inet_ntoa(reply[pos:pos + 4]))
        pos += length
    return out


def resolve(ns, conf_path, name, timeout):
    """Resolve like the pod's glibc would: the pod's resolv.conf (nameserver, search, ndots)."""
    servers, search, ndots = [], [], 1
    with open(conf_path, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] == "nameserver" and len(words) > 1:
                servers.append(words[1])
            elif words[0] == "search":
                search = words[1:]
            elif words[0] == "options":
                for opt in words[1:]:
                    if opt.startswith("ndots:"):
                        ndots = int(opt.split(":", 1)[1])
    if not servers:
        raise OSError(f"{conf_path} has no nameserver")
    if name.count(".") < ndots:  # glibc: the search list first, then the name as it is
        candidates = [f"{name}.{s}" for s in search] + [name]
    else:
        candidates = [name] + [f"{name}.{s}" for s in search]
    for candidate in candidates:
        got = _dns_query(ns, servers[0], candidate, timeout)
        if got:
            return got[0]
    return None


def result(node, src, src_ip, proto, dst, dst_ip, ok, reason="ok", seen=None, expected=None, error=None,
           check="service", dst_node=None):
    return {"check": check, "proto": proto, "src_node": node, "src": src, "src_ip": src_ip,
            "dst_node": dst_node, "dst": dst, "dst_ip": dst_ip, "ok": bool(ok), "reason": reason if not ok else "ok",
            "seen": seen, "expected": expected, "error": error}


def check_service(p, svc, port, src, ns, src_ip, sweep):
    """Results of one service port from one source (``ns`` None: the host network)."""
    node, timeout = p["node"], p["timeout"]
    proto = port.get("protocol") or "tcp"
    label = _label(svc, port, port["port"])
    cip = svc["cluster_ip"]
    eps = {ep["ip"]: ep["pod"] for ep in svc.get("endpoints") or []}
    if not eps:
        return [_reject(node, src, src_ip, ns, label, cip, port["port"], proto)]
    if not _to_agent(p, port):
        return []
    out, seen, bad = [], set(), []
    affinity = svc.get("session_affinity") == "ClientIP"
    count = SWEEP * len(eps) if sweep else (SWEEP if affinity else 1)
    for _request in range(count):
        reply, reason, _seconds = _ask(ns, cip, port["port"], proto, timeout)
        if reply is None:
            bad.append(reason)
            continue
        seen.add(reply.get("name"))
        hairpin = ns is not None and reply.get("name") == src
        if hairpin and reply.get("client_ip") == src_ip:
            bad.append(f"hairpin reply from {src} kept the client address (no masquerade)")
        elif not hairpin and src_ip and reply.get("client_ip") != src_ip:
            bad.append(f"{reply.get('name')} saw {reply.get('client_ip')}, not {src_ip}")
    out.append(result(node, src, src_ip, proto, label, cip, not bad, "error" if bad else "ok",
                      seen=sorted(x for x in seen if x), expected="answers with the client's address",
                      error="; ".join(sorted(set(bad))[:3]) or None))
    if affinity:
        out.append(result(node, src, src_ip, "affinity", label, cip, len(seen) == 1, "error",
                          seen=sorted(x for x in seen if x), expected="one endpoint (ClientIP affinity)"))
    elif sweep:
        missing = sorted(set(eps.values()) - seen)
        out.append(result(node, src, src_ip, "endpoints", label, cip, not missing, "error",
                          seen=sorted(x for x in seen if x), expected=sorted(eps.values()),
                          error=f"never reached: {', '.join(missing)}" if missing else None))
    return out


def _reject(node, src, src_ip, ns, label, ip, number, proto, check="service", dst_node=None):
    """A port without endpoints: refused (TCP reset, ICMP unreachable) in under a second."""
    reply, reason, seconds = _ask(ns, ip, number, proto, 3.0)
    ok = reason == "refused" and seconds < 1.0
    what = "a TCP reset" if proto == "tcp" else "an ICMP port unreachable"
    return result(node, src, src_ip, "reject", label, ip, ok, reason or "answered",
                  seen=f"{reason or 'an answer'} after {seconds:.2f}s", expected=f"refused ({what}) in < 1 s",
                  error=None if ok else f"a service without endpoints must be refused at once ({reply})",
                  check=check, dst_node=dst_node)


def nodeport_checks(p, svc, port, node, first):
    """Results of one node port of one node, from where this runs (``p['netns']`` or here)."""
    ns, place, timeout = p.get("netns"), p.get("source_label") or "outside", p["timeout"]
    proto, number = port.get("protocol") or "tcp", int(port["node_port"])
    label = _label(svc, port, number)
    eps = svc.get("endpoints") or []
    args = dict(check="nodeport", dst_node=node["name"])
    if not eps:
        return [_reject("outside", place, None, ns, label, node["ip"], number, proto, **args)]
    if not _to_agent(p, port):
        return []
    local_policy = svc.get("external_traffic_policy") == "Local"
    wanted = sorted({ep["pod"] for ep in eps if not local_policy or ep.get("node") == node["name"]})
    if not wanted:
        # Local and no endpoint on this node: kube-proxy drops, the caller must get nothing.
        reply, reason, seconds = _ask(ns, node["ip"], number, proto, min(timeout, 1.0))
        ok = reply is None and reason in ("timeout", "refused")
        return [result("outside", place, None, "no-local", label, node["ip"], ok, "error",
                       seen=f"{reply.get('name')} answered" if reply else f"{reason} after {seconds:.2f}s",
                       expected="no answer (policy Local, no endpoint on this node)",
                       error=None if ok else f"answered or failed otherwise: {reply or reason}", **args)]
    count = SWEEP * len(wanted) if (first or local_policy) else 1
    seen, bad, src = set(), [], p.get("source")
    for _request in range(count):
        reply, reason, _seconds = _ask(ns, node["ip"], number, proto, timeout)
        if reply is None:
            bad.append(reason)
            continue
        src = src or reply.get("_src")
        name, client = reply.get("name"), reply.get("client_ip")
        seen.add(name)
        if local_policy and name not in wanted:
            bad.append(f"answered by {name}, not an endpoint on {node['name']} (policy Local)")
        if local_policy and client != src:
            bad.append(f"{name} saw {client}, not the caller {src} (policy Local keeps the client address)")
        if not local_policy and client == src:
            bad.append(f"{name} saw the caller's own address {client} (no masquerade, policy Cluster)")
    policy = "Local" if local_policy else "Cluster"
    expected = (f"answers from {', '.join(wanted)} only, with the caller's address" if local_policy
                else "answers, with a masqueraded address")
    out = [result("outside", place, src, proto, label, node["ip"], not bad, "error" if bad else "ok",
                  seen=sorted(x for x in seen if x), expected=f"{expected} (policy {policy})",
                  error="; ".join(sorted(set(str(b) for b in bad))[:3]) or None, **args)]
    if count > 1:
        missing = sorted(set(wanted) - seen)
        out.append(result("outside", place, src, "endpoints", label, node["ip"], not missing, "error",
                          seen=sorted(x for x in seen if x), expected=wanted,
                          error=f"never reached: {', '.join(missing)}" if missing else None, **args))
    return out


def check_nodeports(p):
    """Every node port of every node, nodes in parallel."""
    jobs = []
    for svc in p["services"]:
        if svc.get("type") != "NodePort":
            continue
        for port in svc.get("ports") or []:
            if port.get("node_port"):
                for index, node in enumerate(p["nodes"]):
                    jobs.append((svc, port, node, index == 0))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, p.get("workers") or 16)) as pool:
        return [r for rs in pool.map(lambda job: nodeport_checks(p, *job), jobs) for r in rs]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            node=dict(type="str"),
            mode=dict(type="str", choices=["cluster", "outside"], default="cluster"),
            nodes=dict(type="list", elements="dict", default=[]),
            netns=dict(type="str"),
            source_label=dict(type="str", default="outside"),
            workers=dict(type="int", default=16),
            local_pods=dict(type="list", elements="dict", default=[]),
            services=dict(type="list", elements="dict", default=[]),
            host_source=dict(type="str"),
            **copy.deepcopy(probe_client.AGENT_OPTIONS),
            dns=dict(type="dict"),
            netns_dir=dict(type="path", default="/etc/netns"),
        ),
        supports_check_mode=True,
        required_if=[("mode", "cluster", ["node"])],
    )
    p = module.params
    if p["mode"] == "outside":
        try:
            results = check_nodeports(p)
        except (KeyError, TypeError, ValueError) as exc:
            module.fail_json(msg=f"cannot check the node ports: {exc!r}")
        module.exit_json(changed=False, results=results)
    dns = p["dns"] or {}
    dns_pods = set(dns.get("pods") or [])
    sources = [(None, "host", p["host_source"], True)]
    for index, pod in enumerate(sorted(p["local_pods"], key=lambda x: x["name"])):
        v4 = [str(ip).split("/", maxsplit=1)[0] for ip in pod.get("ips") or [] if ":" not in str(ip)]
        if v4:
            sources.append((pod["name"], pod["name"], v4[0], index == 0))
    results = []
    for ns, src, src_ip, sweep in sources:
        for svc in p["services"]:
            for port in svc.get("ports") or []:
                results.extend(check_service(p, svc, port, src, ns, src_ip, sweep))
    if dns.get("ip"):
        for ns, src, src_ip, _sweep in sources[1:]:
            if ns in dns_pods:
                continue
            conf = os.path.join(p["netns_dir"], ns, "resolv.conf")
            for svc in p["services"]:
                names = [f"{svc['name']}.{svc['namespace']}.svc.{dns.get('domain') or 'cluster.local'}"]
                if svc["namespace"] == "default":
                    names.append(svc["name"])
                for name in names:
                    try:
                        got = resolve(ns, conf, name, p["timeout"])
                        error = None
                    except (OSError, ValueError, IndexError, struct.error) as exc:
                        got, error = None, str(exc)
                    results.append(result(p["node"], src, src_ip, "dns", name, dns["ip"], got == svc["cluster_ip"],
                                          "error", seen=got, expected=svc["cluster_ip"], error=error))
    module.exit_json(changed=False, results=results)


if __name__ == "__main__":
    main()
