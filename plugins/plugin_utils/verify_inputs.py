# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the verify role hands its modules, read from the plan (controller side, pure functions).

The role once built these lists in Jinja with namespace() loops; here each is one pass, and the
filters verify_sources, verify_agent_lifetime and nodeport_checks (plugins/filter/) wrap them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# An agent outlives the worst case of the probes by this much (seconds).
AGENT_LIFETIME_MARGIN = 600
# A retry round may take up to 5 timeouts per failed probe (plugins/modules/probe.py).
RETRY_TIMEOUTS = 5

NODEPORT_SKIPPED_ERROR = ("not checked: no place outside the cluster to reach the node ports from; set "
                          "flatnet_verify_nodeport_from (for example {host: localhost}, the controller)")


class VerifyInputError(ValueError):
    """The input is not what the verify role passes (a plan, a node of it, containers)."""


def _node_entry(plan, node: str) -> Mapping:
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise VerifyInputError("the input must be the plan (flatnet_plan), a mapping with 'nodes'")
    if node not in plan["nodes"]:
        raise VerifyInputError(f"node {node} is not in the plan; run the flatnet.cluster.plan role for it first")
    return plan["nodes"][node]


def _strip_prefix(address) -> str:
    return str(address).split("/", 1)[0]


def verify_sources(plan: Mapping, node: str, containers=None) -> dict:
    """What node ``node`` probes from and as, given the containers the cni module found on it.

    ``containers``: the cni module's ``containers`` ({netns, container_id, ip, ...}); only those
    with a live namespace count. Returns:

    - ``local_pods``: the sources of the pod checks, the node's pods ({name, ips}) and then its
      attached containers ({name: netns, ips: [ip/prefix of the node block of its family]});
    - ``containers``: the attached containers as {netns, container_id, ip} (for the report);
    - ``container_targets``: the attached containers as probe targets ({node, pod: netns, ip});
    - ``node_ips``: the addresses the node may show up as (underlay IP, gateways, VTEPs; no
      prefix, first occurrence kept).
    """
    entry = _node_entry(plan, node)
    if containers is not None and (isinstance(containers, (str, Mapping)) or not isinstance(containers, list)):
        raise VerifyInputError("containers must be the list of the cni module's containers")
    live = [c for c in containers or [] if isinstance(c, Mapping) and c.get("netns")]
    pod_cidrs = entry.get("pod_cidrs") or []
    local_pods = [{"name": p["name"], "ips": p["ips"]} for p in entry.get("pods") or []]
    for container in live:
        ip = container["ip"]
        # The node block of the container's family: IPv6 blocks have a ':', IPv4 ones start with a digit.
        cidr = next((c for c in pod_cidrs if (":" in c) == (":" in ip)), None)
        if cidr is None:
            raise VerifyInputError(f"container {container['netns']} has {ip}, but {node} has no pod CIDR of its family")
        local_pods.append({"name": container["netns"], "ips": [f"{ip}/{cidr.split('/')[1]}"]})
    node_ips: list[str] = []
    underlay = entry.get("underlay") or {}
    for address in [underlay.get("ip")] + list(entry.get("gateways") or []) + list(entry.get("vtep_ips") or []):
        address = _strip_prefix(address)
        if address not in node_ips:
            node_ips.append(address)
    return {
        "local_pods": local_pods,
        "containers": [{k: c[k] for k in c if k in ("netns", "container_id", "ip")} for c in live],
        "container_targets": [{"node": node, "pod": c["netns"], "ip": c["ip"]} for c in live],
        "node_ips": node_ips,
    }


def agent_lifetime(plan: Mapping, workers, timeout, retries, lifetime=None) -> float:
    """How long the probe agents live, should the play never stop them: ``lifetime`` when given,
    else every probe of the busiest node timing out (an HTTP probe is two requests), and again in
    the retry round (at most RETRY_TIMEOUTS x the timeout), plus AGENT_LIFETIME_MARGIN."""
    if lifetime is not None:
        return float(lifetime)
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping) or not plan["nodes"]:
        raise VerifyInputError("the input must be the plan (flatnet_plan), a mapping with 'nodes'")
    counts = [len(entry.get("pods") or []) for entry in plan["nodes"].values()]
    probes = (max(counts) + 1) * sum(counts) * 4 + len(counts) * 4
    rounds = math.ceil(probes / int(workers)) / 1  # a float, as Jinja's round(0, 'ceil') gives
    return AGENT_LIFETIME_MARGIN + rounds * 2 * float(timeout) * (1 + RETRY_TIMEOUTS * int(retries))


def nodeport_checks(plan: Mapping, nodeport_from=None) -> dict:
    """The NodePort checks from outside the cluster.

    Returns ``services`` (the NodePort services), ``targets`` (every node as {name, ip: its
    underlay IP}, sorted by name) and ``skipped``: without ``nodeport_from`` (no place outside
    the cluster), one skipped result per node port, so that the check is never a silent pass.
    """
    if not isinstance(plan, Mapping) or not isinstance(plan.get("nodes"), Mapping):
        raise VerifyInputError("the input must be the plan (flatnet_plan), a mapping with 'nodes'")
    services = [s for s in plan.get("services") or [] if s.get("type", "ClusterIP") == "NodePort"]
    skipped = []
    if not nodeport_from:
        for svc in services:
            for port in svc.get("ports") or []:
                if not port.get("node_port"):
                    continue
                skipped.append({
                    "check": "nodeport", "proto": port["protocol"], "src_node": "outside", "src": "nowhere",
                    "src_ip": None, "dst_node": None, "dst": f"{svc['namespace']}/{svc['name']}:{port['node_port']}",
                    "dst_ip": None, "ok": False, "skipped": True, "reason": "skipped",
                    "error": NODEPORT_SKIPPED_ERROR,
                })
    targets = [{"name": n, "ip": plan["nodes"][n]["underlay"]["ip"]} for n in sorted(plan["nodes"])]
    return {"services": services, "targets": targets, "skipped": skipped}
