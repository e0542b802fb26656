#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
---
module: topology
short_description: Read the live pod network of a node (links, bridge, routes, VXLAN, pods)
version_added: 0.2.0
description:
  - Reads what the kernel of the node holds right now, not what the plan says - the underlay
    interface and its addresses, the bridge, every route of the main table (those of protocol
    157 are the collection's), the VXLAN device with its neighbour and FDB entries, and every
    pod namespace with the addresses of its C(eth0), whether C(eth0) is up and has a carrier,
    its host-side veth and its default route.
  - One C(ip -batch) process for the node, one C(bridge) process when the VXLAN device exists,
    and one C(ip) process per pod, started concurrently inside the pod's namespace.
  - The pods looked at are those recorded in C(pods.json), those named by the alias of a veth
    (C(flatnet pod NAME)) and those given in O(pods); namespaces of other software are left out.
  - M(flatnet.cluster.topology_graph) draws the cluster from what this module returns on every
    node (C(playbooks/show.yml)). Changes nothing.
author: flatnet maintainers (@flatnet)
options:
  vxlan_device:
    description: Name of the VXLAN device.
    type: str
    default: flatnet.1
  underlay_interface:
    description: Interface that carries traffic between nodes; by default the interface of the default route.
    type: str
  pods:
    description: Further pod names to look for (those of the plan), whether or not they were recorded.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.bridge
  - flatnet.cluster.attributes.read_only
"""

EXAMPLES = r"""
- name: Read the live state of the node
  flatnet.cluster.topology:
    bridge: "{{ flatnet_bridge }}"
    vxlan_device: "{{ flatnet_plan.vxlan.device }}"
    underlay_interface: "{{ flatnet_plan.nodes[inventory_hostname].underlay.interface }}"
    pods: "{{ flatnet_plan.nodes[inventory_hostname].pods | map(attribute='name') | list }}"
  register: live
"""

RETURN = r"""
topology:
  description: The live state of the node.
  returned: always
  type: dict
  contains:
    hostname:
      description: The node's host name.
      type: str
    underlay:
      description: C(interface), C(addrs) (global, with prefix), C(mtu), C(up); C(exists) false when the interface is missing.
      type: dict
    bridge:
      description: C(name), C(exists), C(up), C(addrs), C(mtu), C(ours) (carries the alias C(flatnet)).
      type: dict
    vxlan:
      description:
        - C(name), C(exists), C(up), C(vni), C(port), C(local), C(mtu), C(addrs), C(neigh)
          (list of C(ip), C(mac), C(permanent)) and C(fdb) (list of C(mac), C(dst), C(permanent)).
      type: dict
    routes:
      description:
        - Unicast routes of the main table, both families, sorted - C(dst), C(gateway), C(dev),
          C(protocol), C(onlink), C(scope).
      type: list
      elements: dict
    pods:
      description:
        - One entry per pod, sorted by name - C(name), C(netns) (V(live), V(dead) or V(missing)),
          C(eth0) (C(exists), C(up), C(carrier), C(addrs), C(mtu)), C(veth) (C(name), C(exists),
          C(up), C(master)), C(default_via) and C(recorded).
      type: list
      elements: dict
  sample:
    hostname: node1
    underlay: {interface: eth0, exists: true, addrs: [192.168.50.11/24], mtu: 1500, up: true}
    bridge: {name: cni0, exists: true, up: true, addrs: [10.244.0.1/24], mtu: 1450, ours: true}
    vxlan: {name: flatnet.1, exists: true, up: true, vni: 1, port: 8472, local: 192.168.50.11,
            mtu: 1450, addrs: [10.244.0.0/32], neigh: [{ip: 10.244.2.0, mac: "0e:08:ec:75:3c:ba", permanent: true}],
            fdb: [{mac: "0e:08:ec:75:3c:ba", dst: 192.168.60.11, permanent: true}]}
    routes:
      - {dst: 10.244.1.0/24, gateway: 192.168.50.12, dev: eth0, protocol: "157", onlink: false, scope: universe}
    pods:
      - name: node1-pod-1
        netns: live
        eth0: {exists: true, up: true, carrier: true, addrs: [10.244.0.2/24], mtu: 1450}
        veth: {name: veth5b747f11, exists: true, up: true, master: cni0}
        default_via: 10.244.0.1
        recorded: true
"""

import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import global_addrs, IPRoute2, netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError
from ansible_collections.flatnet.cluster.plugins.module_utils.names import POD_ALIAS_PREFIX, veth_name
from ansible_collections.flatnet.cluster.plugins.module_utils.names import is_pod_name


def _flags(link):
    return link.get("flags") or []


def link_state(link):
    """Admin state and carrier of one ``ip -json link`` entry."""
    return {"up": "UP" in _flags(link), "carrier": "LOWER_UP" in _flags(link)}


def parse_route(r, family):
    via = r.get("gateway") or (r.get("via") or {}).get("host")
    return {
        "dst": r.get("dst", "default"),
        "family": family,
        "gateway": via,
        "dev": r.get("dev"),
        "protocol": str(r.get("protocol", "boot")),
        "onlink": "onlink" in (r.get("flags") or []),
        "scope": r.get("scope", "universe"),
    }


def routes_of(route_docs):
    """Unicast routes of the main table, both families, in a stable order."""
    out = []
    for family, docs in route_docs:
        for r in docs:
            if r.get("type", "unicast") != "unicast":
                continue
            out.append(parse_route(r, family))
    return sorted(out, key=lambda r: (r["family"], r["dst"], r["protocol"], r["dev"] or "", r["gateway"] or ""))


def default_dev(routes):
    for r in routes:
        if r["dst"] == "default" and r["dev"]:
            return r["dev"]
    return None


def pod_names(links, record, wanted):
    """Pods worth looking at: recorded, named by a veth alias, or asked for."""
    names = set(wanted) | set((record.get("pods") or {}))
    for link in links.values():
        alias = link.get("ifalias") or ""
        if alias.startswith(POD_ALIAS_PREFIX):
            names.add(alias[len(POD_ALIAS_PREFIX):])
    return sorted(n for n in names if is_pod_name(n))


def pod_state(name, netns, docs, links, record):
    """One pod's entry from its namespace's ``addr show`` and ``route show default``."""
    veth = veth_name(name)
    host = links.get(veth)
    entry = {
        "name": name,
        "netns": netns,
        "recorded": name in (record.get("pods") or {}),
        "eth0": {"exists": False, "up": False, "carrier": False, "addrs": [], "mtu": None},
        "veth": {"name": veth, "exists": host is not None,
                 "up": bool(host) and "UP" in _flags(host), "master": (host or {}).get("master")},
        "default_via": None,
    }
    if docs is None:
        return entry
    addrs, defaults = docs[0], docs[1]
    for link in addrs:
        if link.get("ifname") == "eth0":
            entry["eth0"] = dict(link_state(link), exists=True, addrs=sorted(global_addrs(link)),
                                 mtu=link.get("mtu"))
    for r in defaults:
        via = r.get("gateway") or (r.get("via") or {}).get("host")
        if via:
            entry["default_via"] = via
            break
    return entry


def vxlan_state(name, link, addrs, neigh, fdb):
    if link is None:
        return {"name": name, "exists": False}
    data = (link.get("linkinfo") or {}).get("info_data") or {}
    return {
        "name": name,
        "exists": True,
        "up": "UP" in _flags(link),
        "ours": link.get("ifalias") == "flatnet",
        "vni": data.get("id"),
        "port": data.get("port"),
        "local": data.get("local") or data.get("local6"),
        "mtu": link.get("mtu"),
        "addrs": sorted(addrs),
        "neigh": sorted(({"ip": n["dst"], "mac": n.get("lladdr"), "permanent": "PERMANENT" in (n.get("state") or [])}
                         for n in neigh if n.get("dev", name) == name and "dst" in n),
                        key=lambda n: n["ip"]),
        "fdb": sorted(({"mac": f["mac"], "dst": f["dst"], "permanent": f.get("state") == "permanent"}
                       for f in fdb if f.get("dst") and f.get("mac")),
                      key=lambda f: (f["mac"], f["dst"])),
    }


def read(ip, params, record):
    """The whole live state of the node."""
    links_doc, addrs_doc, routes4, neigh = ip.json_batch(
        [["link", "show"], ["addr", "show"], ["route", "show", "table", "main"], ["neigh", "show"]], details=True)
    try:
        routes6 = ip.json_batch([["route", "show", "table", "main"]], family=6)[0]
    except KernelError:
        routes6 = []  # IPv6 disabled on the node
    links = {link["ifname"]: link for link in links_doc}
    addrs = {link["ifname"]: sorted(global_addrs(link)) for link in addrs_doc}
    routes = routes_of([(4, routes4), (6, routes6)])

    underlay_if = params["underlay_interface"] or default_dev(routes)
    ul = links.get(underlay_if) if underlay_if else None
    underlay = {"interface": underlay_if, "exists": ul is not None, "addrs": addrs.get(underlay_if, []),
                "mtu": (ul or {}).get("mtu"), "up": bool(ul) and "UP" in _flags(ul)}

    br_name = params["bridge"]
    br = links.get(br_name)
    bridge = {"name": br_name, "exists": br is not None, "up": bool(br) and "UP" in _flags(br),
              "addrs": addrs.get(br_name, []), "mtu": (br or {}).get("mtu"),
              "ours": (br or {}).get("ifalias") == "flatnet"}

    dev = params["vxlan_device"]
    fdb = ip.bridge_json(["fdb", "show", "dev", dev]) if dev in links else []
    vxlan = vxlan_state(dev, links.get(dev), addrs.get(dev, []), neigh, fdb)

    names = pod_names(links, record, params["pods"])
    netns_of = {}
    for name in names:
        if not os.path.lexists(os.path.join("/run/netns", name)):
            netns_of[name] = "missing"
        else:
            netns_of[name] = "live" if netns_inode(name) is not None else "dead"
    jobs = {name: ([["addr", "show"], ["route", "show", "default"]], name, None, True)
            for name in names if netns_of[name] == "live"}
    # A namespace that went away meanwhile counts as dead.
    docs, failed = ip.many_each(jobs)
    for name in failed:
        netns_of[name] = "dead"
    pods = [pod_state(name, netns_of[name], docs.get(name), links, record) for name in names]
    return {"hostname": socket.gethostname(), "underlay": underlay, "bridge": bridge, "vxlan": vxlan,
            "routes": routes, "pods": pods}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bridge=dict(type="str", default="cni0"),
            vxlan_device=dict(type="str", default="flatnet.1"),
            underlay_interface=dict(type="str"),
            pods=dict(type="list", elements="str", default=[]),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    p = module.params
    record = flatnet_state.load_or_fail(module, os.path.join(p["state_dir"], "pods.json"))
    try:
        ip = IPRoute2(module)
        topology = read(ip, p, record)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, topology=topology)


if __name__ == "__main__":
    main()
