# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight (controller side, pure functions): what the plan needs from one node's kernel and
programs, as node_facts read them, told in one message before any node is changed.

The plan role asserts that the message is empty (roles/plan/tasks/preflight.yml); every part
of it says what is missing and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.flatnet.cluster.plugins.plugin_utils.peer_views import peers_of

# The spellings Ansible's ``bool`` filter takes as true (anything else is false).
_TRUE = frozenset({"yes", "on", "1", "true", "y", "t"})

BR_NETFILTER_FIX = (
    "; a pod reaching a service endpoint on its own node would get no answer. Fix: modprobe br_netfilter "
    "&& sysctl -w net.bridge.bridge-nf-call-iptables=1, and keep it across reboots with "
    "/etc/modules-load.d/br_netfilter.conf (br_netfilter) and /etc/sysctl.d/99-flatnet.conf "
    "(net.bridge.bridge-nf-call-iptables = 1), as for kube-proxy."
)


def _bool(value) -> bool:
    """As Ansible's ``bool`` filter reads a value."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return value in (1, 1.0)


def problems(node_facts: Mapping, plan: Mapping, node: str, firewall=True, cni=False, cni_query=None) -> list[str]:
    """What keeps ``node`` from running ``plan``, one sentence each (each carries the spacing
    the message joins it with); empty when nothing does.

    ``node_facts``: the node's ``flatnet_node`` facts (kernel, programs); ``firewall`` and
    ``cni``: flatnet_firewall and flatnet_cni; ``cni_query``: the cni module's query of the node.
    """
    kernel = node_facts.get("kernel") or {}
    programs = node_facts.get("programs") or {}
    cni_query = cni_query or {}
    found = []
    if not _bool(kernel.get("vxlan")):
        vxlan_peers = [p["name"] for p in peers_of(plan, node) if p["mode"] == "vxlan"]
        if vxlan_peers:
            found.append(
                f"it has VXLAN peers ({', '.join(vxlan_peers)}) but its kernel has no vxlan module: load it "
                "(modprobe vxlan) or use flatnet_backend: host-gw with nodes on one subnet. "
            )
    if not kernel.get("nft") and _bool(True if firewall is None else firewall):
        found.append("nft was not found: install the nftables package or set flatnet_firewall: false. ")
    if not _bool(kernel.get("ipv6")) and any(":" in str(c) for c in plan.get("cluster_cidrs") or []):
        found.append("IPv6 is disabled on it but the cluster CIDR has an IPv6 range: enable IPv6 or use an "
                     "IPv4-only cluster_cidr.")
    if not cni_query.get("plugin_dir") and _bool(cni):
        found.append(
            " CNI plugins (bridge, host-local, portmap, loopback) were not found in "
            f"{' or '.join(map(str, cni_query.get('missing_plugins') or []))}: install the "
            "containernetworking-plugins package or set flatnet_cni: false."
        )
    if (plan.get("dns") or {}).get("ip") and not programs.get("dnsmasq"):
        found.append(" It has no /usr/sbin/dnsmasq, which the cluster DNS pods run: install the Debian package "
                     "dnsmasq-base, or set flatnet_dns_replicas: 0.")
    bridge_nf = kernel.get("bridge_nf_call_iptables")
    if plan.get("services") and bridge_nf != "1":
        state = ("br_netfilter is not loaded (no /proc/sys/net/bridge/bridge-nf-call-iptables)" if bridge_nf is None
                 else f"net.bridge.bridge-nf-call-iptables is {bridge_nf}")
        found.append(f" Services are declared (flatnet_services) but {state}{BR_NETFILTER_FIX}")
    bird_missing = [p for p in ("bird", "birdc") if not programs.get(p)] if plan.get("backend") == "bgp" else []
    if bird_missing:
        found.append(f" It has no {' or '.join('/usr/sbin/' + p for p in bird_missing)}, which flatnet_backend bgp "
                     "runs: install the Debian package bird2, or use another flatnet_backend.")
    return found


def message(node_facts: Mapping, plan: Mapping, node: str, firewall=True, cni=False, cni_query=None) -> str:
    """The preflight's message for ``node``: empty when it can run ``plan``."""
    found = problems(node_facts, plan, node, firewall, cni, cni_query)
    return f"{node} cannot run this plan: {''.join(found)}" if found else ""
