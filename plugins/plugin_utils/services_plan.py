# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Services for flatnet.cluster (controller side, pure functions): validation of
``flatnet_services`` and pod ``labels``, stable ClusterIP and NodePort allocation, endpoints.

Stability sources, highest first, as for pod addresses: pins, what the nodes recorded
(``services.json``, read back by node_facts), the cached plan, then fresh allocation (lowest
free address / port, services in sorted ``namespace/name`` order). A service that goes away
frees its address; no other service is ever renumbered. Every problem raises ``PlanError``
with one message naming the ``flatnet_*`` variable and the value.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from ansible_collections.flatnet.cluster.plugins.module_utils.names import is_pod_name
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import (
    PlanError,
    _integer,
    parse_address,
    parse_network,
    require_netaddr,
)

try:
    from netaddr import IPAddress
except ImportError:  # reported by require_netaddr()
    IPAddress = None

VAR = "flatnet_services"
RANGE_VAR = "flatnet_service_node_port_range"
LABELS_VAR = "flatnet_pods"
DEFAULT_NODE_PORT_RANGE = "30000-32767"
DEFAULT_AFFINITY_TIMEOUT = 10800  # kube's default for sessionAffinityConfig.clientIP.timeoutSeconds
MAX_AFFINITY_TIMEOUT = 86400
# kube-dns's address: the 10th of the service range (10.96.0.10 in 10.96.0.0/12).
DNS_OFFSET = 10
SERVICE_KEYS = ("name", "namespace", "selector", "ports", "type", "cluster_ip", "session_affinity",
                "session_affinity_timeout", "external_traffic_policy")
PORT_KEYS = ("name", "port", "target_port", "protocol", "node_port")
TYPES = ("ClusterIP", "NodePort")
AFFINITIES = ("None", "ClientIP")
POLICIES = ("Cluster", "Local")
PROTOCOLS = ("tcp", "udp")
# Kubernetes label rules, simplified to what can be checked without surprises: an optional
# DNS-subdomain prefix and a name of up to 63 characters; values up to 63 characters.
LABEL_NAME_RE = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?\Z")
LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
# IANA service names (what a named port becomes in SRV records): at most 15 characters.
PORT_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?\Z")


def _unknown_keys(entry: Mapping, allowed, what: str) -> None:
    for key in entry:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PlanError(f"{what} has an unknown key {key!r}{hint}; it takes only {', '.join(allowed)}")


def _is_list(value) -> bool:
    return isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))


def check_labels(labels, what: str) -> dict:
    """A label mapping (``None`` is no labels); keys and values as Kubernetes writes them."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise PlanError(f"{what} {labels!r} is not a mapping of label names to values; write e.g. {{app: web}}")
    out = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_NAME_RE.match(key):
            raise PlanError(
                f"{what}: label name {key!r} is not valid; use letters, digits, '-', '_', '.' (at most 63, "
                "starting and ending with a letter or digit), optionally behind a DNS prefix and '/'"
            )
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not LABEL_VALUE_RE.match(str(value)):
            raise PlanError(
                f"{what}: label {key} has the value {value!r}, which is not a label value; use a string of at "
                "most 63 letters, digits, '-', '_', '.' (quote numbers and booleans)"
            )
        out[key] = str(value)
    return out


def check_pod_labels(nodes: Mapping) -> None:
    """Check the ``labels`` of every pod entry of every node request (before planning)."""
    for node, request in (nodes or {}).items():
        pods = (request or {}).get("pods") if isinstance(request, Mapping) else None
        if not _is_list(pods):
            continue  # the planner names a bad pod list itself
        for entry in pods:
            if isinstance(entry, Mapping) and "labels" in entry:
                check_labels(entry["labels"], f"labels of pod {entry.get('name')!r} on {node} ({LABELS_VAR})")


def parse_node_port_range(value) -> tuple[int, int]:
    """``"30000-32767"`` (or a two-item list) as (low, high)."""
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*-\s*[0-9]+\s*", value):
        low, high = (int(x) for x in value.split("-"))
    elif _is_list(value) and len(list(value)) == 2:
        low, high = (_integer(x, RANGE_VAR, 1, 65535, "a port") for x in value)
    else:
        raise PlanError(f"{RANGE_VAR} {value!r} is not a port range; write e.g. {DEFAULT_NODE_PORT_RANGE}")
    if not 1 <= low <= high <= 65535:
        raise PlanError(f"{RANGE_VAR} {value!r} is not a range of ports from 1 to 65535 with low <= high; "
                        f"write e.g. {DEFAULT_NODE_PORT_RANGE}")
    return low, high


def service_network(service_cidr):
    """The IPv4 service range (ClusterIPs are IPv4; an IPv6-only service CIDR has none)."""
    require_netaddr()
    if isinstance(service_cidr, Mapping):
        raise PlanError(f"flatnet_service_cidr {service_cidr!r} is not a CIDR; write e.g. 10.96.0.0/12")
    nets = [parse_network(s, "flatnet_service_cidr")
            for s in ([service_cidr] if isinstance(service_cidr, str) else list(service_cidr or []))]
    v4 = [n for n in nets if n.version == 4]
    return v4[0] if v4 else None


def dns_ip(service_cidr) -> str | None:
    net = service_network(service_cidr)
    if net is None or net.size <= DNS_OFFSET + 1:
        return None
    return str(IPAddress(net.first + DNS_OFFSET, 4))


def _check_port(svc: str, index: int, entry, service_type: str, many: bool) -> dict:
    what = f"port {index + 1} of service {svc} ({VAR})"
    if not isinstance(entry, Mapping):
        raise PlanError(f"{what} {entry!r} is not a mapping; write e.g. {{name: http, port: 80, protocol: tcp}}")
    _unknown_keys(entry, PORT_KEYS, what)
    if "port" not in entry:
        raise PlanError(f"{what} has no port; add port: <1-65535>")
    port = _integer(entry["port"], f"{what}: port", 1, 65535, "a port")
    target = _integer(entry.get("target_port", port) if entry.get("target_port") is not None else port,
                      f"{what}: target_port", 1, 65535, "a port")
    protocol = entry.get("protocol", "tcp")
    if not isinstance(protocol, str) or protocol.lower() not in PROTOCOLS:
        raise PlanError(f"{what}: protocol {protocol!r} is not supported; use tcp or udp")
    name = entry.get("name")
    if name is None and many:
        raise PlanError(f"{what} has no name; a service with several ports names each one (e.g. name: http)")
    if name is not None and (not isinstance(name, str) or not PORT_NAME_RE.match(name)):
        raise PlanError(f"{what}: name {name!r} is not a port name; use at most 15 lowercase letters, digits "
                        "and '-', starting and ending with a letter or digit (it becomes an SRV record)")
    node_port = entry.get("node_port")
    if node_port is not None:
        if service_type != "NodePort":
            raise PlanError(f"{what}: node_port {node_port!r} is set but the service type is {service_type}; "
                            "set type: NodePort or drop node_port")
        node_port = _integer(node_port, f"{what}: node_port", 1, 65535, "a port")
    return {"name": name, "port": port, "target_port": target, "protocol": protocol.lower(),
            "node_port": node_port}


def check_services(services, service_cidr, node_port_range=DEFAULT_NODE_PORT_RANGE, dns=None) -> list[dict]:
    """Validate ``flatnet_services``; return normalised entries sorted by namespace/name.

    ``dns``: an extra, collection-made service (the cluster DNS), checked like the rest.
    """
    low, high = parse_node_port_range(node_port_range)
    if services is None:
        services = []
    if not _is_list(services):
        raise PlanError(f"{VAR} {services!r} is not a list; write a list of {{name, selector, ports}} entries")
    net = service_network(service_cidr)
    reserved_dns = dns_ip(service_cidr)
    entries = list(services) + ([dns] if dns else [])
    out, seen, pins, node_pins = [], {}, {}, {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise PlanError(f"{VAR} entry {index + 1} {entry!r} is not a mapping; write {{name, selector, ports}}")
        name = entry.get("name")
        if name is None:
            raise PlanError(f"{VAR} entry {index + 1} {dict(entry)!r} has no name; add name: <service name>")
        if not is_pod_name(name):
            raise PlanError(f"service name {name!r} ({VAR}) is not a DNS label; use lowercase letters, digits "
                            "and '-', at most 63, starting and ending with a letter or digit")
        namespace = entry.get("namespace", "default")
        if namespace is None:
            namespace = "default"
        if not is_pod_name(namespace):
            raise PlanError(f"namespace {namespace!r} of service {name} ({VAR}) is not a DNS label")
        svc = f"{namespace}/{name}"
        _unknown_keys(entry, SERVICE_KEYS, f"service {svc} ({VAR})")
        if svc in seen:
            raise PlanError(f"service {svc} is declared twice in {VAR}; names are unique per namespace: "
                            "rename or merge one")
        seen[svc] = True
        service_type = entry.get("type") or "ClusterIP"
        if service_type not in TYPES:
            raise PlanError(f"type {service_type!r} of service {svc} ({VAR}) is not supported; use ClusterIP or NodePort")
        selector = check_labels(entry.get("selector"), f"selector of service {svc} ({VAR})")
        ports = entry.get("ports")
        if not _is_list(ports) or not list(ports):
            raise PlanError(f"ports of service {svc} ({VAR}) {ports!r} is not a non-empty list; write e.g. "
                            "[{name: http, port: 80, target_port: 8080, protocol: tcp}]")
        ports = list(ports)
        checked = [_check_port(svc, i, p, service_type, len(ports) > 1) for i, p in enumerate(ports)]
        names, keys = set(), set()
        for port in checked:
            if port["name"] is not None:
                if port["name"] in names:
                    raise PlanError(f"service {svc} ({VAR}) names two ports {port['name']!r}; port names are unique")
                names.add(port["name"])
            key = (port["port"], port["protocol"])
            if key in keys:
                raise PlanError(f"service {svc} ({VAR}) has port {port['port']}/{port['protocol']} twice")
            keys.add(key)
            if port["node_port"] is not None:
                np_key = (port["node_port"], port["protocol"])
                if not low <= port["node_port"] <= high:
                    raise PlanError(f"node_port {port['node_port']} of service {svc} ({VAR}) is outside "
                                    f"{RANGE_VAR} {low}-{high}; pick one inside it or widen the range")
                if np_key in node_pins:
                    raise PlanError(f"node_port {port['node_port']}/{port['protocol']} is pinned by both "
                                    f"{node_pins[np_key]} and {svc} ({VAR}); a node port serves one service")
                node_pins[np_key] = svc
        affinity = entry.get("session_affinity") or "None"
        if affinity not in AFFINITIES:
            raise PlanError(f"session_affinity {affinity!r} of service {svc} ({VAR}) is not supported; "
                            "use None or ClientIP")
        timeout = _integer(entry.get("session_affinity_timeout", DEFAULT_AFFINITY_TIMEOUT)
                           if entry.get("session_affinity_timeout") is not None else DEFAULT_AFFINITY_TIMEOUT,
                           f"session_affinity_timeout of service {svc} ({VAR})", 1, MAX_AFFINITY_TIMEOUT, "seconds")
        policy = entry.get("external_traffic_policy") or "Cluster"
        if policy not in POLICIES:
            raise PlanError(f"external_traffic_policy {policy!r} of service {svc} ({VAR}) is not supported; "
                            "use Cluster or Local")
        pin = entry.get("cluster_ip")
        if pin is not None:
            if net is None:
                raise PlanError(f"cluster_ip {pin!r} of service {svc} ({VAR}) is pinned but flatnet_service_cidr "
                                "has no IPv4 range")
            address = parse_address(pin, f"cluster_ip of service {svc} ({VAR})")
            if address.version != 4 or address not in net:
                raise PlanError(f"cluster_ip {pin} of service {svc} ({VAR}) is outside flatnet_service_cidr {net}; "
                                "pin an address inside it or drop the pin")
            if int(address) in (net.first, net.last):
                raise PlanError(f"cluster_ip {pin} of service {svc} ({VAR}) is the network or broadcast "
                                f"address of {net}; pin another one")
            if str(address) == reserved_dns and entry is not dns:
                raise PlanError(f"cluster_ip {pin} of service {svc} ({VAR}) is the cluster DNS address (the "
                                f"{DNS_OFFSET}th of flatnet_service_cidr); pin another one")
            if str(address) in pins:
                raise PlanError(f"cluster_ip {address} is pinned by both {pins[str(address)]} and {svc} ({VAR}); "
                                "each service needs its own address")
            pins[str(address)] = svc
            pin = str(address)
        out.append({
            "name": name, "namespace": namespace, "type": service_type, "selector": selector,
            "ports": checked, "cluster_ip": pin, "session_affinity": affinity,
            "session_affinity_timeout": timeout, "external_traffic_policy": policy,
        })
    return sorted(out, key=lambda s: (s["namespace"], s["name"]))


def _key(svc: Mapping) -> str:
    return f"{svc['namespace']}/{svc['name']}"


def _port_key(port: Mapping) -> str:
    return f"{port['port']}/{port['protocol']}"


def _allocation_sources(recorded: Mapping, cached) -> list[tuple[str, Mapping]]:
    """(source label, {ns/name: {cluster_ip, node_ports: {port/proto: n}}}) in priority order."""
    sources = []
    for node in sorted(recorded or {}):
        data = recorded[node]
        if isinstance(data, Mapping):
            sources.append((f"recorded on {node}", data))
    if isinstance(cached, Mapping) and isinstance(cached.get("services"), list):
        alloc = {}
        for svc in cached["services"]:
            if isinstance(svc, Mapping) and "name" in svc and "namespace" in svc:
                alloc[_key(svc)] = {
                    "cluster_ip": svc.get("cluster_ip"),
                    "node_ports": {_port_key(p): p.get("node_port") for p in svc.get("ports") or []
                                   if isinstance(p, Mapping) and "port" in p and "protocol" in p},
                }
        sources.append(("cached plan", alloc))
    return sources


def allocate(services: list[dict], service_cidr, node_port_range=DEFAULT_NODE_PORT_RANGE,
             recorded=None, cached=None) -> list[dict]:
    """Give every checked service a ClusterIP and every NodePort port a node port, stably.

    ``recorded``: {node: {ns/name: {cluster_ip, node_ports}}}; earlier sources that no longer
    fit (outside the range, taken by a pin) are skipped, never fatal: they only keep numbers stable.
    """
    require_netaddr()
    net = service_network(service_cidr)
    low, high = parse_node_port_range(node_port_range)
    reserved_dns = dns_ip(service_cidr)
    ips_taken = {s["cluster_ip"]: _key(s) for s in services if s["cluster_ip"]}
    if reserved_dns:
        ips_taken.setdefault(reserved_dns, "the cluster DNS")
    ports_taken = {(p["node_port"], p["protocol"]): _key(s) for s in services for p in s["ports"]
                   if p["node_port"] is not None}
    out = [dict(s, ports=[dict(p) for p in s["ports"]]) for s in services]
    sources = _allocation_sources(recorded or {}, cached)
    if net is None:
        raise PlanError("flatnet_service_cidr has no IPv4 range; services need one for their ClusterIPs")

    for svc in out:
        key = _key(svc)
        if svc["cluster_ip"] is None:
            for _label, alloc in sources:
                ip = (alloc.get(key) or {}).get("cluster_ip") if isinstance(alloc.get(key), Mapping) else None
                try:
                    address = IPAddress(str(ip)) if ip else None
                except (ValueError, TypeError, Exception):  # pylint: disable=broad-except
                    address = None
                if (address is None or address.version != 4 or address not in net
                        or int(address) in (net.first, net.last) or str(address) in ips_taken):
                    continue
                svc["cluster_ip"] = str(address)
                ips_taken[str(address)] = key
                break
        for port in svc["ports"]:
            if svc["type"] != "NodePort" or port["node_port"] is not None:
                continue
            for _label, alloc in sources:
                entry = alloc.get(key) if isinstance(alloc.get(key), Mapping) else {}
                number = (entry.get("node_ports") or {}).get(_port_key(port))
                if (isinstance(number, int) and not isinstance(number, bool) and low <= number <= high
                        and (number, port["protocol"]) not in ports_taken):
                    port["node_port"] = number
                    ports_taken[(number, port["protocol"])] = key
                    break

    # Fresh allocation: lowest free, services in sorted order (deterministic).
    next_ip = net.first + 1
    for svc in out:
        if svc["cluster_ip"] is None:
            while next_ip < net.last and str(IPAddress(next_ip, 4)) in ips_taken:
                next_ip += 1
            if next_ip >= net.last:
                raise PlanError(f"flatnet_service_cidr {net} has no free address left for service {_key(svc)}; "
                                "use a larger range or fewer services")
            svc["cluster_ip"] = str(IPAddress(next_ip, 4))
            ips_taken[svc["cluster_ip"]] = _key(svc)
        for port in svc["ports"]:
            if svc["type"] == "NodePort" and port["node_port"] is None:
                number = low
                while number <= high and (number, port["protocol"]) in ports_taken:
                    number += 1
                if number > high:
                    raise PlanError(f"{RANGE_VAR} {low}-{high} has no free port left for service {_key(svc)}; "
                                    "widen the range")
                port["node_port"] = number
                ports_taken[(number, port["protocol"])] = _key(svc)
    return out


def endpoints(services: list[dict], plan_nodes: Mapping) -> list[dict]:
    """Add ``endpoints`` ([{pod, node, ip}] sorted by address) from the pods' labels on every node."""
    pods = []
    for node in sorted(plan_nodes or {}):
        for pod in plan_nodes[node].get("pods") or []:
            if not isinstance(pod, Mapping):
                continue
            v4 = [str(ip).split("/", maxsplit=1)[0] for ip in pod.get("ips") or [] if ":" not in str(ip)]
            if v4:
                pods.append((pod.get("labels") or {}, {"pod": pod.get("name"), "node": node, "ip": v4[0]}))
    out = []
    for svc in services:
        selector = svc.get("selector") or {}
        found = []
        if selector:
            found = [dict(ep) for labels, ep in pods
                     if all(labels.get(k) == val for k, val in selector.items())]
        found.sort(key=lambda ep: tuple(int(x) for x in ep["ip"].split(".")))
        out.append(dict(svc, endpoints=found))
    return out


def allocations(services: list[dict]) -> dict:
    """What a node records (and node_facts reads back): {ns/name: {cluster_ip, node_ports}}."""
    return {
        _key(s): {"cluster_ip": s["cluster_ip"],
                  "node_ports": {_port_key(p): p["node_port"] for p in s["ports"] if p.get("node_port")}}
        for s in services
    }


def build_services(services, service_cidr, plan_nodes, node_port_range=DEFAULT_NODE_PORT_RANGE,
                   recorded=None, cached=None, dns=None) -> list[dict]:
    """Check, allocate and resolve endpoints: the plan's ``services`` list."""
    checked = check_services(services, service_cidr, node_port_range, dns=dns)
    return endpoints(allocate(checked, service_cidr, node_port_range, recorded, cached), plan_nodes)


DNS_NAME = "kube-dns"
DNS_NAMESPACE = "kube-system"
DNS_LABELS = {"k8s-app": "kube-dns"}
DNS_POD_PREFIX = "flatnet-dns-"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# Where the DNS pods' dnsmasq reads the A/AAAA records, rereading changed files by itself
# (inotify); the dns module writes them on every node.
DNS_HOSTS_DIR = "/var/lib/flatnet/dns/hosts"
DOMAIN_RE = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\Z")


def check_domain(value) -> str:
    if not isinstance(value, str) or not DOMAIN_RE.match(value):
        raise PlanError(f"flatnet_cluster_domain {value!r} is not a DNS domain; write e.g. {DEFAULT_CLUSTER_DOMAIN}")
    return value


def dns_service() -> dict:
    """The cluster DNS service, made by the collection (kube-dns's name and ports)."""
    return {"name": DNS_NAME, "namespace": DNS_NAMESPACE, "selector": dict(DNS_LABELS),
            "ports": [{"name": "dns", "port": 53, "protocol": "udp"},
                      {"name": "dns-tcp", "port": 53, "protocol": "tcp"}]}


def dns_command(checked: list[dict], domain: str, hosts_dir: str = DNS_HOSTS_DIR) -> list[str]:
    """dnsmasq in the foreground, answering for ``domain`` from ``hosts_dir`` (reread on change)
    and forwarding other names to the node's resolvers (/etc/resolv.conf). SRV records are
    options, which dnsmasq reads only at start: a change to named ports restarts the DNS pods
    (the pods module replaces a workload whose command changed)."""
    cmd = ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file=", "--user=nobody",
           "--group=nogroup", "--no-hosts", f"--hostsdir={hosts_dir}", f"--local=/{domain}/",
           "--domain-needed", "--local-ttl=5"]
    for svc in checked:
        fqdn = f"{svc['name']}.{svc['namespace']}.svc.{domain}"
        for port in svc["ports"]:
            if port.get("name"):
                cmd.append(f"--srv-host=_{port['name']}._{port['protocol']}.{fqdn},{fqdn},{port['port']}")
    return cmd


def dns_pods(requests: dict, replicas, candidates: list[str], command: list[str]) -> list[str]:
    """Add the DNS pods (``flatnet-dns-<i>``) to the requests of the nodes in the play, spread over
    ``candidates`` (sorted node names) in turn; return their names."""
    count = _integer(replicas, "flatnet_dns_replicas", 0, 64, "a count")
    names = []
    for index in range(count):
        name = f"{DNS_POD_PREFIX}{index + 1}"
        names.append(name)
        node = candidates[index % len(candidates)] if candidates else None
        if node in requests:
            request = requests[node] = dict(requests[node] or {})
            pods = request.get("pods")
            pods = list(pods) if _is_list(pods) else ([] if pods is None else pods)
            if isinstance(pods, list):
                pods.append({"name": name, "command": list(command), "labels": dict(DNS_LABELS)})
            request["pods"] = pods
    return names


def prepare(requests: dict, services, service_cidr, node_port_range=DEFAULT_NODE_PORT_RANGE,
            dns_replicas=0, cluster_domain=DEFAULT_CLUSTER_DOMAIN, candidates=()) -> dict:
    """Before build_plan: check pod labels and services, add the DNS pods to ``requests``."""
    check_pod_labels(requests)
    replicas = _integer(dns_replicas, "flatnet_dns_replicas", 0, 64, "a count")
    domain = check_domain(cluster_domain)
    if replicas and dns_ip(service_cidr) is None:
        raise PlanError("flatnet_dns_replicas is set but flatnet_service_cidr has no IPv4 range with a 10th "
                        "address for the cluster DNS; set flatnet_dns_replicas: 0 or give a larger range")
    dns = dict(dns_service(), cluster_ip=dns_ip(service_cidr)) if replicas else None
    checked = check_services(services, service_cidr, node_port_range, dns=dns)
    pods = dns_pods(requests, replicas, sorted(candidates), dns_command(checked, domain)) if replicas else []
    return {"checked": checked, "domain": domain, "dns_pods": pods, "replicas": replicas}


def plan_services(plan: dict, requests: Mapping, services, node_port_range, cached=None,
                  prepared: Mapping | None = None) -> dict:
    """Add ``services``, ``service_node_port_range`` and ``dns_ip`` to a built plan (in place).

    ``requests``: the planner's node requests; each node's ``recorded.services`` is what that
    node recorded (its ``services.json`` allocations, read by node_facts).
    """
    recorded = {}
    for node, request in (requests or {}).items():
        data = ((request or {}).get("recorded") or {}).get("services") if isinstance(request, Mapping) else None
        if isinstance(data, Mapping):
            recorded[str(node)] = data
    if prepared is None:
        plan["services"] = build_services(services, plan["service_cidr"], plan["nodes"], node_port_range,
                                          recorded, cached)
    else:
        plan["services"] = endpoints(allocate(prepared["checked"], plan["service_cidr"], node_port_range,
                                              recorded, cached), plan["nodes"])
    plan["service_node_port_range"] = list(parse_node_port_range(node_port_range))
    plan["dns_ip"] = dns_ip(plan["service_cidr"])
    plan["dns"] = {
        "ip": plan["dns_ip"] if prepared and prepared["replicas"] else None,
        "domain": prepared["domain"] if prepared else DEFAULT_CLUSTER_DOMAIN,
        "pods": list(prepared["dns_pods"]) if prepared else [],
    }
    return plan
