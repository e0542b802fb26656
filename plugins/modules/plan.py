# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# The code is the action plugin plugins/action/plan.py; this file only documents it.
from __future__ import annotations

DOCUMENTATION = r"""
module: plan
short_description: Plan pod CIDRs, pod addresses, peers and MTU of a flat pod network
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Runs on the controller only (use it with C(run_once)); nothing is executed on the managed
    hosts. It turns what every node reported (M(flatnet.cluster.node_facts)) and what was asked
    for into one plan, returned as the fact C(flatnet_plan), identical on every host of the play.
  - Each node gets one block per family of O(cluster_cidr) (sizes O(node_prefix) and
    O(node_prefix_v6)); the gateway (bridge address) is the first host address of the block,
    the VTEP address is the network address, and pods get addresses from the next one upward.
  - "Stability, highest first: pins (C(pod_cidr) and C(pods[].ip) in O(nodes)), what is
    recorded on the node, the cached plan in O(plan_file), then fresh allocation: lowest free
    block, nodes in sorted name order. Adding a node never moves another node's block or a pod's address."
  - Nodes in the cached plan that are in O(inventory_nodes) but not in the play (C(--limit))
    keep their block and underlay data, so peers keep their routes to them. Nodes that are not
    in the inventory any more are dropped and their block is freed.
  - Everything is validated before anything is planned; a problem fails the task with one
    message that names the bad value and the fix, and nothing is written. Messages name the
    role variable that feeds each option (for example C(flatnet_cluster_cidr) for O(cluster_cidr),
    C(flatnet_vxlan_port) for O(vxlan.port)), since that is what a user of the
    C(flatnet.cluster.plan) role writes.
  - "What is refused: names that are not exact (pod names are DNS labels, link names at most 15
    bytes of letters, digits, C(_), C(.), C(-), never with a trailing newline); a bridge equal to the
    VXLAN device, or either equal to a node's underlay interface; counts below 0; ports outside 1-65535,
    VNIs outside 1-16777215; booleans other than Ansible's spellings of true and false; an O(mtu) larger
    than a node's underlay MTU (less 50 or 70 bytes on nodes that tunnel); CIDRs with host bits set or
    overlapping ranges that can never carry pods (loopback, link-local, multicast, unspecified,
    240.0.0.0/4, IPv4-mapped); pinned pod addresses that are the network, gateway or broadcast address;
    pod names used twice in the cluster; unknown keys in a pod entry; a pod C(command) that is not a
    list of strings or a string that splits cleanly."
  - See the C(docs/addressing.md) page of the collection for the full rules.
options:
  nodes:
    description:
      - The nodes of this play, as a mapping of node name to its request.
      - "Each request has: C(underlay) (the C(underlay) dictionary from
        C(flatnet_node) - C(ip) is required, C(network), C(prefix), C(mtu), C(interface) are used when present);
        C(recorded) (the C(recorded) dictionary from C(flatnet_node): C(pod_cidrs) and C(pods));
        C(pod_cidr) (V(null), a CIDR, or a list of one CIDR per family: a pinned block);
        C(pods) (a list of pod names or C({name, ip, command, labels}) mappings, no other key; C(labels) is a
        mapping of label names to string values, matched by service selectors; C(ip) is V(null), an address,
        or a list of one address per family; C(command) is V(null), a non-empty list of strings, integers
        being turned into strings, or a string that splits like a shell command line, kept as it is);
        C(pods_per_node) (also make this many pods named C(<node>-pod-<i>); default O(pods_per_node));
        C(bridge) (the node's bridge name; default O(bridge)); C(prune) and C(firewall) (booleans, only checked)."
      - Pod names must be DNS labels (1 to 63 lower-case letters, digits and C(-), starting and ending with a
        letter or digit, matched exactly) because each
        becomes a network namespace name; they must be unique across the cluster, nodes outside the play included.
    type: dict
    required: true
  cluster_cidr:
    description:
      - The range pod blocks are cut from. A CIDR, or a list of one IPv4 and one IPv6 CIDR
        for dual-stack (each node then gets one block per family).
      - It must be a network address (V(10.244.0.0/16), not V(10.244.1.5/16)) and must not
        overlap O(service_cidr), any node's underlay network, or O(reserved_cidrs).
      - Changing it while nodes hold blocks is refused; tear the cluster down first.
    type: raw
    default: 10.244.0.0/16
  node_prefix:
    description: Prefix length of each node's IPv4 block; longer than the cluster prefix, at most 30.
    type: int
    default: 24
  node_prefix_v6:
    description:
      - Prefix length of each node's IPv6 block; longer than the cluster prefix but by at most 16 bits.
    type: int
    default: 64
  service_cidr:
    description: The Kubernetes service range (a CIDR, or one per family); kept out of the cluster CIDR.
    type: raw
    default: 10.96.0.0/12
  reserved_cidrs:
    description: Further ranges the cluster CIDR must not overlap (VPNs, other clusters, ...).
    type: list
    elements: str
    default: []
  backend:
    description:
      - How pod traffic reaches other nodes. V(host-gw) routes via the peer's underlay address
        and needs every pair of nodes on one underlay network; V(vxlan) tunnels everything;
        V(auto) routes directly to peers on the same underlay network and tunnels to the rest;
        V(bgp) lets BIRD exchange the routes to peers on the same underlay network (see O(bgp))
        and tunnels to the rest.
    type: str
    choices: [host-gw, vxlan, auto, bgp]
    default: host-gw
  bgp:
    description:
      - The BGP backend's settings, used (and checked) when O(backend=bgp); returned as C(bgp)
        in the plan. Messages name the role variables C(flatnet_bgp_*).
    type: dict
    default: {}
    suboptions:
      asn:
        description: The cluster's private AS number (64512-65534 or 4200000000-4294967294); iBGP.
        type: int
        default: 64512
      route_reflectors:
        description:
          - Nodes of the plan that reflect routes. Empty - a full mesh between the nodes of each
            underlay subnet. Otherwise the other nodes of a subnet peer only with the reflectors
            of their subnet; a subnet without a reflector keeps a full mesh.
        type: list
        elements: str
        default: []
      hold_time:
        description: BGP hold time in seconds (3 or more); a silent peer's routes go after it.
        type: int
        default: 9
      keepalive_time:
        description: BGP keepalive interval in seconds; at most a third of O(bgp.hold_time).
        type: int
        default: 3
  mtu:
    description:
      - Pod MTU (bridge, veths, VXLAN device). V(null) computes it - the smallest underlay MTU,
        minus 50 (IPv4 underlay) or 70 (IPv6 underlay) when any peer uses VXLAN.
      - At least 576, and at least 1280 when the cluster has an IPv6 range.
      - At most each node's underlay MTU (C(underlay.mtu) of O(nodes)), less 50 (IPv4 underlay) or 70 (IPv6)
        on a node that has a VXLAN peer.
    type: int
  vxlan:
    description: VXLAN settings, used by peers in mode C(vxlan).
    type: dict
    default: {}
    suboptions:
      vni:
        description: VXLAN network identifier, 1 to 16777215.
        type: int
        default: 1
      port:
        description: UDP destination port, 1 to 65535.
        type: int
        default: 8472
      device:
        description: Name of the VXLAN device on each node.
        type: str
        default: flatnet.1
  masquerade:
    description: Passed to the plan for the firewall; masquerade pod traffic leaving the cluster.
    type: bool
    default: true
  bridge:
    description:
      - The node bridge name, for nodes whose request has no C(bridge). A link name (at most 15 bytes
        of letters, digits, C(_), C(.), C(-)) that differs from O(vxlan.device) and from each node's
        underlay interface. Each node's bridge is returned as C(bridge) in its plan entry.
    type: str
    default: cni0
    version_added: 0.2.0
  pods_per_node:
    description:
      - Make this many pods named C(<node>-pod-<i>) (i from 1) on every node whose request has no
        C(pods_per_node), besides the pods it lists. An integer, 0 or more.
    type: int
    default: 0
    version_added: 0.2.0
  cni:
    description:
      - Split every node block between the collection's pods (bottom) and containers attached
        through CNI (the top O(cni_range) share, host-local IPAM); adds C(nodes.NODE.cni) to the plan.
      - "A node request may carry C(cni_containers) (a mapping of address to container ID, what the
        node's host-local holds for live containers); a plan that would move those addresses out of
        the CNI range (a new node block, a smaller share, CNI off) is refused."
    type: bool
    default: false
    version_added: 0.2.0
  cni_range:
    description:
      - The share of each node block for CNI containers, V(1/N) with N a power of two from 2 to
        1024 (the top 1/N, an aligned sub-block). Pinned pod addresses in it are refused; pods
        that already have addresses in it keep them and are cut out of host-local's ranges.
    type: str
    default: 1/2
    version_added: 0.2.0
  cluster_name:
    description:
      - The cluster's name, only checked here (it is part of the default O(plan_file) name); 1-63
        letters, digits, C(_), C(.), C(-), starting with a letter or digit. V(null) skips the check.
    type: str
    version_added: 0.2.0
  group:
    description:
      - The inventory group of the cluster, only checked here (the playbooks use it as a host
        pattern); a group name of letters, digits, C(_), C(.), C(-). V(null) skips the check.
    type: str
    version_added: 0.2.0
  plan_file:
    description:
      - Path on the controller of the cached plan (JSON). It is read first and written after a
        successful plan (not in check mode, and only when the plan changed). Parent directories
        are created. V(null) disables the cache.
    type: path
  as_fact:
    description:
      - V(true) sets the plan as the fact C(flatnet_plan) on every host of the play (RV(ansible_facts.flatnet_plan)).
      - V(false) returns it as RV(plan) only, to be registered and set with M(ansible.builtin.set_fact), as the
        C(flatnet.cluster.plan) role does. Ansible deep-copies every fact of a host each time it prepares a task
        for that host, so a big plan as a fact costs the controller plan size x hosts x tasks (at 100 nodes,
        over a third of its time); a variable set with M(ansible.builtin.set_fact) is not copied.
    type: bool
    default: true
    version_added: 0.2.0
  inventory_nodes:
    description:
      - Every node of the cluster, in the play or not (for example C(groups['flatnet_nodes'])).
        Cached nodes outside this list are dropped. The nodes of O(nodes) always count as in the inventory.
    type: list
    elements: str
  services:
    description:
      - "The cluster's services (C(flatnet_services)), each C({name, namespace, selector, ports, type,
        cluster_ip, session_affinity, session_affinity_timeout, external_traffic_policy}); C(ports) is a
        list of C({name, port, target_port, protocol, node_port}). See C(docs/services.md)."
      - Checked before anything is planned (duplicate names, pins outside the range or taken, ports,
        protocols, node ports, unknown keys). Each service gets a ClusterIP from the IPv4 O(service_cidr)
        (the 10th address is kept for the cluster DNS) and each port of a C(NodePort) service a node port
        from O(node_port_range); both stay stable (pins, then the nodes' records, then the cached plan).
      - Endpoints are the pods, on any node, whose C(labels) hold every label of the C(selector).
    type: list
    elements: dict
    default: []
    version_added: 0.2.0
  node_port_range:
    description: The range node ports are taken from, V(LOW-HIGH).
    type: str
    default: 30000-32767
    version_added: 0.2.0
  dns_replicas:
    description:
      - Number of cluster DNS pods (C(flatnet-dns-<i>), labels C(k8s-app=kube-dns)), spread over the nodes in
        turn, running dnsmasq behind the service C(kube-system/kube-dns) at the 10th address of O(service_cidr).
        V(0) turns the cluster DNS off.
    type: int
    default: 0
    version_added: 0.2.0
  cluster_domain:
    description: The cluster's DNS domain; services answer as C(<service>.<namespace>.svc.<cluster_domain>).
    type: str
    default: cluster.local
    version_added: 0.2.0
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
  async:
    description: Supports being used with the C(async) keyword.
    support: none
  bypass_host_loop:
    description: Forces a 'global' task that does not execute per host; use C(run_once) instead.
    support: none
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: In check mode the plan is computed but O(plan_file) is not written.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    platforms: all
    support: full
    details: Runs on the controller only.
notes:
  - The task never reports C(changed); it only computes facts (and caches them).
seealso:
  - module: flatnet.cluster.node_facts
  - plugin: flatnet.cluster.node_cidrs
    plugin_type: filter
  - plugin: flatnet.cluster.pod_ips
    plugin_type: filter
  - plugin: flatnet.cluster.vtep_mac
    plugin_type: filter
"""

EXAMPLES = r"""
- name: Plan the cluster once, from every node's facts
  flatnet.cluster.plan:
    cluster_cidr: "{{ flatnet_cluster_cidr }}"
    backend: auto
    plan_file: "{{ inventory_dir }}/.flatnet/plan.json"
    inventory_nodes: "{{ groups['flatnet_nodes'] }}"
    nodes: >-
      {{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars) | map(attribute='flatnet_request'))) }}
  run_once: true

- name: Dual-stack with a pinned block and a pinned pod address
  flatnet.cluster.plan:
    cluster_cidr: [10.244.0.0/16, "fd00:10:244::/56"]
    nodes:
      node1:
        underlay: {ip: 192.168.50.11, network: 192.168.50.0/24, mtu: 1500}
        pod_cidr: [10.244.5.0/24, "fd00:10:244:5::/64"]
        pods:
          - {name: web, ip: 10.244.5.80, command: [python3, -m, http.server, "80"]}
      node2:
        underlay: {ip: 192.168.50.12, network: 192.168.50.0/24, mtu: 1500}
  run_once: true
"""

RETURN = r"""
plan:
  description: The plan, as RV(ansible_facts.flatnet_plan) describes it.
  returned: success and O(as_fact=false)
  type: dict
  version_added: 0.2.0
ansible_facts:
  description: Facts set on every host of the play.
  returned: success and O(as_fact=true)
  type: dict
  contains:
    flatnet_plan:
      description:
        - The plan; its structure is the contract in C(docs/design.md).
        - "Keys: C(cluster_cidrs) (one per family, IPv4 first), C(service_cidr), C(backend), C(mtu),
          C(masquerade), C(vxlan) ({vni, port, device}) and C(nodes): per node C(pod_cidrs),
          C(gateways) (bridge addresses with prefix), C(gateway_ips) (the same without prefix),
          C(gateway_ipv4) (the IPv4 one, V(null) on an IPv6-only cluster),
          C(vtep_ips) (the network address of each pod CIDR), C(vtep_cidrs) (the same with the host
          prefix, /32 or /128, as the VXLAN device carries them), C(vtep_mac), C(underlay), C(bridge),
          C(pods) (sorted by name: C({name, ips, command}) and C(labels) when the pod has any);
          each node's peers are not stored but derived with the P(flatnet.cluster.peers_of#filter) filter;
          C(services) (sorted by namespace and name, each with its C(cluster_ip), C(ports) with C(node_port),
          C(endpoints) C({pod, node, ip})), C(service_node_port_range) ([low, high]), C(dns_ip) (the 10th address of the
          service range) and C(dns) (C({ip, domain, pods}); C(ip) is V(null) when the cluster DNS is off);
          with O(cni) each node has C(cni) ({network, range_cidrs, ranges, pod_addresses_in_range}), and
          C(cni) at the top is {enabled, range, network}."
      type: dict
      returned: success
      sample:
        cluster_cidrs: [10.244.0.0/16]
        service_cidr: 10.96.0.0/12
        backend: host-gw
        mtu: 1500
        masquerade: true
        vxlan: {vni: 1, port: 8472, device: flatnet.1}
        nodes:
          node1:
            pod_cidrs: [10.244.0.0/24]
            gateways: [10.244.0.1/24]
            gateway_ips: [10.244.0.1]
            gateway_ipv4: 10.244.0.1
            vtep_ips: [10.244.0.0]
            vtep_cidrs: [10.244.0.0/32]
            vtep_mac: "0e:85:ef:bc:8c:cc"
            underlay: {interface: eth0, ip: 192.168.50.11, prefix: 24, network: 192.168.50.0/24, mtu: 1500}
            bridge: cni0
            pods:
              - {name: node1-pod-1, ips: [10.244.0.2/24], command: null}
plan_file:
  description: The cached plan's path (V(null) when caching is off).
  returned: success
  type: str
  sample: /home/me/inventory/.flatnet/plan.json
plan_file_written:
  description: Whether the cached plan file was (re)written by this run.
  returned: success
  type: bool
  sample: false
"""
