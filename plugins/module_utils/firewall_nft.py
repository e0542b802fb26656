# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables table ``inet flatnet`` as text, and how to tell whether the live one drifted.

Pure functions (no processes): the firewall module runs ``nft`` and passes the output in.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import ipaddress

from ansible_collections.flatnet.cluster.plugins.module_utils import nft_table
from ansible_collections.flatnet.cluster.plugins.module_utils.names import link_name_problem

FAMILY = "inet"
TABLE = "flatnet"

# Multicast is never masqueraded (flannel does the same): it does not leave the link routed.
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
IP_KW = {4: "ip", 6: "ip6"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
# Set by ip flatnet-svc on replies from service endpoints (services_nft.TRACK_MARK).
TRACK_MARK = 0x8000


def _by_family(items, parse):
    result = {4: [], 6: []}
    for item in items or []:
        value = parse(str(item))
        text = str(value)
        if text not in result[value.version]:
            result[value.version].append(text)
    return {v: sorted(x, key=parse) for v, x in result.items()}


def _set(lines, name, version, elements, interval):
    lines.append(f"\tset {name} {{")
    lines.append(f"\t\ttype {ADDR_TYPE[version]}")
    if interval:
        lines.append("\t\tflags interval")
    if elements:
        lines.append("\t\telements = { " + ", ".join(elements) + " }")
    lines.append("\t}")
    lines.append("")


def _match(kw, field, version, cidrs, negate=False):
    """``ip saddr 10.244.0.0/16`` for one CIDR (a mask and a compare), ``ip saddr @cluster4``
    (a set lookup, several times dearer per packet) only for more than one."""
    op = "!= " if negate else ""
    if len(cidrs) == 1:
        return f"{kw} {field} {op}{cidrs[0]}"
    return f"{kw} {field} {op}@cluster{version}"


def render(cluster_cidrs, masquerade=True, vxlan_port=None, peer_underlay_ips=(), bridge=None,
           notrack=True, vxlan_guard=True):
    """The full definition of ``table inet flatnet`` (nft syntax, ends with a newline).

    Nothing here drops forwarded traffic. The only drop is VXLAN from hosts that are not
    cluster nodes, so nobody can inject packets into the overlay.

    Every base chain is a hook that every packet of the node passes (bridged pod traffic too,
    where br_netfilter is loaded), so there is none that does not change a verdict or a
    packet: no forward chain (accepting in it never overrode another table's drop, and the
    policy accepts anyway; ``bridge`` is accepted and unused since 0.2.0), the notrack chains
    only with ``notrack`` (when conntrack runs on the node: masquerade or services), the input
    chain only with ``vxlan_guard``. docs/performance.md section 3 has what each one costs.
    """
    del bridge  # the forward chain is gone (see above)
    cidrs = _by_family(cluster_cidrs, lambda t: ipaddress.ip_network(t, strict=False))
    if not cidrs[4] and not cidrs[6]:
        raise ValueError("cluster_cidrs is empty")
    peers = _by_family(peer_underlay_ips, ipaddress.ip_address)
    families = [v for v in (4, 6) if cidrs[v]]
    guard = vxlan_port is not None and vxlan_guard

    lines = [f"table {FAMILY} {TABLE} {{"]
    for v in families:
        _set(lines, f"cluster{v}", v, cidrs[v], interval=True)
    if guard:
        for v in (4, 6):
            _set(lines, f"nodes{v}", v, peers[v], interval=False)

    chains = []
    if notrack:
        # Pod-to-pod traffic needs no connection tracking (only traffic leaving the cluster
        # is masqueraded), and tracking it costs about a tenth of the throughput of a bridged
        # same-node path where br_netfilter is loaded: skip it. So too the VXLAN underlay.
        # Except replies from a Service's endpoints, which the services table (ip flatnet-svc,
        # services_nft.py) marks with TRACK_MARK first: conntrack must see them to undo the DNAT.
        rules = [f"{_match(IP_KW[v], 'saddr', v, cidrs[v])} {_match(IP_KW[v], 'daddr', v, cidrs[v])} "
                 f"meta mark & {TRACK_MARK:#x} == 0 notrack" for v in families]
        if vxlan_port is not None:
            rules.append(f"udp dport {int(vxlan_port)} notrack")
        chains.append(("prerouting", "type filter hook prerouting priority raw; policy accept;", rules))
        if vxlan_port is not None:
            chains.append(("output", "type filter hook output priority raw; policy accept;",
                           [f"udp dport {int(vxlan_port)} notrack"]))
    if masquerade:
        chains.append(("postrouting", "type nat hook postrouting priority srcnat; policy accept;", [
            f"{_match(IP_KW[v], 'saddr', v, cidrs[v])} {_match(IP_KW[v], 'daddr', v, cidrs[v], True)} "
            f"{IP_KW[v]} daddr != {MULTICAST[v]} masquerade fully-random" for v in families]))
    if guard:
        # One rule per family, the port first: any other packet leaves after one compare.
        chains.append(("input", "type filter hook input priority filter; policy accept;", [
            f"udp dport {int(vxlan_port)} {IP_KW[v]} saddr != @nodes{v} drop" for v in (4, 6)]))
    for name, hook, rules in chains:
        lines.append(f"\tchain {name} {{")
        lines.append(f"\t\t{hook}")
        lines.extend(f"\t\t{rule}" for rule in rules)
        lines.append("\t}")
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(name):
    # Quoted so that nft never parses an interface name as a keyword; what a quoted word
    # cannot carry is refused (the kernel layer's one rule), never silently dropped.
    problem = link_name_problem(name)
    if problem:
        raise ValueError(f"interface name {name!r} {problem}")
    return f'"{name}"'


def transaction(definition=""):
    """The table's atomic ``nft -f -`` script (``nft_table.transaction``); empty: delete it."""
    return nft_table.transaction(FAMILY, TABLE, definition)


def forward_drop_chains(chains_json):
    """Base chains on the forward hook, outside our table, whose policy is drop.

    nftables runs every base chain of a hook: an accept in ``inet flatnet`` ends only that
    chain, and a drop anywhere else (iptables-nft's ``ip filter FORWARD`` under Docker) still
    drops the packet. We can only report them.
    """
    found = []
    for item in chains_json.get("nftables", []) if isinstance(chains_json, dict) else []:
        chain = item.get("chain")
        if not chain or chain.get("hook") != "forward" or chain.get("policy") != "drop":
            continue
        if chain.get("family") == FAMILY and chain.get("table") == TABLE:
            continue
        found.append(f"{chain['family']} {chain['table']} {chain['name']}")
    return sorted(found)
