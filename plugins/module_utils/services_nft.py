# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables table ``ip flatnet-svc``: Services the way kube-proxy's nftables mode does them.

Pure functions (no processes): the services module runs ``nft`` and passes the output in.
Layout (docs/services.md):

- ``service-ips`` (``daddr . l4proto . dport : verdict``) and ``service-nodeports``
  (``l4proto . dport : verdict``) send a new connection to its service chain, from the nat
  prerouting hook (pods, outside) and the nat output hook (the node's host network).
- A service chain without affinity is one rule: ``dnat to numgen random mod N map { 0 : ip,
  … } : port`` (no chain per endpoint). With ClientIP affinity it first looks the client up
  in each endpoint's timeout set, and the endpoint chains update that set and DNAT.
- Hairpin traffic (a pod reaching itself through its service: source == destination after
  DNAT) is found in nat postrouting by the set ``hairpin`` (``ip . ip``) and masqueraded.
- NodePort chains masquerade what comes from outside the cluster (policy Cluster) or keep the
  client IP and use only this node's endpoints (policy Local).
- Filter chains reject a service without endpoints (TCP reset / ICMP unreachable) and drop
  anything else sent into the service range; in prerouting after DNAT too, because an ICMP
  error made in the forward hook never reached a pod behind the bridge (br_netfilter).
- A raw chain (priority -310, before the firewall's notrack at raw) marks traffic to and from
  endpoints with TRACK_MARK so that ``inet flatnet`` leaves it to conntrack, which undoes the
  DNAT of replies; tracking only the replies breaks a direct connection that reuses the client
  port of an earlier one through the ClusterIP.

``plan()`` splits the table into a static part (base chains, helper chains, set and map
declarations) and per-service parts (chains, affinity sets, set and map elements), so that
``delta()`` can write only what changed (kube-proxy's partial sync): the other services'
chains, their affinity sets and their established connections stay as they are.

Priorities are numbers: nft 1.0.6 refuses ``dstnat`` on the output hook.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ansible_collections.flatnet.cluster.plugins.module_utils import nft_table

FAMILY = "ip"
TABLE = "flatnet-svc"
COMMENT = "flatnet.cluster services"
# Bumped whenever the layout changes: a record of another layout means a full rewrite.
LAYOUT = 2
# kube-proxy's masquerade bit; and a second bit the firewall table reads (nftables.py).
MASQ_MARK = 0x4000
TRACK_MARK = 0x8000
# Routes the services module makes carry this protocol number (the peers module owns 157 and
# prunes every 157 route it does not know).
RT_PROTO = 158
PRIO_RAW = -310
PRIO_NAT_PRE = -100
PRIO_NAT_OUT = -100
PRIO_NAT_POST = 100
PRIO_FILTER = -110
PRIO_FILTER_POST_DNAT = -90

# Named sets and maps: name -> (kind, type, flags). Their elements are per-service parts.
SETS = {
    "cluster-ips": ("set", "ipv4_addr", None),
    "service-ranges": ("set", "ipv4_addr", "interval"),
    "endpoints": ("set", "ipv4_addr . inet_proto . inet_service", None),
    "hairpin": ("set", "ipv4_addr . ipv4_addr", None),
    "service-ips": ("map", "ipv4_addr . inet_proto . inet_service", None),
    "service-nodeports": ("map", "inet_proto . inet_service", None),
    "no-endpoint-services": ("map", "ipv4_addr . inet_proto . inet_service", None),
    "no-endpoint-nodeports": ("map", "inet_proto . inet_service", None),
}
# The maps whose elements send traffic somewhere: listed (with the rules) by the drift check.
VERDICT_MAPS = ("service-ips", "service-nodeports", "no-endpoint-services", "no-endpoint-nodeports")
# Up to this many service chains the drift check lists every rule too (see the services module).
FULL_CHECK_MAX_CHAINS = 200


def full_check(summary_parts):
    """Whether the drift check of a table written from ``summary_parts`` lists every rule."""
    return len(summary_parts["chains"]) <= FULL_CHECK_MAX_CHAINS


def without_affinity_elements(listing):
    """``nft list table`` text without the elements of the affinity sets (``aff-…``), which
    the kernel adds and expires with traffic."""
    out, in_aff, in_elements = [], False, False
    for line in listing.splitlines():
        text = line.strip()
        if in_elements:
            in_elements = not text.endswith("}")
            continue
        if text.startswith("set "):
            in_aff = text.startswith("set aff-")
        elif in_aff and text.startswith("elements = {"):
            in_elements = not text.endswith("}")
            continue
        elif text == "}":
            in_aff = False
        out.append(line)
    return "\n".join(out) + "\n"


def _id(*parts) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:12]


def _endpoint_ips(svc):
    return [ep["ip"] for ep in svc.get("endpoints") or [] if ":" not in ep["ip"]]


def _comment(text) -> str:
    # Comments are names and numbers from the plan; nothing that could end the string.
    return "".join(ch for ch in str(text) if ch.isalnum() or ch in "/:._->, ")[:120]


def _nets(cidrs):
    return sorted({str(ipaddress.ip_network(c, strict=False)) for c in cidrs or []
                   if ipaddress.ip_network(c, strict=False).version == 4})


def plan(services, service_cidrs, cluster_cidrs, node=None):
    """The desired table, in parts: ``{"chains": {name: (comment, [rules])}, "sets": {name:
    timeout}, "elements": {set or map: sorted [element]}}`` (per-service parts only).

    ``services``: the plan's services (``cluster_ip``, ``ports``, ``endpoints`` [{ip, node}],
    ``session_affinity``, ``session_affinity_timeout``, ``type``, ``external_traffic_policy``);
    ``node``: this node's name (for policy Local). A chain's name hashes everything its
    comment shows, so a chain of a given name always has the same comment.
    """
    svc_nets, clusters = _nets(service_cidrs), _nets(cluster_cidrs)
    if not svc_nets:
        raise ValueError("service_cidrs has no IPv4 range")
    chains, sets = {}, {}
    elements = {name: set() for name in SETS}
    elements["service-ranges"].update(svc_nets)

    for svc in sorted(services or [], key=lambda s: (s["namespace"], s["name"])):
        cip = str(ipaddress.ip_address(svc["cluster_ip"]))
        elements["cluster-ips"].add(cip)
        eps = _endpoint_ips(svc)
        local = [ep["ip"] for ep in svc.get("endpoints") or [] if ep.get("node") == node and ":" not in ep["ip"]]
        affinity = svc.get("session_affinity") == "ClientIP"
        timeout = int(svc.get("session_affinity_timeout") or 10800)
        for port in sorted(svc["ports"], key=lambda p: (p["protocol"], p["port"])):
            proto, tport = port["protocol"], int(port["target_port"])
            if proto not in ("tcp", "udp"):
                raise ValueError(f"protocol {proto!r} of {svc['namespace']}/{svc['name']}")
            key = (svc["namespace"], svc["name"], proto, int(port["port"]))
            label = f"{svc['namespace']}/{svc['name']}:{port.get('name') or port['port']}/{proto}"
            node_port = port.get("node_port") if svc.get("type") == "NodePort" else None
            if not eps:
                elements["no-endpoint-services"].add(f"{cip} . {proto} . {int(port['port'])} : goto reject-chain")
                if node_port:
                    elements["no-endpoint-nodeports"].add(f"{proto} . {int(node_port)} : goto reject-chain")
                continue
            for ip in eps:
                elements["endpoints"].add(f"{ip} . {proto} . {tport}")
                elements["hairpin"].add(f"{ip} . {ip}")
            ep_chain, aff_set = {}, {}
            if affinity:
                for ip in eps:
                    eid = _id(*key, ip, tport, timeout)
                    ep_chain[ip], aff_set[ip] = f"ep-{eid}", f"aff-{eid}"
                    sets[f"aff-{eid}"] = timeout
                    chains[f"ep-{eid}"] = (f"{label} -> {ip}:{tport}", [
                        f"update @aff-{eid} {{ ip saddr }}", f"meta l4proto {proto} dnat to {ip}:{tport}"])

            def balance(ips):
                if affinity:
                    rules = [f"ip saddr @{aff_set[ip]} goto {ep_chain[ip]}" for ip in ips]
                    if len(ips) == 1:
                        return rules + [f"goto {ep_chain[ips[0]]}"]
                    vmap = ", ".join(f"{i} : goto {ep_chain[ip]}" for i, ip in enumerate(ips))
                    return rules + [f"numgen random mod {len(ips)} vmap {{ {vmap} }}"]
                if len(ips) == 1:
                    return [f"meta l4proto {proto} dnat to {ips[0]}:{tport}"]
                dmap = ", ".join(f"{i} : {ip}" for i, ip in enumerate(ips))
                return [f"meta l4proto {proto} dnat to numgen random mod {len(ips)} map {{ {dmap} }} : {tport}"]

            sid = _id(*key, label, tport, affinity, timeout)
            chains[f"svc-{sid}"] = (label, balance(eps))
            elements["service-ips"].add(f"{cip} . {proto} . {int(port['port'])} : goto svc-{sid}")
            if node_port:
                ext = []
                if svc.get("external_traffic_policy") == "Local":
                    # The node itself has no "client IP" to keep; pods are routed as inside the cluster.
                    ext.append("fib saddr type local jump mark-for-masquerade")
                    if clusters:
                        ext.append(f"ip saddr {{ {', '.join(clusters)} }} goto svc-{sid}")
                    ext += balance(local) if local else ["drop"]
                else:
                    if clusters:
                        ext.append(f"ip saddr != {{ {', '.join(clusters)} }} jump mark-for-masquerade")
                    else:
                        ext.append("jump mark-for-masquerade")
                    ext.append(f"goto svc-{sid}")
                xid = _id(sid, int(node_port))
                chains[f"ext-{xid}"] = (f"{label} node port {int(node_port)}", ext)
                elements["service-nodeports"].add(f"{proto} . {int(node_port)} : goto ext-{xid}")
    return {"chains": chains, "sets": sets, "elements": {k: sorted(v) for k, v in elements.items()}}


def _static_chains():
    """Base and helper chains: (name, base spec or None, comment, rules)."""
    check = ["ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
             "ip daddr @cluster-ips reject", "ip daddr @service-ranges drop"]
    return [
        ("raw-prerouting", ("filter", "prerouting", PRIO_RAW), None,
         # Both directions: a reply tracked without its request can match an older, DNATed
         # connection from the same client port and be rewritten to come from the ClusterIP.
         [f"ip saddr . meta l4proto . th sport @endpoints meta mark set mark or {TRACK_MARK:#x}",
          f"ip daddr . meta l4proto . th dport @endpoints meta mark set mark or {TRACK_MARK:#x}"]),
        ("nat-prerouting", ("nat", "prerouting", PRIO_NAT_PRE), None, ["jump services"]),
        ("nat-output", ("nat", "output", PRIO_NAT_OUT), None, ["jump services"]),
        ("nat-postrouting", ("nat", "postrouting", PRIO_NAT_POST), None, ["jump masquerading"]),
        ("filter-prerouting-post-dnat", ("filter", "prerouting", PRIO_FILTER_POST_DNAT), None, check),
        ("filter-forward", ("filter", "forward", PRIO_FILTER), None, check),
        ("filter-output-post-dnat", ("filter", "output", PRIO_FILTER_POST_DNAT), None, check),
        ("filter-input", ("filter", "input", PRIO_FILTER), None,
         ["ct state new fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"]),
        ("services", None, None, ["ip daddr . meta l4proto . th dport vmap @service-ips",
                                  "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                                  "vmap @service-nodeports"]),
        ("mark-for-masquerade", None, None, [f"meta mark set mark or {MASQ_MARK:#x}"]),
        ("masquerading", None, None, ["ip saddr . ip daddr @hairpin jump mark-for-masquerade",
                                      f"meta mark & {MASQ_MARK:#x} == 0 return",
                                      f"meta mark set mark xor {MASQ_MARK:#x}", "masquerade fully-random"]),
        ("reject-chain", None, "a service without endpoints", ["meta l4proto tcp reject with tcp reset", "reject"]),
    ]


def _chain_lines(name, base, comment, rules):
    out = [f"\tchain {name} {{"]
    if comment:
        out.append(f'\t\tcomment "{_comment(comment)}"')
    if base:
        out.append(f"\t\ttype {base[0]} hook {base[1]} priority {base[2]}; policy accept;")
    out.extend(f"\t\t{r}" for r in rules)
    out.append("\t}")
    return out


def _set_decl(name, with_elements=None):
    kind, typ, flags = SETS[name]
    out = [f"\t{kind} {name} {{", f"\t\ttype {typ}" + (" : verdict" if kind == "map" else "")]
    if flags:
        out.append(f"\t\tflags {flags}")
    if with_elements:
        out.append("\t\telements = { " + ", ".join(with_elements) + " }")
    out.append("\t}")
    return out


def _aff_decl(name, timeout):
    return [f"\tset {name} {{", "\t\ttype ipv4_addr", "\t\tflags dynamic,timeout", f"\t\ttimeout {int(timeout)}s", "\t}"]


def static_definition():
    """The table without any per-service part (what a delta never changes)."""
    out = [f"table {FAMILY} {TABLE} {{", f'\tcomment "{COMMENT}"']
    for name in SETS:
        out.extend(_set_decl(name))
    for chain in _static_chains():
        out.extend(_chain_lines(*chain))
    out.append("}")
    return "\n".join(out) + "\n"


def definition(parts):
    """The full definition of ``table ip flatnet-svc`` from ``plan()`` (ends with a newline)."""
    out = [f"table {FAMILY} {TABLE} {{", f'\tcomment "{COMMENT}"']
    for name in SETS:
        out.extend(_set_decl(name, parts["elements"][name]))
    for name in sorted(parts["sets"]):
        out.extend(_aff_decl(name, parts["sets"][name]))
    for chain in _static_chains():
        out.extend(_chain_lines(*chain))
    for name in sorted(parts["chains"]):
        comment, rules = parts["chains"][name]
        out.extend(_chain_lines(name, None, comment, rules))
    out.append("}")
    return "\n".join(out) + "\n"


def render(services, service_cidrs, cluster_cidrs, node=None):
    """The full definition of ``table ip flatnet-svc`` (ends with a newline)."""
    return definition(plan(services, service_cidrs, cluster_cidrs, node))


def chain_digest(comment, rules):
    return hashlib.sha256("\n".join([comment or ""] + list(rules)).encode("utf-8")).hexdigest()[:16]


def summary(parts):
    """What the record keeps of a written table, for the next ``delta()``."""
    return {"chains": {name: chain_digest(*body) for name, body in parts["chains"].items()},
            "sets": dict(parts["sets"]), "elements": parts["elements"]}


def _key(element):
    return element.split(" : ", 1)[0]


def delta(old, parts, stale):
    """The ``nft -f`` script taking the table from ``old`` (a ``summary()``) to ``parts``.

    Changed chains are flushed and refilled; chains and affinity sets no longer wanted are
    flushed now and deleted by the next write (``stale``: {"chains": [...], "sets": [...]}, from
    the record), because kernels before 6.2 refuse to delete a chain in the transaction that
    removes the last map element pointing at it. Returns (script, new stale, counts).
    """
    t = f"{FAMILY} {TABLE}"
    lines, counts = [], {"chains": 0, "elements": 0}
    want_chains, want_sets = parts["chains"], parts["sets"]
    for name in sorted(stale.get("chains") or []):
        if name not in want_chains:
            lines.append(f"delete chain {t} {name}")
    for name in sorted(stale.get("sets") or []):
        if name not in want_sets:
            lines.append(f"delete set {t} {name}")
    for name in sorted(set(want_sets) - set(old["sets"])):
        if name not in (stale.get("sets") or []):
            lines.append(f"add set {t} {name} {{ type ipv4_addr; flags dynamic,timeout; timeout {int(want_sets[name])}s; }}")
    # Elements: deletions first (a key whose verdict changed is deleted, then added again).
    adds = {}
    for name in SETS:
        have, want = set(old["elements"].get(name) or []), set(parts["elements"][name])
        gone, new = sorted(have - want), sorted(want - have)
        if gone:
            lines.append(f"delete element {t} {name} {{ " + ", ".join(_key(e) for e in gone) + " }")
        if new:
            adds[name] = new
        counts["elements"] += len(gone) + len(new)
    old_chains = old["chains"]
    new_stale = {"chains": [], "sets": []}
    # New chains first (map elements and other chains point at them), then the rules.
    for name in sorted(want_chains):
        comment, rules = want_chains[name]
        if old_chains.get(name) == chain_digest(comment, rules):
            continue
        counts["chains"] += 1
        if name not in old_chains and name not in (stale.get("chains") or []):
            body = f' comment "{_comment(comment)}";' if comment else ""
            lines.append(f"add chain {t} {name} {{{body} }}")
        else:
            lines.append(f"flush chain {t} {name}")
    for name in sorted(want_chains):
        comment, rules = want_chains[name]
        if old_chains.get(name) == chain_digest(comment, rules):
            continue
        lines.extend(f"add rule {t} {name} {rule}" for rule in rules)
    for name in SETS:
        if name in adds:
            lines.append(f"add element {t} {name} {{ " + ", ".join(adds[name]) + " }")
    for name in sorted(set(old_chains) - set(want_chains)):
        lines.append(f"flush chain {t} {name}")
        new_stale["chains"].append(name)
        counts["chains"] += 1
    new_stale["sets"] = sorted(set(old["sets"]) - set(want_sets))
    return "\n".join(lines) + "\n" if lines else "", new_stale, counts


def transaction(definition_text=""):
    """The table's atomic ``nft -f -`` script (``nft_table.transaction``); empty: delete it."""
    return nft_table.transaction(FAMILY, TABLE, definition_text)
