# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nftables table ``ip flatnet-svc``: Services the way kube-proxy's nftables mode does them.

Pure functions (no processes): the services module runs ``nft`` and passes the output in.
Layout (docs/services.md):

- ``service-ips`` (``daddr . l4proto . dport : verdict``) and ``service-nodeports``
  (``l4proto . dport : verdict``) send a new connection to its service chain, from the nat
  prerouting hook (pods, outside) and the nat output hook (the node's host network).
- A service chain picks an endpoint with ``numgen random mod N vmap``; with ClientIP affinity
  it first looks the client up in each endpoint's timeout set.
- An endpoint chain marks hairpin traffic for masquerade, updates its affinity set, DNATs.
- NodePort chains masquerade what comes from outside the cluster (policy Cluster) or keep the
  client IP and use only this node's endpoints (policy Local).
- Filter chains reject a service without endpoints (TCP reset / ICMP unreachable) and drop
  anything else sent into the service range; in prerouting after DNAT too, because an ICMP
  error made in the forward hook never reached a pod behind the bridge (br_netfilter).
- A raw chain (priority -310, before the firewall's notrack at raw) marks replies from
  endpoints with TRACK_MARK so that ``inet flatnet`` leaves them to conntrack, which undoes
  the DNAT.

Priorities are numbers: nft 1.0.6 refuses ``dstnat`` on the output hook.

Private module_utils of flatnet.cluster: the API may change without notice.
"""

from __future__ import annotations

import hashlib
import ipaddress

FAMILY = "ip"
TABLE = "flatnet-svc"
COMMENT = "flatnet.cluster services"
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


def _id(*parts) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:12]


def _elements(items) -> str:
    return "elements = { " + ", ".join(items) + " }"


def _port_key(svc, port):
    return (svc["namespace"], svc["name"], port["protocol"], port["port"])


def _endpoint_ips(svc):
    return [ep["ip"] for ep in svc.get("endpoints") or [] if ":" not in ep["ip"]]


def render(services, service_cidrs, cluster_cidrs, node=None):
    """The full definition of ``table ip flatnet-svc`` (ends with a newline).

    ``services``: the plan's services (``cluster_ip``, ``ports``, ``endpoints`` [{ip, node}],
    ``session_affinity``, ``session_affinity_timeout``, ``type``, ``external_traffic_policy``);
    ``node``: this node's name (for policy Local).
    """
    svc_nets = sorted({str(ipaddress.ip_network(c, strict=False)) for c in service_cidrs or []
                       if ipaddress.ip_network(c, strict=False).version == 4})
    clusters = sorted({str(ipaddress.ip_network(c, strict=False)) for c in cluster_cidrs or []
                       if ipaddress.ip_network(c, strict=False).version == 4})
    if not svc_nets:
        raise ValueError("service_cidrs has no IPv4 range")
    sets, chains = [], []
    service_ips, nodeports, no_ep_services, no_ep_nodeports = [], [], [], []
    cluster_ips, endpoints = set(), set()

    for svc in sorted(services or [], key=lambda s: (s["namespace"], s["name"])):
        cip = str(ipaddress.ip_address(svc["cluster_ip"]))
        cluster_ips.add(cip)
        eps = _endpoint_ips(svc)
        local = [ep["ip"] for ep in svc.get("endpoints") or [] if ep.get("node") == node and ":" not in ep["ip"]]
        affinity = svc.get("session_affinity") == "ClientIP"
        for port in sorted(svc["ports"], key=lambda p: (p["protocol"], p["port"])):
            proto, tport = port["protocol"], int(port["target_port"])
            if proto not in ("tcp", "udp"):
                raise ValueError(f"protocol {proto!r} of {svc['namespace']}/{svc['name']}")
            key = _port_key(svc, port)
            label = f"{svc['namespace']}/{svc['name']}:{port.get('name') or port['port']}/{proto}"
            node_port = port.get("node_port") if svc.get("type") == "NodePort" else None
            if not eps:
                no_ep_services.append(f"{cip} . {proto} . {int(port['port'])} : goto reject-chain")
                if node_port:
                    no_ep_nodeports.append(f"{proto} . {int(node_port)} : goto reject-chain")
                continue
            sid = _id(*key)
            ep_chain = {}
            for ip in eps:
                endpoints.add(f"{ip} . {proto} . {tport}")
                eid = _id(*key, ip)
                ep_chain[ip] = f"ep-{eid}"
                rules = [f'ip saddr {ip} jump mark-for-masquerade comment "hairpin"']
                if affinity:
                    sets.append(f"\tset aff-{eid} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n"
                                f"\t\ttimeout {int(svc.get('session_affinity_timeout') or 10800)}s\n\t}}")
                    rules.append(f"update @aff-{eid} {{ ip saddr }}")
                rules.append(f"meta l4proto {proto} dnat to {ip}:{tport}")
                chains.append((f"ep-{eid}", f"{label} -> {ip}:{tport}", rules))

            def balance(ips):
                if len(ips) == 1:
                    return [f"goto {ep_chain[ips[0]]}"]
                vmap = ", ".join(f"{i} : goto {ep_chain[ip]}" for i, ip in enumerate(ips))
                return [f"numgen random mod {len(ips)} vmap {{ {vmap} }}"]

            rules = []
            if affinity:
                rules += [f"ip saddr @aff-{_id(*key, ip)} goto {ep_chain[ip]}" for ip in eps]
            rules += balance(eps)
            chains.append((f"svc-{sid}", label, rules))
            service_ips.append(f"{cip} . {proto} . {int(port['port'])} : goto svc-{sid}")
            if node_port:
                ext = []
                if svc.get("external_traffic_policy") == "Local":
                    # The node itself has no "client IP" to keep; pods are routed as inside the cluster.
                    ext.append("fib saddr type local jump mark-for-masquerade")
                    if clusters:
                        ext.append(f"ip saddr {{ {', '.join(clusters)} }} goto svc-{sid}")
                    if local:
                        if affinity:
                            ext += [f"ip saddr @aff-{_id(*key, ip)} goto {ep_chain[ip]}" for ip in local]
                        ext += balance(local)
                    else:
                        ext.append("drop")
                else:
                    if clusters:
                        ext.append(f"ip saddr != {{ {', '.join(clusters)} }} jump mark-for-masquerade")
                    else:
                        ext.append("jump mark-for-masquerade")
                    ext.append(f"goto svc-{sid}")
                chains.append((f"ext-{sid}", f"{label} node port {int(node_port)}", ext))
                nodeports.append(f"{proto} . {int(node_port)} : goto ext-{sid}")

    out = [f"table {FAMILY} {TABLE} {{", f'\tcomment "{COMMENT}"']

    def add_set(name, typ, items, flags=None):
        out.append(f"\tset {name} {{")
        out.append(f"\t\ttype {typ}")
        if flags:
            out.append(f"\t\tflags {flags}")
        if items:
            out.append("\t\t" + _elements(sorted(items)))
        out.append("\t}")

    def add_map(name, typ, items):
        out.append(f"\tmap {name} {{")
        out.append(f"\t\ttype {typ} : verdict")
        if items:
            out.append("\t\t" + _elements(sorted(items)))
        out.append("\t}")

    add_set("cluster-ips", "ipv4_addr", cluster_ips)
    add_set("service-ranges", "ipv4_addr", svc_nets, flags="interval")
    add_set("endpoints", "ipv4_addr . inet_proto . inet_service", endpoints)
    add_map("service-ips", "ipv4_addr . inet_proto . inet_service", service_ips)
    add_map("service-nodeports", "inet_proto . inet_service", nodeports)
    add_map("no-endpoint-services", "ipv4_addr . inet_proto . inet_service", no_ep_services)
    add_map("no-endpoint-nodeports", "inet_proto . inet_service", no_ep_nodeports)
    out.extend(sorted(set(sets)))

    def base(name, kind, hook, prio, rules):
        out.append(f"\tchain {name} {{")
        out.append(f"\t\ttype {kind} hook {hook} priority {prio}; policy accept;")
        out.extend(f"\t\t{r}" for r in rules)
        out.append("\t}")

    base("raw-prerouting", "filter", "prerouting", PRIO_RAW,
         [f"ip saddr . meta l4proto . th sport @endpoints meta mark set mark or {TRACK_MARK:#x}"])
    base("nat-prerouting", "nat", "prerouting", PRIO_NAT_PRE, ["jump services"])
    base("nat-output", "nat", "output", PRIO_NAT_OUT, ["jump services"])
    base("nat-postrouting", "nat", "postrouting", PRIO_NAT_POST, ["jump masquerading"])
    check = ["ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
             "ip daddr @cluster-ips reject", "ip daddr @service-ranges drop"]
    base("filter-prerouting-post-dnat", "filter", "prerouting", PRIO_FILTER_POST_DNAT, check)
    base("filter-forward", "filter", "forward", PRIO_FILTER, check)
    base("filter-output-post-dnat", "filter", "output", PRIO_FILTER_POST_DNAT, check)
    base("filter-input", "filter", "input", PRIO_FILTER,
         ["ct state new fib daddr type local meta l4proto . th dport vmap @no-endpoint-nodeports"])

    def chain(name, comment, rules):
        out.append(f"\tchain {name} {{")
        if comment:
            out.append(f'\t\tcomment "{_comment(comment)}"')
        out.extend(f"\t\t{r}" for r in rules)
        out.append("\t}")

    chain("services", None, ["ip daddr . meta l4proto . th dport vmap @service-ips",
                             "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport "
                             "vmap @service-nodeports"])
    chain("mark-for-masquerade", None, [f"meta mark set mark or {MASQ_MARK:#x}"])
    chain("masquerading", None, [f"meta mark & {MASQ_MARK:#x} == 0 return",
                                 f"meta mark set mark xor {MASQ_MARK:#x}", "masquerade fully-random"])
    chain("reject-chain", "a service without endpoints", ["meta l4proto tcp reject with tcp reset", "reject"])
    for name, comment, rules in sorted(chains, key=lambda c: c[0]):
        chain(name, comment, rules)
    out.append("}")
    return "\n".join(out) + "\n"


def _comment(text) -> str:
    # Comments are names and numbers from the plan; nothing that could end the string.
    return "".join(ch for ch in str(text) if ch.isalnum() or ch in "/:._->, ")[:120]


def transaction(definition):
    """One atomic ``nft -f -`` script: create-if-missing, delete, define (all or nothing)."""
    return f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n{definition}"


def delete_transaction():
    return f"table {FAMILY} {TABLE} {{}}\ndelete table {FAMILY} {TABLE}\n"
