#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
---
module: node_facts
short_description: Facts about a node for the flatnet plan (underlay, earlier records, kernel)
version_added: 0.1.0
description:
  - Finds the node's underlay, the interface and address that carry traffic between nodes,
    the interface holding O(underlay_ip) when given, else O(underlay_interface) when given,
    else the interface of the default route (IPv4 first, then IPv6).
  - Reads what earlier runs recorded under C(/var/lib/flatnet) (pod CIDRs, pod addresses, service allocations),
    so that the plan keeps them stable.
  - Reports kernel capabilities (VXLAN, nftables, IPv6, whether bridged traffic passes the IP
    hooks) and which of the programs the plan may run are installed (C(dnsmasq) for the cluster
    DNS, C(bird) and C(birdc) for the bgp backend), so that the plan role's preflight is one
    check on what this call read, and whether M(flatnet.cluster.bgp) left its record or log
    here (C(bgp_recorded)). Changes nothing.
author: flatnet maintainers (@flatnet)
options:
  underlay_interface:
    description: Interface whose primary global address is the underlay (IPv4 preferred).
    type: str
  underlay_ip:
    description: The underlay address; the interface holding it is the underlay interface.
    type: str
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.attributes.read_only
attributes:
  facts:
    support: full
    description: Sets RV(ansible_facts.flatnet_node).
"""

EXAMPLES = r"""
- name: Gather flatnet facts
  flatnet.cluster.node_facts:
    underlay_interface: "{{ flatnet_underlay_interface | default(omit) }}"
    underlay_ip: "{{ flatnet_underlay_ip | default(omit) }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts for the planner.
  returned: always
  type: dict
  contains:
    flatnet_node:
      description: The node's underlay, records and kernel capabilities.
      type: dict
      returned: always
      sample:
        hostname: node1
        underlay: {interface: eth0, ip: 192.168.50.11, prefix: 24, network: 192.168.50.0/24,
                   mtu: 1500, family: 4, chosen_by: default-route}
        recorded: {pod_cidrs: [10.244.0.0/24], pods: {node1-pod-1: [10.244.0.2]}}
        kernel: {vxlan: true, nft: /usr/sbin/nft, ipv6: true, bridge_nf_call_iptables: "1"}
        programs: {dnsmasq: /usr/sbin/dnsmasq, bird: null, birdc: null}
        bgp_recorded: false
"""

import glob
import ipaddress
import os
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import IPRoute2
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError

FIX = "set flatnet_underlay_interface (or flatnet_underlay_ip) for this node"


class UnderlayError(Exception):
    pass


def _candidates(link):
    """Usable global addresses of a link, primary ones first, IPv4 before IPv6."""
    addrs = [
        a for a in link.get("addr_info", [])
        if a.get("scope") == "global" and not a.get("tentative") and not a.get("dadfailed")
    ]
    return sorted(
        addrs,
        key=lambda a: (a.get("family") != "inet", bool(a.get("secondary")), bool(a.get("deprecated"))),
    )


def _underlay(link, addr, chosen_by):
    iface = ipaddress.ip_interface(f"{addr['local']}/{addr['prefixlen']}")
    return {
        "interface": link["ifname"],
        "ip": str(iface.ip),
        "prefix": iface.network.prefixlen,
        "network": str(iface.network),
        "mtu": link.get("mtu"),
        "family": iface.version,
        "chosen_by": chosen_by,
    }


def find_underlay(addr_links, default_routes, interface=None, ip=None):
    """Pure choice of the underlay from ``ip -json addr show`` and the default routes
    (``{4: [...], 6: [...]}``)."""
    links = {link["ifname"]: link for link in addr_links}
    if ip:
        try:
            wanted = ipaddress.ip_address(ip)
        except ValueError:
            raise UnderlayError(f"flatnet_underlay_ip {ip!r} is not an IP address") from None
        for link in addr_links:
            if interface and link["ifname"] != interface:
                continue
            for addr in link.get("addr_info", []):
                if ipaddress.ip_address(addr["local"]) == wanted:
                    return _underlay(link, addr, "ip")
        where = f"interface {interface}" if interface else "this node"
        raise UnderlayError(
            f"underlay IP {ip} is not an address of {where}: fix flatnet_underlay_ip "
            f"(or flatnet_underlay_interface)"
        )
    if interface:
        link = links.get(interface)
        if link is None:
            raise UnderlayError(
                f"underlay interface {interface} does not exist on this node: fix "
                f"flatnet_underlay_interface (or set flatnet_underlay_ip)"
            )
        cands = _candidates(link)
        if not cands:
            raise UnderlayError(
                f"underlay interface {interface} has no global address: fix "
                f"flatnet_underlay_interface (or set flatnet_underlay_ip)"
            )
        return _underlay(link, cands[0], "interface")
    for family in (4, 6):
        for route in default_routes.get(family) or []:
            link = links.get(route.get("dev"))
            if link is None:
                continue
            fam_name = "inet" if family == 4 else "inet6"
            cands = [a for a in _candidates(link) if a.get("family") == fam_name]
            pref = route.get("prefsrc")
            if pref:
                cands.sort(key=lambda a: a["local"] != pref)
            if cands:
                return _underlay(link, cands[0], "default-route")
    raise UnderlayError(f"no default route with a global address to pick the underlay from: {FIX}")


def read_recorded(state_dir):
    node = flatnet_state.load(os.path.join(state_dir, "node.json"))
    pods = flatnet_state.load(os.path.join(state_dir, "pods.json"))
    recorded = {}
    if node.get("pod_cidrs"):
        recorded["pod_cidrs"] = list(node["pod_cidrs"])
    pod_ips = {
        name: [str(ip).split("/", maxsplit=1)[0] for ip in (rec or {}).get("ips", [])]
        for name, rec in (pods.get("pods") or {}).items()
    }
    if pod_ips:
        recorded["pods"] = pod_ips
    # ClusterIPs and node ports the services module recorded, so they stay stable.
    services = flatnet_state.load(os.path.join(state_dir, "services.json")).get("allocations")
    if isinstance(services, dict) and services:
        recorded["services"] = services
    return recorded


def vxlan_available():
    if os.path.isdir("/sys/module/vxlan"):
        return True
    release = os.uname().release
    base = f"/lib/modules/{release}"
    try:
        with open(os.path.join(base, "modules.builtin"), encoding="utf-8") as f:
            if any(line.strip().endswith("/vxlan.ko") for line in f):
                return True
    except OSError:
        pass
    return bool(glob.glob(f"{base}/kernel/drivers/net/vxlan.ko*")
                or glob.glob(f"{base}/kernel/drivers/net/vxlan/vxlan.ko*"))


def ipv6_enabled():
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", encoding="ascii") as f:
            return f.read().strip() == "0"
    except OSError:
        return False


# The bgp module's record and log in the state directory (plugins/modules/bgp.py RECORD, LOG).
BGP_FILES = ("bgp.json", "bird.log")
# Where the roles run them from (Debian's packages dnsmasq-base and bird2 put them there).
PROGRAMS = {"dnsmasq": "/usr/sbin/dnsmasq", "bird": "/usr/sbin/bird", "birdc": "/usr/sbin/birdc"}


def bridge_nf_call_iptables():
    """'1' or '0' as this network namespace has it; None when br_netfilter is not loaded."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def programs():
    """Path of each program the plan may run, None where it is not installed."""
    return {name: path if os.path.isfile(path) and os.access(path, os.X_OK) else None
            for name, path in PROGRAMS.items()}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            underlay_interface=dict(type="str"),
            underlay_ip=dict(type="str"),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        supports_check_mode=True,
    )
    try:
        ip = IPRoute2(module)
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    try:
        addr_links = ip.json(["addr", "show"])
        routes = {4: ip.json(["-4", "route", "show", "default"]),
                  6: ip.json(["-6", "route", "show", "default"]) if ipv6_enabled() else []}
        underlay = find_underlay(addr_links, routes, module.params["underlay_interface"],
                                 module.params["underlay_ip"])
        recorded = read_recorded(module.params["state_dir"])
    except (KernelError, UnderlayError, flatnet_state.StateError) as exc:
        module.fail_json(msg=str(exc))
    facts = {
        "hostname": socket.gethostname(),
        "underlay": underlay,
        "recorded": recorded,
        "kernel": {
            "vxlan": vxlan_available(),
            "nft": module.get_bin_path("nft"),
            "ipv6": ipv6_enabled(),
            "bridge_nf_call_iptables": bridge_nf_call_iptables(),
        },
        "programs": programs(),
        # What the bgp module left on this node (its record or log): without either, stopping
        # BGP (any other backend) has nothing to do and the bgp role skips the call.
        "bgp_recorded": any(os.path.exists(os.path.join(module.params["state_dir"], f)) for f in BGP_FILES),
    }
    module.exit_json(changed=False, ansible_facts={"flatnet_node": facts})


if __name__ == "__main__":
    main()
