# SPDX-License-Identifier: GPL-3.0-or-later
"""The probe agent and the probe module code against the real kernel.

Two throwaway namespaces joined by a veth (random name prefix, random 10.x/24 and a ULA /64):
the agent runs in one, the probe code runs from the other through setns, exactly as the
module does. Skipped when not root or without netns support. Everything is removed afterwards.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils import probe_agent, probe_client, workload
from ansible_collections.flatnet.cluster.plugins.modules import probe
from ansible_collections.flatnet.cluster.plugins.modules.probe_agents import agent_argv, wait_listening

IP = shutil.which("ip") or "/usr/sbin/ip"
HTTP, UDP = 18083, 18081
MTU = 1400

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists("/proc/thread-self/ns/net") or not os.path.exists(IP),
    reason="needs root and network namespaces",
)


def ip(*args, check=True):
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tag = "t" + secrets.token_hex(3)
    a, b = f"{tag}-a", f"{tag}-b"
    octet = secrets.randbelow(200) + 20
    v4a, v4b = f"10.{octet}.7.2", f"10.{octet}.7.3"
    # Canonical form, as the agent reports it back (a group like 0f98 prints as f98).
    v6a = str(ipaddress.ip_address(f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}::2"))
    v6b = v6a[:-1] + "3"
    run_dir = tmp_path_factory.mktemp(tag)
    pid = ident = None
    argv = None
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("-n", a, "link", "add", "eth0", "mtu", str(MTU), "type", "veth", "peer", "name", "eth0",
           "netns", b)
        for ns, v4, v6 in ((a, v4a, v6a), (b, v4b, v6b)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", "eth0", "mtu", str(MTU))
            ip("-n", ns, "addr", "add", f"{v4}/24", "dev", "eth0")
            ip("-n", ns, "-6", "addr", "add", f"{v6}/64", "dev", "eth0", "nodad")
            ip("-n", ns, "link", "set", "eth0", "up")
        agent = run_dir / "agent.py"
        agent.write_text(probe_agent.agent_source())
        argv = agent_argv(sys.executable, str(agent), a, HTTP, UDP)
        ident = workload.launch(IP, a, argv, str(run_dir / "agent.log"))
        pid = ident["sid"]  # ip netns exec execs the agent: the leader is the agent
        assert wait_listening(pid, argv, a, HTTP, UDP, 10), (run_dir / "agent.log").read_text()
        yield dict(a=a, b=b, v4a=v4a, v4b=v4b, v6a=v6a, v6b=v6b, tag=tag)
    finally:
        if ident:
            workload.stop_tree(ident)
        for ns in (a, b):
            ip("netns", "del", ns, check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


def params(**extra):
    base = dict(timeout=2.0, http_port=HTTP, udp_port=UDP)
    base.update(extra)
    return base


def test_http_hostname_and_client_ip_v4(lab):
    seen, ok, reason, error = probe.probe_http(lab["b"], lab["v4a"], HTTP, 2, lab["a"], [lab["v4b"]])
    assert (ok, reason, error) == (True, "ok", None)
    assert seen == f"{lab['a']} from {lab['v4b']}"
    # agnhost-style host:port on /clientip
    raw = probe.http_get(lab["b"], lab["v4a"], HTTP, "/clientip", 2)
    assert raw.startswith(lab["v4b"] + ":") and raw.rsplit(":", 1)[1].isdigit()


def test_http_and_udp_over_ipv6(lab):
    seen, ok, _reason, _err = probe.probe_http(lab["b"], lab["v6a"], HTTP, 2, lab["a"], [lab["v6b"]])
    assert ok, seen
    raw = probe.http_get(lab["b"], lab["v6a"], HTTP, "/clientip", 2)
    assert raw.startswith(f"[{lab['v6b']}]:")
    seen, ok, _reason, _err = probe.probe_udp(lab["b"], lab["v6a"], UDP, 2, lab["a"], [lab["v6b"]])
    assert ok, seen


def test_udp_reply_names_pod_and_client(lab):
    assert probe.udp_ask(lab["b"], lab["v4a"], UDP, 2) == f"{lab['a']} {lab['v4b']}"


def test_wrong_expectations_fail(lab):
    _seen, ok, reason, _err = probe.probe_http(lab["b"], lab["v4a"], HTTP, 2, "other-pod", [lab["v4b"]])
    assert (ok, reason) == (False, "wrong-pod")
    _seen, ok, reason, _err = probe.probe_udp(lab["b"], lab["v4a"], UDP, 2, lab["a"], ["192.0.2.1"])
    assert (ok, reason) == (False, "wrong-source")


def test_refused_and_timeout_are_classified(lab):
    r = probe.run_probe(dict(check="pod-pod", proto="http", src_node="n", src=lab["b"], src_ip=lab["v4b"],
                             dst_node="n", dst=lab["a"], dst_ip=lab["v4a"]), params(http_port=HTTP + 1))
    assert (r["ok"], r["reason"]) == (False, "refused")
    # An address of the b side's subnet that nobody holds: ARP fails → no answer.
    octets = lab["v4a"].rsplit(".", 1)[0]
    r = probe.run_probe(dict(check="pod-pod", proto="udp", src_node="n", src=lab["b"], src_ip=lab["v4b"],
                             dst_node="n", dst=lab["a"], dst_ip=octets + ".250"), params(timeout=0.5))
    assert r["ok"] is False and r["reason"] in ("timeout", "unreachable")


def test_mtu_exact_passes_and_one_more_is_refused(lab):
    seen, ok, reason, error = probe.probe_mtu(lab["b"], lab["v4a"], UDP, MTU, 2, lab["a"])
    assert (ok, reason, error) == (True, "ok", None), seen
    assert "message too long" in seen
    seen, ok, reason, _err = probe.probe_mtu(lab["b"], lab["v6a"], UDP, MTU, 2, lab["a"])
    assert ok, seen


def test_mtu_larger_than_path_is_detected(lab):
    # Pretending the plan says MTU+100: the datagram of "MTU" bytes is refused locally.
    r = probe.run_probe(dict(check="mtu", proto="udp", src_node="n", src=lab["b"], src_ip=lab["v4b"],
                             dst_node="n", dst=lab["a"], dst_ip=lab["v4a"], mtu=MTU + 100), params())
    assert (r["ok"], r["reason"]) == (False, "mtu-too-small")
    assert str(MTU) in r["error"]


def test_mtu_smaller_than_interface_is_not_enforced(lab):
    r = probe.run_probe(dict(check="mtu", proto="udp", src_node="n", src=lab["b"], src_ip=lab["v4b"],
                             dst_node="n", dst=lab["a"], dst_ip=lab["v4a"], mtu=MTU - 100), params())
    assert (r["ok"], r["reason"]) == (False, "mtu-not-enforced")


def test_setns_returns_to_the_original_namespace(lab):
    before = os.stat("/proc/thread-self/ns/net").st_ino
    with probe_client.in_netns(lab["b"]):
        assert os.stat("/proc/thread-self/ns/net").st_ino != before
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_setns_through_ctypes(lab, monkeypatch):
    monkeypatch.delattr(os, "setns", raising=False)
    before = os.stat("/proc/thread-self/ns/net").st_ino
    seen, ok, _r, _e = probe.probe_http(lab["b"], lab["v4a"], HTTP, 2, lab["a"], [lab["v4b"]])
    assert ok, seen
    assert os.stat("/proc/thread-self/ns/net").st_ino == before


def test_full_run_in_parallel_threads(lab):
    p = params(node="n1", local_pods=[{"name": lab["b"], "ips": [f"{lab['v4b']}/24", f"{lab['v6b']}/64"]}],
               targets=[{"node": "n2", "pod": lab["a"], "ip": lab["v4a"]},
                        {"node": "n2", "pod": lab["a"], "ip": lab["v6a"]},
                        {"node": "n1", "pod": lab["b"], "ip": lab["v4b"]}],
               mtu=MTU, mtu_targets=[{"node": "n2", "pod": lab["a"], "ip": lab["v4a"]}],
               checks=["pod-pod", "mtu", "identity"])

    def read_addrs(pod):
        out = ip("-n", pod, "-json", "addr", "show", "dev", "eth0").stdout
        import json
        link = json.loads(out)[0]
        addrs = [f"{x['local']}/{x['prefixlen']}" for x in link["addr_info"] if x["scope"] == "global"]
        return "UP" in link["flags"], addrs, link["mtu"]

    started = time.monotonic()
    results, retry = probe.run_probes(probe.plan_probes(p), p, read_addrs, workers=8, retries=1)
    assert retry["retried"] == 0 and retry["baseline"] is not None
    assert time.monotonic() - started < 5
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad
    assert sorted((r["check"], r["proto"], r["dst_ip"]) for r in results) == sorted([
        ("pod-pod", "http", lab["v4a"]), ("pod-pod", "udp", lab["v4a"]),
        ("pod-pod", "http", lab["v6a"]), ("pod-pod", "udp", lab["v6a"]),
        ("mtu", "udp", lab["v4a"]), ("identity", "addr", None)])


def test_egress_compares_the_source_seen_outside(lab):
    # The agent in "a" stands for the outside endpoint; there is no NAT between the two namespaces.
    pr = dict(check="egress", proto="http", src_node="n", src=lab["b"], src_ip=lab["v4b"], dst_node=None,
              dst="outside", dst_ip=lab["v4a"], port=HTTP, want=[lab["v4b"]])
    r = probe.run_probe(pr, params())
    assert (r["ok"], r["seen"]) == (True, f"seen as {lab['v4b']}")
    r = probe.run_probe(dict(pr, want=["192.0.2.7"]), params())
    assert (r["ok"], r["reason"]) == (False, "wrong-source")
    assert "no masquerade" in r["error"]


def _nft(ns, text):
    subprocess.run([IP, "netns", "exec", ns, "nft", "-f", "-"], input=text, text=True, check=True,
                   capture_output=True)


@pytest.mark.skipif(not shutil.which("nft"), reason="needs nft")
def test_retry_passes_once_the_drop_rule_is_gone_and_fails_twice_when_it_stays(lab):
    """A drop rule in the target pod makes the first attempt time out; it is removed between the
    attempts: the pair passes on retry. Left in place, the pair fails twice: a failure."""
    table = f"{lab['tag']}retry"
    p = params(node="n1", timeout=0.5,
               local_pods=[{"name": lab["b"], "ips": [f"{lab['v4b']}/24"]}],
               targets=[{"node": "n2", "pod": lab["a"], "ip": lab["v4a"]}], checks=["pod-pod"])
    probes = probe.plan_probes(p)
    rules = (f"table inet {table} {{\n chain block {{\n type filter hook input priority 0;\n"
             f" ip saddr {lab['v4b']} tcp dport {HTTP} drop\n }}\n}}\n")
    removed = []

    def unblock(failed):
        removed.append([r["proto"] for r in failed])
        _nft(lab["a"], f"delete table inet {table}\n")

    _nft(lab["a"], rules)
    try:
        results, retry = probe.run_probes(probes, p, workers=4, retries=1, before_retry=unblock)
        assert removed == [["http"]]  # only the blocked pair was retried
        http = next(r for r in results if r["proto"] == "http")
        udp = next(r for r in results if r["proto"] == "udp")
        assert (http["ok"], http["retried"], http["first_reason"]) == (True, True, "timeout")
        assert (udp["ok"], udp["retried"]) == (True, False)
        assert retry["retried"] == 1 and retry["passed_on_retry"] == 1
        assert retry["timeout"] >= 0.5 and retry["baseline"] is not None

        _nft(lab["a"], rules)
        results, retry = probe.run_probes(probes, p, workers=4, retries=1)
        http = next(r for r in results if r["proto"] == "http")
        assert (http["ok"], http["retried"], http["reason"], http["first_reason"]) == (False, True, "timeout", "timeout")
        assert retry["passed_on_retry"] == 0

        results, retry = probe.run_probes(probes, p, workers=4, retries=0)
        http = next(r for r in results if r["proto"] == "http")
        assert (http["ok"], http["retried"]) == (False, False) and retry["retried"] == 0
    finally:
        _nft(lab["a"], f"add table inet {table}\ndelete table inet {table}\n")
