#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: services
short_description: Program Services (ClusterIP, NodePort) on a node in the nftables table C(ip flatnet-svc)
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Writes the whole table C(ip flatnet-svc) in one atomic C(nft -f -) transaction, laid out like
    kube-proxy's nftables mode (see C(docs/services.md)). No other table is read for changing,
    flushed or deleted, and conntrack is never flushed, so a change to one service leaves
    established connections to the others alone.
  - "Lookup: C(daddr . l4proto . dport) in the verdict map C(service-ips) (nat prerouting and output
    hooks, priority -100), node ports by C(l4proto . dport) for local addresses; C(numgen random mod N)
    over the endpoints; ClientIP affinity with one timeout set per endpoint; DNAT to the endpoint."
  - Masquerades only hairpin traffic (a pod reaching itself through its service) and node port traffic
    from outside the cluster CIDRs; with C(external_traffic_policy=Local) node port traffic keeps
    the client address and goes to this node's endpoints only (dropped when it has none).
  - A service without endpoints is rejected (TCP reset, ICMP port unreachable); anything else sent
    into the service range is dropped.
  - Replies from endpoints are marked (mark bit 0x8000, raw priority -310) so that the notrack rule
    of C(inet flatnet) leaves them to conntrack, which undoes the DNAT.
  - Turns hairpin mode on for the ports of O(bridge), so that a pod can reach itself through its service.
  - Adds a route for the service range to O(bridge) (protocol 158, source O(source)) so the node's
    own host network can reach ClusterIPs.
  - A hash of the desired definition and of the live table (C(nft -j), handles removed) and the
    allocations are stored in C(services.json). When both hashes still match nothing is written.
  - Affinity sets start empty whenever the table is written (any change to the services).
options:
  services:
    description: The plan's C(services) (each with C(cluster_ip), C(ports), C(endpoints)).
    type: list
    elements: dict
    default: []
  service_cidrs:
    description: The service range(s); only the IPv4 one is used. Required with O(state=present).
    type: list
    elements: str
  cluster_cidrs:
    description: The cluster CIDRs; node port traffic from outside them is masqueraded.
    type: list
    elements: str
    default: []
  node:
    description: This node's name in the plan (endpoints for C(external_traffic_policy=Local)).
    type: str
  bridge:
    description: The node's pod bridge; the route to the service range goes through it.
    type: str
  source:
    description: Source address of that route (the bridge address).
    type: str
  state:
    description: V(present) writes the table; V(absent) deletes it, the route and C(services.json).
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - flatnet.cluster.state_dir
attributes:
  check_mode:
    support: full
    description: Reports whether the table would be written, without writing it.
  diff_mode:
    support: full
    description: Shows C(nft list table ip flatnet-svc) before and the desired definition after.
requirements:
  - nftables (C(nft)), iproute2 (C(ip))
"""

EXAMPLES = r"""
- name: Program the cluster's services on this node
  flatnet.cluster.services:
    services: "{{ flatnet_plan.services }}"
    service_cidrs: "{{ [flatnet_plan.service_cidr] | flatten }}"
    cluster_cidrs: "{{ flatnet_plan.cluster_cidrs }}"
    node: "{{ inventory_hostname }}"
    bridge: cni0
    source: 10.244.0.1

- name: Remove them
  flatnet.cluster.services:
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
  sample: ["write table ip flatnet-svc (table missing)"]
ruleset:
  description: The desired definition of the table (nft syntax).
  returned: when O(state=present)
  type: str
"""

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import nftables
from ansible_collections.flatnet.cluster.plugins.module_utils import services_nft as svc_nft
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError, Runner

TABLE_ARGS = ["table", svc_nft.FAMILY, svc_nft.TABLE]
HANDLE_RE = re.compile(r'"handle": *[0-9]+,? *')


def allocations(services):
    """{ns/name: {cluster_ip, node_ports}}: what node_facts reads back for the planner."""
    out = {}
    for svc in services or []:
        out[f"{svc['namespace']}/{svc['name']}"] = {
            "cluster_ip": svc.get("cluster_ip"),
            "node_ports": {f"{p['port']}/{p['protocol']}": p["node_port"]
                           for p in svc.get("ports") or [] if p.get("node_port")},
        }
    return out


class Kernel:
    def __init__(self, module):
        self.module = module
        self.runner = Runner(module)

    def run(self, tool, argv, data=None, check=True):
        try:
            return self.runner.run(tool, argv, data=data, check=check)
        except KernelError as exc:
            self.module.fail_json(msg=str(exc))
            raise  # not reached

    def exists(self):
        rc, out, _err = self.run("nft", ["list", "tables", svc_nft.FAMILY], check=False)
        return rc == 0 and f"table {svc_nft.FAMILY} {svc_nft.TABLE}" in out.splitlines()

    def table_text(self):
        rc, out, _err = self.run("nft", ["list"] + TABLE_ARGS, check=False)
        return out if rc == 0 else ""

    def live_hash(self):
        """Hash of ``nft -j list table`` without the handles (None when the table is missing).
        The text is hashed as nft prints it: decoding and re-encoding 10,000 chains of JSON
        cost more than listing them."""
        rc, out, _err = self.run("nft", ["-j", "list"] + TABLE_ARGS, check=False)
        if rc != 0 or not out.strip():
            return None
        return nftables.digest(HANDLE_RE.sub("", out))

    def ports_without_hairpin(self, bridge):
        """Ports of the pod bridge with hairpin mode off. A pod reaching itself through its
        service is DNATed to its own address and, with br_netfilter, bridged straight back out
        of the port it came in on: the bridge only does that in hairpin mode (kubelet's
        hairpin-veth)."""
        rc, out, _err = self.run("ip", ["-j", "-d", "link", "show", "master", bridge], check=False)
        if rc != 0 or not out.strip():
            return []
        return sorted(link["ifname"] for link in json.loads(out)
                      if not ((link.get("linkinfo") or {}).get("info_slave_data") or {}).get("hairpin"))

    def routes(self):
        """Our service routes: [(dst, dev, src)]."""
        out = self.runner.json("ip", ["-j", "-4", "route", "show", "proto", str(svc_nft.RT_PROTO)])
        return sorted((r.get("dst"), r.get("dev"), r.get("prefsrc")) for r in out or [])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", default=[]),
            service_cidrs=dict(type="list", elements="str"),
            cluster_cidrs=dict(type="list", elements="str", default=[]),
            node=dict(type="str"),
            bridge=dict(type="str"),
            source=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        required_if=[("state", "present", ["service_cidrs"])],
        supports_check_mode=True,
    )
    p = module.params
    kernel = Kernel(module)
    have_nft = bool(kernel.runner.bin("nft", required=False))
    if not have_nft and p["state"] == "present":
        module.fail_json(msg="nft was not found: install the nftables package on the node (services need it)")
    state_file = os.path.join(p["state_dir"], "services.json")
    record = flatnet_state.load_or_fail(module, state_file)
    result = dict(changed=False, actions=[])
    # Without nft there is no table to remove (a cluster without services on a node without nftables).
    before = kernel.table_text() if module._diff and have_nft else None
    exists = kernel.exists() if have_nft else False
    try:
        have_routes = kernel.routes()
    except KernelError as exc:
        module.fail_json(msg=str(exc))

    if p["state"] == "absent":
        if exists:
            result["actions"].append(f"delete table {svc_nft.FAMILY} {svc_nft.TABLE}")
        for dst, dev, _src in have_routes:
            result["actions"].append(f"delete route {dst} dev {dev}")
        if not module.check_mode:
            if exists:
                kernel.run("nft", ["-f", "-"], data=svc_nft.delete_transaction())
            for dst, dev, _src in have_routes:
                kernel.run("ip", ["route", "del", dst, "dev", dev, "proto", str(svc_nft.RT_PROTO)])
            flatnet_state.remove(state_file)
        result["changed"] = bool(result["actions"])
        if module._diff:
            result["diff"] = dict(before=before, after="")
        module.exit_json(**result)

    try:
        definition = svc_nft.render(p["services"], p["service_cidrs"], p["cluster_cidrs"], p["node"])
    except (ValueError, KeyError, TypeError) as exc:
        module.fail_json(msg=f"invalid services input: {exc!r}")
    desired = nftables.digest(definition)
    result["ruleset"] = definition
    alloc = allocations(p["services"])

    # The live table is listed only when the record says it should already be what we want:
    # listing 10,000 chains costs more than writing them.
    current = kernel.live_hash() if exists and record.get("desired") == desired else None
    if not exists or nftables.needs_apply(record, desired, current):
        if not exists:
            why = "table missing"
        elif record.get("desired") != desired:
            why = "definition changed" if record.get("desired") else "not recorded"
        else:
            why = "live table differs from the recorded one"
        result["actions"].append(f"write table {svc_nft.FAMILY} {svc_nft.TABLE} ({why})")

    # The host network's way into the service range: one route, through the bridge.
    import ipaddress  # pylint: disable=import-outside-toplevel
    v4 = [str(ipaddress.ip_network(c, strict=False)) for c in p["service_cidrs"]
          if ipaddress.ip_network(c, strict=False).version == 4]
    want_routes = sorted((c, p["bridge"], p["source"]) for c in v4) if p["bridge"] and p["source"] else []
    route_changes = [r for r in have_routes if r not in want_routes] + [r for r in want_routes if r not in have_routes]
    for dst, dev, src in want_routes:
        if (dst, dev, src) not in have_routes:
            result["actions"].append(f"add route {dst} dev {dev} src {src}")
    for dst, dev, _src in have_routes:
        if (dst, dev, _src) not in want_routes:
            result["actions"].append(f"delete route {dst} dev {dev}")

    hairpin = kernel.ports_without_hairpin(p["bridge"]) if p["bridge"] and p["services"] else []
    for port in hairpin:
        result["actions"].append(f"set hairpin on {port}")

    if not module.check_mode:
        if hairpin:
            try:
                kernel.runner.batch("bridge", [["link", "set", "dev", port, "hairpin", "on"] for port in hairpin])
            except KernelError as exc:
                module.fail_json(msg=str(exc))
        if result["actions"] and any(a.startswith("write table") for a in result["actions"]):
            kernel.run("nft", ["-f", "-"], data=svc_nft.transaction(definition))
        if route_changes:
            for dst, dev, _src in have_routes:
                if (dst, dev, _src) not in want_routes:
                    kernel.run("ip", ["route", "del", dst, "dev", dev, "proto", str(svc_nft.RT_PROTO)])
            for dst, dev, src in want_routes:
                if (dst, dev, src) not in have_routes:
                    kernel.run("ip", ["route", "replace", dst, "dev", dev, "src", src,
                                      "proto", str(svc_nft.RT_PROTO)])
        new_record = {"desired": desired, "live": kernel.live_hash() if result["actions"] else current,
                      "allocations": alloc}
        if new_record != record:
            flatnet_state.save(state_file, new_record)
    result["changed"] = bool(result["actions"])
    if module._diff:
        result["diff"] = dict(before=before, after=definition,
                              before_header=f"nft list table {svc_nft.FAMILY} {svc_nft.TABLE}",
                              after_header="desired")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
