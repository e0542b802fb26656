# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""BIRD 2 for the bgp backend: the configuration text, and reading ``birdc`` output.

Everything that reaches the configuration was checked by the planner (plugin_utils/bgp_plan.py);
it is checked again here (addresses and prefixes are parsed, names never reach the file
except as quoted descriptions) because the module may be called directly.

The configuration, per node:
  - ``router id``: the node's underlay IPv4 address;
  - ``protocol device``: interface states (``gateway direct`` needs them);
  - ``protocol kernel``: exports only BGP-learned routes into the main table; BIRD gives them
    its own route protocol (12, ``proto bird``), never flatnet's 157, and removes them when it
    stops cleanly or restarts;
  - ``protocol static``: this node's pod CIDRs as blackhole routes, only to be announced (the
    kernel export refuses them: the bridge's connected route carries the traffic);
  - one ``protocol bgp`` per session (iBGP), with ``rr client`` on a reflector's clients;
  - import filter: a prefix inside a cluster CIDR, exactly one that the plan gave to a peer,
    with that peer's underlay address as next hop; or, from a next hop of the underlay subnet
    that the plan does not know (a node added later with --limit), one node-sized block that
    no known node holds; anything else (a default route, the underlay, another node's CIDR
    announced by the wrong node, a part of a known block) is rejected;
  - on a full mesh, a dynamic ``protocol bgp`` accepting sessions from the underlay subnet, so
    that a new node's sessions come up without a run on the others;
  - export filter: this node's pod CIDRs (and, on a reflector, the routes it reflects).
"""

from __future__ import annotations

import ipaddress
import re

HEADER = "# flatnet.cluster: written by flatnet.cluster.bgp; changes are overwritten\n"
# The protocol kernel of BIRD marks its routes with RTPROT_BIRD (linux/rtnetlink.h).
RTPROT_BIRD = 12


class BirdError(Exception):
    """A configuration that cannot be rendered, or birdc output that cannot be read."""


def _v4(value, what):
    try:
        return ipaddress.IPv4Address(str(value))
    except ValueError:
        raise BirdError(f"{what} {value!r} is not an IPv4 address") from None


def _net4(value, what):
    try:
        return ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        raise BirdError(f"{what} {value!r} is not an IPv4 network (a.b.c.d/n)") from None


def _desc(text):
    # A description is a quoted BIRD string: keep only what cannot end or escape it.
    return re.sub(r"[^A-Za-z0-9_.:-]", "_", str(text))[:64]


def protocol_name(address):
    """The BGP protocol's name for a peer address (BIRD symbols: a letter, then [A-Za-z0-9_])."""
    return "peer_" + str(_v4(address, "session address")).replace(".", "_")


def render(view, log="stderr"):
    """The BIRD 2 configuration for ``view`` (plugin_utils/bgp_plan.py ``bgp_of``)."""
    router_id = _v4(view.get("router_id"), "router_id")
    asn = int(view.get("asn") or 0)
    if not 1 <= asn <= 4294967294:
        raise BirdError(f"asn {asn} is out of range")
    hold = int(view.get("hold_time") or 9)
    keep = int(view.get("keepalive_time") or 3)
    own = [_net4(c, "pod CIDR") for c in view.get("pod_cidrs") or []]
    clusters = [_net4(c, "cluster CIDR") for c in view.get("cluster_cidrs") or []]
    if not clusters:
        raise BirdError("no cluster CIDR: the import filter would have nothing to accept")
    for c in own:
        if not any(c.subnet_of(k) for k in clusters):
            raise BirdError(f"pod CIDR {c} is outside the cluster CIDRs")
    accept = []
    for a in view.get("accept") or []:
        prefix = _net4(a.get("prefix"), "accepted prefix")
        hop = _v4(a.get("next_hop"), "next hop")
        if not any(prefix.subnet_of(k) for k in clusters):
            continue  # never accepted: the filter only takes prefixes inside the cluster
        accept.append((prefix, hop, _desc(a.get("node", ""))))
    reflector = view.get("role") == "reflector"
    underlay = _net4(view["underlay_network"], "underlay_network") if view.get("underlay_network") else None
    sessions = []
    for s in view.get("sessions") or []:
        sessions.append((protocol_name(s.get("address")), _v4(s.get("address"), "session address"),
                         bool(s.get("rr_client")), _desc(s.get("name", ""))))
    lines = [HEADER.rstrip("\n"),
             f"router id {router_id};",
             f"log {log} {{ info, remote, warning, error, auth, fatal, bug }};",
             "",
             "protocol device { scan time 5; }",
             "",
             "# Learned routes go to the main table as proto bird (12); nothing is imported from it.",
             "protocol kernel flatnet_kernel {",
             "  scan time 10;",
             "  ipv4 {",
             "    import none;",
             "    export filter { if source = RTS_BGP then accept; reject; };",
             "  };",
             "}",
             "",
             "# This node's pod CIDRs, announced; blackhole routes that never reach the kernel.",
             "protocol static flatnet_pods {",
             "  ipv4;"]
    lines += [f"  route {c} blackhole;" for c in own]
    lines += ["}", "",
              "filter flatnet_import {",
              "  if net.type != NET_IP4 then reject;",
              "  if ! (net ~ [ " + ", ".join(f"{k}+" for k in clusters) + " ]) then reject;"]
    lines += [f"  if net = {p} && bgp_next_hop = {h} then accept;  # {d}" for p, h, d in accept]
    # A node that joined after this node's last run (added with --limit): one node-sized block
    # that no node of this plan holds (nor a part of one), from an address of this subnet.
    known_hops = sorted({h for _p, h, _d in accept}, key=int)
    if known_hops:
        lines.append("  if bgp_next_hop ~ [ " + ", ".join(map(str, known_hops)) + " ] then reject;")
    taken = [p for p, _h, _d in accept] + own
    if taken:
        lines.append("  if net ~ [ " + ", ".join(f"{p}+" for p in taken) + " ] then reject;")
    if underlay is not None and own:
        lines.append(f"  if net.len = {own[0].prefixlen} && bgp_next_hop ~ {underlay} then accept;  # a new node")
    lines += ["  reject;", "}", "",
              "filter flatnet_export {"]
    lines += [f"  if proto = \"flatnet_pods\" && net = {c} then accept;" for c in own]
    if reflector:
        lines.append("  if source = RTS_BGP then accept;  # reflected to the clients")
    lines += ["  reject;", "}", "",
              "template bgp flatnet_peer {",
              f"  local {router_id} as {asn};",
              "  direct;  # sessions only run on one underlay subnet: the next hop is on-link",
              f"  hold time {hold};",
              f"  keepalive time {keep};",
              "  connect delay time 1;",
              "  connect retry time 3;",
              "  error wait time 1, 10;",
              "  ipv4 {",
              "    import filter flatnet_import;",
              "    export filter flatnet_export;",
              "    gateway direct;",
              "  };",
              "}"]
    if reflector and view.get("rr_cluster_id"):
        cluster_id = _v4(view["rr_cluster_id"], "rr_cluster_id")
    else:
        cluster_id = None
    if view.get("role") == "mesh" and underlay is not None:
        # A full mesh accepts a session from a node of its subnet that it does not know yet (a
        # node added with --limit): the import filter decides what that node may announce.
        lines += ["", "protocol bgp flatnet_new from flatnet_peer {",
                  f"  neighbor range {underlay} internal;",
                  "  dynamic name \"flatnet_new_\";",
                  "}"]
    for name, address, client, desc in sessions:
        lines += ["", f"protocol bgp {name} from flatnet_peer {{",
                  f"  description \"{desc}\";",
                  f"  neighbor {address} as {asn};"]
        if client:
            lines.append("  rr client;")
            if cluster_id is not None:
                lines.append(f"  rr cluster id {cluster_id};")
        lines.append("}")
    return "\n".join(lines) + "\n"


_PROTO_LINE = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+(?: \S+)?)\s*(.*)$")


def parse_protocols(text):
    """``birdc show protocols`` -> {name: {proto, state, info}} (BGP sessions: info is
    ``Established``, ``Active``, ``Connect`` ...)."""
    out = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[0] in ("Name", "BIRD") or line.startswith(("0001", "2002", "1002")):
            continue
        name, proto, _table, state = parts[:4]
        # Then the "since" time (one or two words) and the info.
        rest = parts[4:]
        info = ""
        if rest:
            if len(rest) >= 2 and re.match(r"\d\d:\d\d:\d\d", rest[1]):
                rest = rest[2:]
            else:
                rest = rest[1:]
            info = " ".join(rest)
        out[name] = {"proto": proto, "state": state, "info": info}
    return out


_ROUTE = re.compile(r"^(\d+\.\d+\.\d+\.\d+/\d+)\s+\S+\s+\[(\S+?)\s")
_ROUTE_CONT = re.compile(r"^\s+\S+\s+\[(\S+?)\s")
_VIA = re.compile(r"via (\d+\.\d+\.\d+\.\d+)")


def parse_routes(text):
    """``birdc show route`` (BIRD 2) -> [{prefix, protocol, via}] for the best route of each
    prefix (the first one listed)."""
    routes = []
    current = None
    for line in (text or "").splitlines():
        m = _ROUTE.match(line)
        if m:
            current = {"prefix": m.group(1), "protocol": m.group(2), "via": None}
            routes.append(current)
            continue
        v = _VIA.search(line)
        if v and current is not None and current["via"] is None:
            current["via"] = v.group(1)
    return routes
