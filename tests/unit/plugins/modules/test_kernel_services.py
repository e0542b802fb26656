# SPDX-License-Identifier: GPL-3.0-or-later
"""The services module against the real kernel, in throwaway namespaces.

    p1 (10.244.0.2) ─┐
    p2 (10.244.0.3) ─┴ br0 10.244.0.1 ─ node (tables inet flatnet + ip flatnet-svc)
                                          ├ eth2 10.244.1.1 ─ p3 (10.244.1.2, "another node")
                                          └ eth0 198.51.100.1 ─ out (198.51.100.2, no route to pods)

Every pod runs the probe agent (HTTP / answers {name, client_ip}). The firewall table is
there too: its notrack of pod-to-pod traffic must leave service replies to conntrack.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest

import ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 as _iproute2
from ansible_collections.flatnet.cluster.plugins.module_utils import probe_agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(_iproute2.__file__)))))))
MODULE = "ansible_collections.flatnet.cluster.plugins.modules.services"
FIREWALL = "ansible_collections.flatnet.cluster.plugins.modules.firewall"
PODS = {"p1": ("10.244.0.2", "node"), "p2": ("10.244.0.3", "node"), "p3": ("10.244.1.2", "other")}

UDP = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.connect((sys.argv[1], 53))
start = time.monotonic()
try:
    s.send(b"x"); s.recv(100); print("answer", 0)
except Exception as exc:
    print(type(exc).__name__, time.monotonic() - start)
"""

CLIENT = r"""
import json, socket, sys, time, urllib.request
host, port, count, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
out = []
for _ in range(count):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=timeout) as r:
            out.append(json.loads(r.read()))
    except Exception as exc:
        reason = getattr(exc, "reason", exc)
        out.append({"error": type(reason).__name__, "errno": getattr(reason, "errno", None),
                    "seconds": time.monotonic() - start})
print(json.dumps(out))
"""


def sh(*argv, check=True, input=None):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input,
                          env=dict(os.environ, LC_ALL="C"), check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed: {proc.stderr}{proc.stdout}")
    return proc


def ep(pod):
    return {"pod": pod, "ip": PODS[pod][0], "node": PODS[pod][1]}


def service(name, ip, endpoints, **kw):
    svc = {"name": name, "namespace": "default", "type": "ClusterIP", "cluster_ip": ip,
           "ports": [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": None}],
           "session_affinity": "None", "session_affinity_timeout": 10800,
           "external_traffic_policy": "Cluster", "endpoints": [ep(p) for p in endpoints]}
    svc.update(kw)
    return svc


def services(web=("p1", "p2", "p3")):
    np = [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": 30080}]
    local = [{"name": "http", "port": 80, "target_port": 8080, "protocol": "tcp", "node_port": 30081}]
    return [
        service("web", "10.96.0.5", web),
        service("empty", "10.96.0.6", []),
        service("sticky", "10.96.0.7", ["p1", "p2", "p3"], session_affinity="ClientIP",
                session_affinity_timeout=60),
        service("np", "10.96.0.8", ["p2", "p3"], type="NodePort", ports=np),
        service("local", "10.96.0.9", ["p2"], type="NodePort", ports=local, external_traffic_policy="Local"),
        service("remote", "10.96.0.11", ["p3"], type="NodePort", external_traffic_policy="Local",
                ports=[dict(local[0], node_port=30082)]),
        service("udp-empty", "10.96.0.12", [],
                ports=[{"name": "dns", "port": 53, "target_port": 53, "protocol": "udp", "node_port": None}]),
    ]


class Lab:
    def __init__(self):
        self.prefix = "t" + secrets.token_hex(3)
        self.ns = {k: self.prefix + k for k in ("node", "p1", "p2", "p3", "out")}
        self.state_dir = f"/run/{self.prefix}-state"
        self.agents = []
        self.agent_file = f"/run/{self.prefix}-agent.py"

    def build(self):
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        node = self.ns["node"]
        sh("ip", "-n", node, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", node, "addr", "add", "10.244.0.1/24", "dev", "br0")
        sh("ip", "-n", node, "link", "set", "br0", "up")
        for i, pod in enumerate(("p1", "p2")):
            sh("ip", "-n", node, "link", "add", f"v{pod}", "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[pod])
            sh("ip", "-n", node, "link", "set", f"v{pod}", "master", "br0", "up")
            sh("ip", "-n", self.ns[pod], "addr", "add", f"{PODS[pod][0]}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[pod], "link", "set", "eth0", "up")
            sh("ip", "-n", self.ns[pod], "route", "add", "default", "via", "10.244.0.1")
            del i
        for peer, dev, node_ip, peer_ip in (("p3", "eth2", "10.244.1.1/24", "10.244.1.2/24"),
                                            ("out", "eth0", "198.51.100.1/24", "198.51.100.2/24")):
            sh("ip", "-n", node, "link", "add", dev, "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[peer])
            sh("ip", "-n", node, "addr", "add", node_ip, "dev", dev)
            sh("ip", "-n", node, "link", "set", dev, "up")
            sh("ip", "-n", self.ns[peer], "addr", "add", peer_ip, "dev", "eth0")
            sh("ip", "-n", self.ns[peer], "link", "set", "eth0", "up")
            if peer != "out":
                sh("ip", "-n", self.ns[peer], "route", "add", "default", "via", node_ip.split("/", 1)[0])
        sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        with open(self.agent_file, "w", encoding="utf-8") as f:
            f.write(probe_agent.agent_source() if hasattr(probe_agent, "agent_source")
                    else open(probe_agent.__file__, encoding="utf-8").read())
        for pod in PODS:
            proc = subprocess.Popen(  # pylint: disable=consider-using-with
                ["ip", "netns", "exec", self.ns[pod], sys.executable, self.agent_file, "--name", pod,
                 "--http-port", "8080", "--udp-port", "8081", "--lifetime", "300"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            self.agents.append(proc)
        for pod in PODS:
            for _try in range(50):
                if self.get(pod, PODS[pod][0], 8080, 1, 1)[0].get("name") == pod:
                    break
                time.sleep(0.1)

    def destroy(self):
        for proc in self.agents:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait()
        for ns in self.ns.values():
            sh("ip", "netns", "del", ns, check=False)
        sh("rm", "-rf", self.state_dir, self.agent_file, check=False)

    def module(self, name, args, check_mode=False, diff=False):
        args = dict(args, state_dir=self.state_dir, _ansible_check_mode=check_mode, _ansible_diff=diff)
        proc = subprocess.run(
            ["ip", "netns", "exec", self.ns["node"], sys.executable, "-m", name],
            input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), capture_output=True, text=True,
            env=dict(os.environ, PYTHONPATH=COLLECTION_ROOT, LC_ALL="C"), check=False)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"module output is not JSON: {proc.stdout}{proc.stderr}") from None

    def run(self, svcs, as_json=False, **kw):
        given = {"services_json": json.dumps(svcs)} if as_json else {"services": svcs}
        return self.module(MODULE, {**given, "service_cidrs": ["10.96.0.0/12"],
                                    "cluster_cidrs": ["10.244.0.0/16"], "node": "node", "bridge": "br0",
                                    "source": "10.244.0.1", **kw.pop("extra", {})}, **kw)

    def get(self, ns, host, port, count, timeout=2.0):
        out = sh("ip", "netns", "exec", self.ns[ns], sys.executable, "-c", CLIENT, host, port, count, timeout).stdout
        return json.loads(out)

    def tables(self):
        out = sh("ip", "netns", "exec", self.ns["node"], "nft", "list", "tables").stdout
        return sorted(line.strip() for line in out.splitlines() if line.strip())


@pytest.fixture
def lab():
    lab = Lab()
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()


def names(replies):
    return {r.get("name") for r in replies}


def test_cluster_ip_node_port_reject_affinity_and_idempotence(lab):
    fw = lab.module(FIREWALL, {"cluster_cidrs": ["10.244.0.0/16"], "bridge": "br0"})
    assert not fw.get("failed"), fw
    res = lab.run(services(), check_mode=True)
    assert res["changed"] and res["actions"][0] == "write table ip flatnet-svc (table missing)", res
    assert "table ip flatnet-svc" not in lab.tables()
    res = lab.run(services(), diff=True)
    assert res["changed"] and not res.get("failed"), res
    assert "numgen random mod 3 vmap" in res["diff"]["after"]
    assert lab.run(services())["changed"] is False

    # From a pod: every endpoint answers, each sees the client pod's own address, but for
    # hairpin (p1 reaching itself), which is masqueraded to the bridge address.
    replies = lab.get("p1", "10.96.0.5", 80, 30)
    assert names(replies) == {"p1", "p2", "p3"}, replies
    for reply in replies:
        assert reply["client_ip"] == ("10.244.0.1" if reply["name"] == "p1" else "10.244.0.2"), reply
    # From the "other node" pod and from the node's host network (output hook).
    assert names(lab.get("p3", "10.96.0.5", 80, 30)) == {"p1", "p2", "p3"}
    replies = lab.get("node", "10.96.0.5", 80, 30)
    assert names(replies) == {"p1", "p2", "p3"}
    assert {r["client_ip"] for r in replies} <= {"10.244.0.1", "10.244.1.1"}

    # No endpoints: refused at once; an unallocated ClusterIP: dropped (a timeout).
    for ns in ("p1", "node"):
        reply = lab.get(ns, "10.96.0.6", 80, 1)[0]
        assert reply.get("errno") == 111 and reply["seconds"] < 1, reply
        reply = lab.get(ns, "10.96.0.99", 80, 1, timeout=0.5)[0]
        assert "error" in reply and reply["seconds"] >= 0.4, reply

    # UDP without endpoints: ICMP port unreachable, also to a pod behind the bridge (the reject
    # happens in prerouting); the host network's own send fails at once.
    for ns, want in (("p1", "ConnectionRefusedError"), ("p3", "ConnectionRefusedError"), ("node", None)):
        kind, seconds = sh("ip", "netns", "exec", lab.ns[ns], sys.executable, "-c", UDP, "10.96.0.12").stdout.split()
        assert kind != "TimeoutError" and float(seconds) < 1 and (want is None or kind == want), (ns, kind)

    # ClientIP affinity: one endpoint for one client.
    assert len(names(lab.get("p2", "10.96.0.7", 80, 15))) == 1

    # NodePort from outside: masqueraded (Cluster policy); Local keeps the client address
    # and uses this node's endpoints only (none: dropped).
    replies = lab.get("out", "198.51.100.1", 30080, 20)
    assert names(replies) == {"p2", "p3"}, replies
    assert all(r["client_ip"] != "198.51.100.2" for r in replies)
    replies = lab.get("out", "198.51.100.1", 30081, 5)
    assert names(replies) == {"p2"} and {r["client_ip"] for r in replies} == {"198.51.100.2"}
    reply = lab.get("out", "198.51.100.1", 30082, 1, timeout=0.5)[0]
    assert "error" in reply, reply

    # An endpoint change of one service keeps an established connection to another one.
    # Half a request before the change, the rest after it: the answer needs the old NAT binding.
    code = ("import socket,sys\n"
            "s=socket.create_connection(('10.96.0.8',80),timeout=3)\n"
            "s.sendall(b'GET / HTTP/1.0\\r\\n')\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
            "s.sendall(b'\\r\\n'); data=b''\n"
            "while True:\n"
            "    chunk=s.recv(4096)\n"
            "    if not chunk: break\n"
            "    data+=chunk\n"
            "print(data.split(b'\\r\\n\\r\\n',1)[1].decode())\n")
    client = subprocess.Popen(["ip", "netns", "exec", lab.ns["p1"], sys.executable, "-c", code],  # pylint: disable=consider-using-with
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "ready"
        res = lab.run(services(web=("p2",)))
        assert res["actions"] == ["update table ip flatnet-svc (1 chains, 0 elements)"], res
        assert names(lab.get("p1", "10.96.0.5", 80, 10)) == {"p2"}
        out, _err = client.communicate("go\n", timeout=10)
        assert json.loads(out)["name"] in ("p2", "p3"), out
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert lab.run(services(web=("p2",)))["changed"] is False

    # Drift: the table deleted by hand is written again.
    sh("ip", "netns", "exec", lab.ns["node"], "nft", "delete", "table", "ip", "flatnet-svc")
    assert lab.run(services())["actions"] == ["write table ip flatnet-svc (table missing)"]

    # Absent: table, route and record go; the firewall table stays.
    res = lab.run([], extra={"state": "absent"})
    assert res["changed"] and "delete table ip flatnet-svc" in res["actions"], res
    assert lab.run([], extra={"state": "absent"})["changed"] is False
    assert lab.tables() == ["table inet flatnet"]
    routes = sh("ip", "-n", lab.ns["node"], "route", "show", "proto", "158").stdout
    assert routes.strip() == ""
    assert not os.path.exists(os.path.join(lab.state_dir, "services.json"))


def nft(lab, *argv, check=True):
    return sh("ip", "netns", "exec", lab.ns["node"], "nft", *argv, check=check)


def affinity_elements(lab):
    out = nft(lab, "list", "table", "ip", "flatnet-svc").stdout
    return sorted(line.strip() for line in out.splitlines() if "expires" in line)


def np_chains(lab):
    """Names of the chains whose comment names the service np."""
    out, names_, current = nft(lab, "list", "chains", "ip").stdout, [], None
    for line in out.splitlines():
        if line.strip().startswith("chain "):
            current = line.split()[1]
        elif "default/np:" in line and current:
            names_.append(current)
    return sorted(names_)


def test_partial_write_keeps_affinity_and_drift_is_repaired(lab):
    assert not lab.module(FIREWALL, {"cluster_cidrs": ["10.244.0.0/16"], "bridge": "br0"}).get("failed")
    res = lab.run(services(), as_json=True)
    assert res["changed"] and not res.get("failed"), res
    assert lab.run(services(), as_json=True)["changed"] is False
    # Fill the sticky service's affinity set, then change another service (web): the write is
    # partial and the affinity entry (and so the chosen endpoint) survives.
    first = names(lab.get("p2", "10.96.0.7", 80, 5))
    assert len(first) == 1
    before = affinity_elements(lab)
    assert before, "no affinity element after requests to the sticky service"
    res = lab.run(services(web=("p3",)), as_json=True)
    assert res["actions"][0].startswith("update table ip flatnet-svc (1 chains,"), res
    assert affinity_elements(lab), "the affinity set was emptied by a change to another service"
    assert names(lab.get("p2", "10.96.0.7", 80, 5)) == first
    assert names(lab.get("p1", "10.96.0.5", 80, 10)) == {"p3"}
    # Check mode and diff of a partial change.
    res = lab.run(services(), as_json=True, check_mode=True, diff=True)
    assert res["changed"] and res["actions"][0].startswith("update table"), res
    assert "numgen random mod 3 map" in res["diff"]["after"]
    assert names(lab.get("p1", "10.96.0.5", 80, 10)) == {"p3"}

    # Removing a service: its chain is flushed now and deleted by the next write.
    svcs = [s for s in services(web=("p3",)) if s["name"] != "np"]
    res = lab.run(svcs, as_json=True)
    assert res["actions"][0].startswith("update table"), res
    stale = np_chains(lab)
    assert len(stale) == 2, stale  # np's service and node port chains, empty, kept until the next write
    assert lab.run(svcs, as_json=True)["changed"] is False
    reply = lab.get("out", "198.51.100.1", 30080, 1, timeout=0.5)[0]
    assert "error" in reply, reply  # no longer served
    res = lab.run(svcs + [service("extra", "10.96.0.13", ["p2"])], as_json=True)
    assert res["actions"][0].startswith("update table"), res
    left = nft(lab, "list", "chains", "ip").stdout
    assert not [name for name in stale if f"chain {name} " in left], left
    assert names(lab.get("p1", "10.96.0.13", 80, 3)) == {"p2"}
    res = lab.run(services(web=("p3",)), as_json=True)
    assert res["actions"][0].startswith("update table"), res
    assert names(lab.get("out", "198.51.100.1", 30080, 10)) == {"p2", "p3"}
    assert lab.run(services(web=("p3",)), as_json=True)["changed"] is False

    # Drift: a hand-added rule, a deleted map element, a deleted chain are each written again.
    svcs = services(web=("p3",))
    for damage in (["add", "rule", "ip", "flatnet-svc", "services", "counter"],
                   ["delete", "element", "ip", "flatnet-svc", "service-ips", "{ 10.96.0.5 . tcp . 80 }"],
                   ["add", "element", "ip", "flatnet-svc", "endpoints", "{ 10.1.1.1 . tcp . 1 }"]):
        nft(lab, *damage)
        res = lab.run(svcs, as_json=True)
        assert res["actions"] == ["write table ip flatnet-svc (live table differs from the recorded one)"], (damage, res)
        assert lab.run(svcs, as_json=True)["changed"] is False
    assert names(lab.get("p1", "10.96.0.5", 80, 10)) == {"p3"}
    nft(lab, "flush", "chain", "ip", "flatnet-svc", "services")
    assert lab.run(svcs, as_json=True)["actions"][0].startswith("write table"), "flushed chain not seen"


def test_large_table_drift_check(lab):
    """Above FULL_CHECK_MAX_CHAINS service chains the check lists chains and verdict maps only."""
    many = [service(f"s{i}", f"10.96.{1 + i // 250}.{1 + i % 250}", ["p3"]) for i in range(210)]
    res = lab.run(many, as_json=True)
    assert res["changed"] and not res.get("failed"), res
    assert lab.run(many, as_json=True)["changed"] is False
    nft(lab, "delete", "element", "ip", "flatnet-svc", "service-ips", "{ 10.96.1.5 . tcp . 80 }")
    assert lab.run(many, as_json=True)["actions"][0].startswith("write table")
    chains = nft(lab, "list", "chains", "ip").stdout
    victim = [line.split()[1] for line in chains.splitlines() if line.strip().startswith("chain svc-")][0]
    nft(lab, "flush", "chain", "ip", "flatnet-svc", victim)  # invisible to chains + maps...
    nft(lab, "add", "chain", "ip", "flatnet-svc", "extra")   # ...but a new chain is not
    assert lab.run(many, as_json=True)["actions"][0].startswith("write table")
    assert lab.run(many, as_json=True)["changed"] is False
    assert names(lab.get("p1", "10.96.1.5", 80, 3)) == {"p3"}


SAME_PORT = r"""
import json, socket, sys
port = int(sys.argv[1])
out = []
for host, dport in ((sys.argv[2], int(sys.argv[3])), (sys.argv[4], int(sys.argv[5]))):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(3)
    s.bind(("0.0.0.0", port))
    try:
        s.connect((host, dport))
        s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        out.append(json.loads(data.split(b"\r\n\r\n", 1)[1]))
    except OSError as exc:
        out.append({"error": type(exc).__name__})
    finally:
        s.close()
print(json.dumps(out))
"""


def test_direct_connection_after_one_through_the_service_from_the_same_port(lab):
    """A pod that reached an endpoint through its ClusterIP and then reaches the endpoint's own
    IP from the same source port (the old connection still in conntrack's TIME_WAIT) gets a
    working connection: the endpoint's reply must not be matched to the old, DNATed entry and
    rewritten to come from the ClusterIP. So both directions of traffic to an endpoint's port
    are tracked, never only the reply."""
    lab.module(FIREWALL, {"cluster_cidrs": ["10.244.0.0/16"], "bridge": "br0"})
    res = lab.run([service("one", "10.96.0.13", ["p3"])])
    assert not res.get("failed"), res
    for port in (41001, 41002, 41003):
        out = json.loads(sh("ip", "netns", "exec", lab.ns["p1"], sys.executable, "-c", SAME_PORT, port,
                            "10.96.0.13", 80, PODS["p3"][0], 8080).stdout)
        assert [r.get("name") for r in out] == ["p3", "p3"], out
        assert [r.get("client_ip") for r in out] == [PODS["p1"][0]] * 2, out
