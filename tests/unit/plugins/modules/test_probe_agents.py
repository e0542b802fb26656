# SPDX-License-Identifier: GPL-3.0-or-later
"""probe_agents and the verify role, executed by Ansible itself (AnsiballZ), on throwaway namespaces.

Two named namespaces joined by a veth stand for two pods; two inventory hosts with a local
connection stand for two nodes, each owning one pod. Only checks that stay inside the test
namespaces run (the host-network checks would need routes in the machine's own namespace).
Skipped when not root. Everything is removed afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

IP = shutil.which("ip") or "/usr/sbin/ip"
PLAYBOOK_BIN = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
HTTP, UDP, MTU = 18183, 18181, 1400
# The managed-host side runs on the system Python, and on 3.9 (oldest supported, setns through
# ctypes) and 3.12 (os.setns) when they are installed.
HOST_PYTHON = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable


def _python(version):
    """A real interpreter of that version (pyenv shims do not run without a selected version)."""
    for candidate in [shutil.which(f"python{version}")] + sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))):
        if not candidate:
            continue
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True,
                                 text=True, timeout=20, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


INTERPRETERS = [HOST_PYTHON] + [p for p in (_python("3.9"), _python("3.12")) if p]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(PLAYBOOK_BIN) or not os.path.exists(IP),
    reason="needs root, ip and ansible-playbook",
)


def ip(*args, check=True):
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True)


def collections_root():
    for path in sys.path:
        if os.path.isdir(os.path.join(path, "ansible_collections", "flatnet", "cluster")):
            return path
    pytest.skip("flatnet.cluster is not importable as a collection")


@pytest.fixture
def lab(tmp_path):
    tag = "t" + secrets.token_hex(3)
    a, b = f"{tag}-a", f"{tag}-b"
    octet = secrets.randbelow(200) + 20
    six = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}"
    pods = {a: [f"10.{octet}.9.2/24", f"{six}::2/64"], b: [f"10.{octet}.9.3/24", f"{six}::3/64"]}
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
        for ns, (v4, v6) in pods.items():
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", "eth0", "mtu", str(MTU))
            ip("-n", ns, "addr", "add", v4, "dev", "eth0")
            ip("-n", ns, "-6", "addr", "add", v6, "dev", "eth0", "nodad")
            ip("-n", ns, "link", "set", "eth0", "up")
        yield dict(tag=tag, a=a, b=b, pods=pods, tmp=tmp_path)
    finally:
        # The role and the tests stop the agents; this is the safety net for a failed test.
        for rec in tmp_path.glob("**/agents.json"):
            _kill_recorded(rec)
        for ns in (a, b):
            ip("netns", "del", ns, check=False)


def arp_table_fulls():
    """How often the kernel's IPv4 neighbour table (shared by all namespaces) was full so far."""
    try:
        with open("/proc/net/stat/arp_cache", encoding="ascii") as f:
            head = f.readline().split()
            col = head.index("table_fulls")
            return sum(int(line.split()[col], 16) for line in f)
    except (OSError, ValueError):
        return 0


def _kill_recorded(record):
    from ansible_collections.flatnet.cluster.plugins.module_utils import workload

    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    workload.stop_trees([entry.get("workload") for entry in data.get("agents", {}).values()])


def run_playbook(tmp, name, plays, inventory, extra=(), python=HOST_PYTHON):
    """Run plays (Python data; JSON is YAML) with ansible-playbook; return (rc, output)."""
    book = tmp / f"{name}.yml"
    book.write_text(json.dumps(plays, indent=1))
    inv = tmp / f"{name}.ini"
    inv.write_text(inventory)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_HOME=str(tmp / ".ansible"), ANSIBLE_LOCAL_TEMP=str(tmp / ".ansible" / "tmp"),
               ANSIBLE_PYTHON_INTERPRETER=python)
    proc = subprocess.run([PLAYBOOK_BIN, "-i", str(inv), str(book), *extra], env=env, capture_output=True,
                          text=True, timeout=240, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def run_tasks(tmp, name, tasks, python=HOST_PYTHON):
    """Run tasks on localhost, each registered and allowed to fail; return {task name: result}."""
    out_file = tmp / f"{name}-results.json"
    body = []
    for i, t in enumerate(tasks):
        body.append(dict(t, register=f"_r{i}", ignore_errors=True))
    mapping = "{" + ", ".join(f"{json.dumps(t['name'])}: _r{i}" for i, t in enumerate(tasks)) + "}"
    body.append({"name": "save", "ansible.builtin.copy": {
        "content": "{{ " + mapping + " | to_json }}",
        "dest": str(out_file),
    }})
    rc, text = run_playbook(tmp, name, [dict(hosts="localhost", gather_facts=False, tasks=body)],
                            "localhost ansible_connection=local\n", python=python)
    if not out_file.exists():
        raise AssertionError(f"playbook failed (rc {rc}):\n{text[-4000:]}")
    return json.loads(out_file.read_text())


@pytest.mark.parametrize("python", INTERPRETERS)
def test_probe_agents_lifecycle_through_ansiballz(lab, python):
    run_dir = str(lab["tmp"] / "probe")
    pods = [lab["a"], lab["b"]]
    ports = {"run_dir": run_dir, "http_port": HTTP, "udp_port": UDP}
    ip_a = lab["pods"][lab["a"]][0].split("/")[0]

    def task(name, module, args, **kw):
        return dict(name=name, **{f"flatnet.cluster.{module}": args}, **kw)

    tasks = [
        task("check mode start", "probe_agents", dict(pods=pods, **ports), check_mode=True),
        task("start", "probe_agents", dict(pods=pods, **ports)),
        task("start again", "probe_agents", dict(pods=pods, **ports)),
        task("ask the agent", "probe", dict(
            node="n1", local_pods=[{"name": lab["b"], "ips": lab["pods"][lab["b"]]}],
            targets=[{"node": "n2", "pod": lab["a"], "ip": ip_a}], http_port=HTTP, udp_port=UDP,
            mtu=MTU, mtu_targets=[{"node": "n2", "pod": lab["a"], "ip": ip_a}],
            checks=["pod-pod", "mtu", "identity"])),
        task("other ports restart", "probe_agents", dict(pods=pods, run_dir=run_dir, http_port=HTTP + 1,
                                                         udp_port=UDP + 1)),
        task("check mode stop", "probe_agents", dict(state="stopped", run_dir=run_dir), check_mode=True),
        task("stop", "probe_agents", dict(state="stopped", run_dir=run_dir)),
        task("stop again", "probe_agents", dict(state="stopped", run_dir=run_dir)),
    ]
    fulls = arp_table_fulls()
    res = run_tasks(lab["tmp"], "agents", tasks, python=python)
    if any(not r["ok"] for r in res["ask the agent"].get("results", [])) and arp_table_fulls() > fulls:
        pytest.skip("the kernel's neighbour table overflowed during the run (other workloads on this machine)")
    assert not any(r.get("failed") for r in res.values()), json.dumps(res, indent=1)[-4000:]
    assert res["check mode start"]["changed"] is True
    assert res["check mode start"]["agents"] == {}
    start = res["start"]
    assert start["changed"] is True and set(start["agents"]) == {lab["a"], lab["b"]}
    assert res["start again"]["changed"] is False
    assert res["start again"]["agents"] == start["agents"]
    probes = res["ask the agent"]["results"]
    assert res["ask the agent"]["changed"] is False
    assert [r for r in probes if not r["ok"]] == []
    assert {r["check"] for r in probes} == {"pod-pod", "mtu", "identity"}
    restarted = res["other ports restart"]
    assert restarted["changed"] is True
    assert all(a.startswith("restart ") for a in restarted["actions"])
    assert set(restarted["agents"].values()).isdisjoint(start["agents"].values())
    for pid in start["agents"].values():
        assert not os.path.exists(f"/proc/{pid}") or b"agent.py" not in open(f"/proc/{pid}/cmdline", "rb").read()
    assert res["check mode stop"]["changed"] is True
    assert res["stop"]["changed"] is True and res["stop"]["agents"] == {}
    assert res["stop again"]["changed"] is False
    for pid in restarted["agents"].values():
        assert not os.path.exists(f"/proc/{pid}/cmdline") or b"agent.py" not in open(
            f"/proc/{pid}/cmdline", "rb").read()
    assert not os.path.exists(run_dir)


def test_probe_agents_fails_for_a_missing_pod(lab):
    res = run_tasks(lab["tmp"], "missing", [
        {"name": "start", "flatnet.cluster.probe_agents": {
            "pods": [f"{lab['tag']}-nope"],
            "run_dir": str(lab["tmp"] / "probe"),
        }}])["start"]
    assert res["failed"] is True
    assert f"{lab['tag']}-nope" in res["msg"]


def test_verify_role_on_two_local_nodes(lab):
    a, b = lab["a"], lab["b"]
    plan = {
        "mtu": MTU,
        "vxlan": {"device": "flatnet.1", "vni": 1, "port": 8472},
        "nodes": {
            "ta": {"pods": [{"name": a, "ips": lab["pods"][a], "command": None}], "gateways": [],
                   "vtep_ips": [], "underlay": {"ip": "192.0.2.1"}, "peers": [{"name": "tb", "mode": "direct"}]},
            "tb": {"pods": [{"name": b, "ips": lab["pods"][b], "command": None}], "gateways": [],
                   "vtep_ips": [], "underlay": {"ip": "192.0.2.2"}, "peers": [{"name": "ta", "mode": "direct"}]},
        },
    }
    (lab["tmp"] / "vars.json").write_text(json.dumps({
        "flatnet_plan": plan, "flatnet_verify_http_port": HTTP, "flatnet_verify_udp_port": UDP,
        "flatnet_verify_checks": ["pod-pod", "mtu", "identity"],
        "flatnet_verify_json": str(lab["tmp"] / "report.json"),
        "flatnet_verify_junit": str(lab["tmp"] / "report.xml"),
    }))
    inventory = (f"ta ansible_connection=local flatnet_verify_run_dir={lab['tmp'] / 'ta'}\n"
                 f"tb ansible_connection=local flatnet_verify_run_dir={lab['tmp'] / 'tb'}\n")
    book = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "verify", "ansible.builtin.include_role": {"name": "flatnet.cluster.verify"}}]}]
    fulls = arp_table_fulls()
    rc, out = run_playbook(lab["tmp"], "verify", book, inventory, ["-e", f"@{lab['tmp'] / 'vars.json'}"])
    if rc != 0 and arp_table_fulls() > fulls:
        # Other workloads on this machine filled the global ARP table (gc_thresh3): IPv4 fails for reasons
        # outside this test.
        pytest.skip("the kernel's neighbour table overflowed during the run (other workloads on this machine)")
    assert rc == 0, out[-6000:]
    assert "all 14 checks passed" in out
    report = json.loads((lab["tmp"] / "report.json").read_text())
    assert report["ok"] is True
    # ta → tb and tb → ta: http+udp over v4 and v6, one MTU datagram pair each way (v4 and v6), identity each
    assert report["summary"]["total"] == 2 * (4 + 2 + 1)
    assert report["matrix"]["ta"]["tb"] == {"total": 6, "passed": 6}
    assert "<testsuite" in (lab["tmp"] / "report.xml").read_text()
    # the agents were stopped by the role's always section
    assert not (lab["tmp"] / "ta" / "agents.json").exists()

    # Break the network: the far pod's address goes away; the role must fail and name the pair.
    ip("-n", b, "addr", "del", lab["pods"][b][0], "dev", "eth0")
    rc, out = run_playbook(lab["tmp"], "verify", book, inventory, [
        "-e", f"@{lab['tmp'] / 'vars.json'}",
        "-e", "flatnet_verify_timeout=0.5",
    ])
    assert rc != 0, out[-6000:]
    assert "required checks failed" in out
    report = json.loads((lab["tmp"] / "report.json").read_text())
    assert report["ok"] is False
    reasons = {(f["check"], f["src"], f["reason"]) for f in report["failures"]}
    assert ("identity", b, "bad-address") in reasons
    assert any(f["check"] == "pod-pod" and f["dst"] == b and f["dst_ip"] == lab["pods"][b][0].split("/")[0]
               for f in report["failures"])
    assert not (lab["tmp"] / "tb" / "agents.json").exists()


def _agents_in(pod, run_dir):
    """PIDs of live processes in ``pod``'s namespace that run this run_dir's agent (not zombies)."""
    res = ip("netns", "pids", pod, check=False)
    found = []
    for pid in res.stdout.split():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.join(run_dir, "agent.py").encode() in cmd:
            found.append(int(pid))
    return sorted(found)


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_stale_agents_are_stopped_and_each_pod_keeps_exactly_one(lab):
    run_dir = str(lab["tmp"] / "probe")
    pods = [lab["a"], lab["b"]]
    ports = {"run_dir": run_dir, "http_port": HTTP + 2, "udp_port": UDP + 2}

    def task(name, args, **kw):
        return dict(name=name, **{"flatnet.cluster.probe_agents": args}, **kw)

    # An interrupted verify: the agents run, their record is gone (or never written).
    first = run_tasks(lab["tmp"], "stale1", [task("start", dict(pods=pods, **ports))])["start"]
    assert not first.get("failed"), first
    os.unlink(os.path.join(run_dir, "agents.json"))
    assert all(len(_agents_in(pod, run_dir)) == 1 for pod in pods)

    res = run_tasks(lab["tmp"], "stale2", [
        task("check mode", dict(pods=pods, **ports), check_mode=True),
        task("start", dict(pods=pods, **ports)),
        task("start again", dict(pods=pods, **ports)),
    ])
    assert not any(r.get("failed") for r in res.values()), json.dumps(res, indent=1)[-4000:]
    for name in ("check mode", "start"):
        for pod in pods:
            assert f"stop stale probe agent in pod {pod} (pid {first['agents'][pod]})" in res[name]["actions"], res[name]
            assert f"start probe agent in pod {pod}" in res[name]["actions"]
    assert res["start again"]["changed"] is False
    for pod in pods:
        assert _agents_in(pod, run_dir) == [res["start"]["agents"][pod]], pod
        assert not _alive(first["agents"][pod])

    # Unrecorded once more, and `stopped` (what teardown runs) finds them by their mark.
    os.unlink(os.path.join(run_dir, "agents.json"))
    stop = run_tasks(lab["tmp"], "stale3", [task("stop", dict(state="stopped", run_dir=run_dir))])["stop"]
    assert stop["changed"] is True, stop
    assert stop["actions"][:2] == sorted(
        f"stop stale probe agent in pod {pod} (pid {res['start']['agents'][pod]})" for pod in pods)
    assert all(_agents_in(pod, run_dir) == [] for pod in pods)
    assert not os.path.exists(run_dir)


def test_agents_exit_by_themselves_after_their_lifetime(lab):
    run_dir = str(lab["tmp"] / "probe")
    pods = [lab["a"], lab["b"]]
    # Wide margins: on a loaded machine (CI, parallel test runs) one task can take seconds, and
    # "start later" must come after half the lifetime but before its end.
    args = {"pods": pods, "run_dir": run_dir, "http_port": HTTP + 4, "udp_port": UDP + 4, "lifetime": 12}
    res = run_tasks(lab["tmp"], "lifetime", [
        {"name": "start", "flatnet.cluster.probe_agents": args},
        {"name": "start again", "flatnet.cluster.probe_agents": args},
        {"name": "wait", "ansible.builtin.command": "sleep 6.5"},
        # less than half of the lifetime left: replaced, so a verify never runs on dying agents
        {"name": "start later", "flatnet.cluster.probe_agents": args},
    ])
    assert not any(r.get("failed") for r in res.values()), json.dumps(res, indent=1)[-4000:]
    assert res["start again"]["changed"] is False
    later = res["start later"]
    assert later["changed"] is True and all("of its lifetime left" in a for a in later["actions"]), later
    first, second = res["start"]["agents"], later["agents"]
    assert not any(_alive(pid) for pid in first.values())
    assert all(_alive(pid) for pid in second.values())
    # nobody stops them: they exit on their own
    assert _wait_gone(list(second.values()), timeout=20), "probe agents outlived their lifetime"
    assert all(_agents_in(pod, run_dir) == [] for pod in pods)
