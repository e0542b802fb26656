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
  - Programs the table C(ip flatnet-svc) in one atomic C(nft -f -) transaction per call, laid out
    like kube-proxy's nftables mode (see C(docs/services.md)). No other table is read for changing,
    flushed or deleted, and conntrack is never flushed, so a change to one service leaves
    established connections to the others alone.
  - Like kube-proxy's partial sync, a change writes only what changed (the changed services' chains
    are flushed and refilled, map and set elements added or deleted); the other services' chains and
    ClientIP affinity sets stay. The whole table is written when it is missing, was not recorded,
    has another layout, or drifted (edited by hand).
  - "Lookup: C(daddr . l4proto . dport) in the verdict map C(service-ips) (nat prerouting and output
    hooks, priority -100), node ports by C(l4proto . dport) for local addresses; C(numgen random mod N)
    over the endpoints (C(dnat to numgen random mod N map), no chain per endpoint); ClientIP affinity
    with one timeout set and chain per endpoint; DNAT to the endpoint."
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
  - C(services.json) keeps a hash of the input, a hash of the live table as listed after the last
    write (C(nft -t list table), that is every chain and rule but without the contents of named sets,
    plus the contents of the four verdict maps), what was written (for the next partial write) and the
    allocations. An unchanged input whose live listing still matches writes nothing and renders nothing.
  - Affinity sets start empty only when the whole table is written (first run, drift, layout change)
    or when their service's endpoints, port or timeout change.
options:
  services:
    description: The plan's C(services) (each with C(cluster_ip), C(ports), C(endpoints)).
    type: list
    elements: dict
    default: []
  services_json:
    description:
      - The same list as one JSON text, instead of O(services) (what the C(services) role passes).
      - Ansible's argument handling decodes, tags, copies and echoes every element of a list
        option several times (about 2 s for 1,000 services with 10 endpoints each); a string is
        handled once.
      - Not logged to the node's journal and not echoed back (it is no secret, only large).
    type: str
    version_added: 0.2.0
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
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.state
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Reports whether the table would be written, without writing it.
  diff_mode:
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
  sample: ["write table ip flatnet-svc (table missing)", "update table ip flatnet-svc (2 chains, 3 elements)"]
ruleset:
  description: The desired definition of the table (nft syntax).
  returned: when O(state=present) and the table is (or would be) written, or in diff mode
  type: str
"""

import ipaddress
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import nft_table
from ansible_collections.flatnet.cluster.plugins.module_utils import services_nft as svc_nft
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError, Runner

TABLE_ARGS = ["table", svc_nft.FAMILY, svc_nft.TABLE]


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
        return self.runner.run(tool, argv, data=data, check=check)

    def chains(self):
        """Our table's block of ``nft list chains ip`` (None when the table has no chains).

        ``list chains`` reads chains only. ``nft list tables`` is no cheaper a test of
        existence than it looks: nft 1.0.6 fetches every rule and set element for it (1 s at
        1,000 services)."""
        rc, out, _err = self.run("nft", ["list", "chains", svc_nft.FAMILY], check=False)
        if rc != 0:
            return None
        block, inside = [], False
        for line in out.splitlines():
            if line.startswith("table "):
                inside = line.strip() == f"table {svc_nft.FAMILY} {svc_nft.TABLE} {{"
            if inside:
                block.append(line)
        return "\n".join(block) + "\n" if block else None

    def table_text(self):
        rc, out, _err = self.run("nft", ["list"] + TABLE_ARGS, check=False)
        return out if rc == 0 else ""

    def live_hash(self, chains, full):
        """Hash of what drift can break (None: table missing).

        Always: every chain (names, hooks, priorities, policies: ``nft list chains``) and the
        four verdict maps that send traffic to the services, in full. With ``full`` the whole
        table too, every rule and set element but the affinity sets' (which change with
        traffic). Listing rules makes nft fetch every set element and format every rule (even
        with ``-t``): 0.6-1.7 s at 1,000 services x 10 endpoints, against 0.1-0.3 s for the
        rest, so large tables are checked without it (services_nft.full_check).
        """
        if chains is None:
            return None
        parts = [chains]
        # One map per nft process: nft 1.0.6 answers only the last of several list commands
        # in one -f script ("No such file or directory" for the others).
        for name in svc_nft.VERDICT_MAPS:
            rc, out, _err = self.run("nft", ["list", "map", svc_nft.FAMILY, svc_nft.TABLE, name], check=False)
            if rc != 0:
                return None
            parts.append(out)
        if full:
            rc, out, _err = self.run("nft", ["list"] + TABLE_ARGS, check=False)
            if rc != 0:
                return None
            parts.append(svc_nft.without_affinity_elements(out))
        return nft_table.digest(("full\n" if full else "quick\n") + "".join(parts))

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


class Input:
    """The services, decoded from ``services_json`` only when needed: an unchanged rerun
    compares the hash of the text and never decodes it. Not written back into module.params,
    which exit_json echoes (and copies)."""

    def __init__(self, module, p):
        self.module, self.p, self._services = module, p, None

    @property
    def services(self):
        if self._services is None:
            self._services = self.p["services"] or []
            if self.p["services_json"] is not None:
                try:
                    self._services = json.loads(self.p["services_json"])
                except ValueError as exc:
                    self.module.fail_json(msg=f"services_json is not JSON: {exc}")
                if not isinstance(self._services, list) or not all(isinstance(s, dict) for s in self._services):
                    self.module.fail_json(msg="services_json must be a JSON list of objects (the plan's services)")
        return self._services

    def empty(self):
        if self.p["services_json"] is not None and self._services is None:
            return self.p["services_json"].strip() in ("", "[]")
        return not self.services

    def digest(self):
        # The JSON text is hashed as it came: decoding and re-encoding it costs more.
        return nft_table.digest({"layout": svc_nft.LAYOUT,
                                 "services": self.p["services_json"] if self.p["services_json"] is not None
                                 else self.services,
                                 "service_cidrs": self.p["service_cidrs"], "cluster_cidrs": self.p["cluster_cidrs"],
                                 "node": self.p["node"]})


def plan_table(module, p, inp, record, parts_file, exists, live):
    """(action or None, nft script or None, record fields to keep, definition or None).
    Renders only when the input or the live table changed."""
    p_input = inp.digest()
    same_live = exists and live is not None and record.get("live") == live
    if same_live and record.get("input") == p_input and record.get("layout") == svc_nft.LAYOUT:
        return None, None, {"input": p_input}, None
    try:
        parts = svc_nft.plan(inp.services, p["service_cidrs"], p["cluster_cidrs"], p["node"])
    except (ValueError, KeyError, TypeError) as exc:
        module.fail_json(msg=f"invalid services input: {exc!r}")
    definition = svc_nft.definition(parts)
    keep = {"input": p_input, "static": nft_table.digest(svc_nft.static_definition()),
            "parts": svc_nft.summary(parts), "stale": {"chains": [], "sets": []}}
    # What was written last, for a partial write: a file of its own (services-parts.json), read
    # only here, so that an unchanged rerun and node_facts do not decode 20,000 elements.
    saved = flatnet_state.load_or_fail(module, parts_file) if same_live else {}
    old = saved.get("parts") if saved.get("input") == record.get("input") else None
    if (same_live and old and record.get("layout") == svc_nft.LAYOUT and record.get("static") == keep["static"]):
        script, keep["stale"], counts = svc_nft.delta(old, parts, record.get("stale") or {})
        if not script:
            return None, None, keep, definition
        return (f"update table {svc_nft.FAMILY} {svc_nft.TABLE} ({counts['chains']} chains, "
                f"{counts['elements']} elements)"), script, keep, definition
    if not exists:
        why = "table missing"
    elif live is None or record.get("live") != live:
        why = "live table differs from the recorded one" if record.get("live") else "not recorded"
    else:
        why = "layout changed"
    return (f"write table {svc_nft.FAMILY} {svc_nft.TABLE} ({why})", svc_nft.transaction(definition),
            keep, definition)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            services=dict(type="list", elements="dict", default=[]),
            # Not a secret: no_log keeps 1.3 MB (1,000 services) out of the node's journal
            # ("Invoked with …") and out of the echoed invocation.
            services_json=dict(type="str", no_log=True),
            service_cidrs=dict(type="list", elements="str"),
            cluster_cidrs=dict(type="list", elements="str", default=[]),
            node=dict(type="str"),
            bridge=dict(type="str"),
            source=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        required_if=[("state", "present", ["service_cidrs"])],
        mutually_exclusive=[("services", "services_json")],
        supports_check_mode=True,
    )
    try:
        reconcile(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))


def reconcile(module):
    """Routes, hairpin and the services table against the request; exits the module."""
    p = module.params
    inp = Input(module, p)
    kernel = Kernel(module)
    have_nft = bool(kernel.runner.bin("nft", required=False))
    if not have_nft and p["state"] == "present":
        module.fail_json(msg="nft was not found: install the nftables package on the node (services need it)")
    state_file = os.path.join(p["state_dir"], "services.json")
    parts_file = os.path.join(p["state_dir"], "services-parts.json")
    record = flatnet_state.load_or_fail(module, state_file)
    result = dict(changed=False, actions=[])
    # Without nft there is no table to remove (a cluster without services on a node without nftables).
    before = kernel.table_text() if module._diff and have_nft else None
    chains = kernel.chains() if have_nft else None
    exists = chains is not None
    have_routes = kernel.routes()

    if p["state"] == "absent":
        if exists:
            result["actions"].append(f"delete table {svc_nft.FAMILY} {svc_nft.TABLE}")
        for dst, dev, _src in have_routes:
            result["actions"].append(f"delete route {dst} dev {dev}")
        if not module.check_mode:
            if exists:
                kernel.run("nft", ["-f", "-"], data=svc_nft.transaction())
            for dst, dev, _src in have_routes:
                kernel.run("ip", ["route", "del", dst, "dev", dev, "proto", str(svc_nft.RT_PROTO)])
            flatnet_state.remove(state_file)
            flatnet_state.remove(parts_file)
        result["changed"] = bool(result["actions"])
        if module._diff:
            result["diff"] = dict(before=before, after="")
        module.exit_json(**result)

    # The live table is listed only when the record says it should be what we wrote (drift
    # check, and the condition for writing only a delta).
    live = kernel.live_hash(chains, record.get("check") == "full") if exists and record.get("live") else None
    action, script, keep, definition = plan_table(module, p, inp, record, parts_file, exists, live)
    if action:
        result["actions"].append(action)
    if definition is None and module._diff:
        definition = svc_nft.render(inp.services, p["service_cidrs"], p["cluster_cidrs"], p["node"])
    if definition is not None:
        result["ruleset"] = definition

    # The host network's way into the service range: one route, through the bridge.
    v4 = [str(ipaddress.ip_network(c, strict=False)) for c in p["service_cidrs"]
          if ipaddress.ip_network(c, strict=False).version == 4]
    want_routes = sorted((c, p["bridge"], p["source"]) for c in v4) if p["bridge"] and p["source"] else []
    routes_to_delete = [r for r in have_routes if r not in want_routes]
    routes_to_add = [r for r in want_routes if r not in have_routes]
    for dst, dev, src in routes_to_add:
        result["actions"].append(f"add route {dst} dev {dev} src {src}")
    for dst, dev, _src in routes_to_delete:
        result["actions"].append(f"delete route {dst} dev {dev}")

    hairpin = kernel.ports_without_hairpin(p["bridge"]) if p["bridge"] and not inp.empty() else []
    for port in hairpin:
        result["actions"].append(f"set hairpin on {port}")

    if not module.check_mode:
        if hairpin:
            kernel.runner.batch("bridge", [["link", "set", "dev", port, "hairpin", "on"] for port in hairpin])
        if script:
            try:
                kernel.runner.run("nft", ["-f", "-"], data=script)
            except KernelError as exc:
                if not action.startswith("update"):
                    raise
                # A delta the kernel refused (all or nothing: nothing changed) falls back to
                # writing the whole table, so a record out of step cannot wedge every later run.
                result["actions"][0] = (f"write table {svc_nft.FAMILY} {svc_nft.TABLE} "
                                        f"(update refused: {str(exc).splitlines()[0][:200]})")
                keep["stale"] = {"chains": [], "sets": []}
                kernel.run("nft", ["-f", "-"], data=svc_nft.transaction(definition))
        for dst, dev, _src in routes_to_delete:
            kernel.run("ip", ["route", "del", dst, "dev", dev, "proto", str(svc_nft.RT_PROTO)])
        for dst, dev, src in routes_to_add:
            kernel.run("ip", ["route", "replace", dst, "dev", dev, "src", src, "proto", str(svc_nft.RT_PROTO)])
        parts = keep.pop("parts", None)
        new_record = dict(record, layout=svc_nft.LAYOUT, **keep)
        new_record.pop("desired", None)
        new_record.pop("parts", None)
        if parts is not None or "allocations" not in record:
            new_record["allocations"] = allocations(inp.services)
        if script:
            new_record["check"] = "full" if svc_nft.full_check(parts) else "quick"
            new_record["live"] = kernel.live_hash(kernel.chains(), new_record["check"] == "full")
        else:
            new_record["live"] = live
        if parts is not None:
            flatnet_state.save(parts_file, {"input": new_record["input"], "parts": parts})
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
