# SPDX-License-Identifier: GPL-3.0-or-later
"""flatnet.cluster.lab: validation, and a real lab built and torn down (root only)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import (
    live_identity,
    mismatches,
    read_record,
    write_private,
)
from ansible_collections.flatnet.cluster.plugins.modules import lab as lab_module

MODULE = lab_module.__file__
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def _collections_root():
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry, "ansible_collections", "flatnet", "cluster")):
            return entry
    raise RuntimeError("flatnet.cluster is not importable")


def run_module(args, tmp_path, check=False):
    if check:
        args = {**args, "_ansible_check_mode": True}
    path = tmp_path / f"args-{secrets.token_hex(2)}.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PYTHONPATH": _collections_root()}
    proc = subprocess.run([sys.executable, MODULE, str(path)], capture_output=True, text=True, env=env, check=False)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module output is not JSON: {proc.stdout}\n{proc.stderr}")


def nsexec(pid, *argv, data=None):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "-u", "-p", "--"] + list(argv),
                          capture_output=True, text=True, input=data, check=False, timeout=20)


def netns_names():
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.parametrize("args, message", [
    ({"name": "Bad_Name", "subnets": [{"name": "a", "cidr": "192.168.50.0/24"}]}, "lab name"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}, {"name": "b", "cidr": "192.168.50.128/25"}]}, "overlaps"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "n1", "ip": "10.0.0.1"}]}, "in none of the subnets"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "n1", "ip": "192.168.50.1"}]}, "gateway"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}],
      "nodes": [{"name": "n1", "ip": "192.168.50.5"}, {"name": "n2", "ip": "192.168.50.5"}]}, "already"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "n1", "ip": "192.168.50.5", "subnet": "b"}]},
     "not in subnets"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "outside": {"cidr": "192.168.50.0/25", "ip": "192.168.50.9"}},
     "overlaps"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "restart": ["ghost"]}, "not in nodes"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "state_dir": "/var/lib/flatnet-lab"}, "must not be under"),
    ({"state": "present"}, "subnets is required"),
    # A trailing newline never passes a name pattern ("$" would let it).
    ({"name": "lab\n", "subnets": [{"name": "a", "cidr": "192.168.50.0/24"}]}, "lab name"),
    ({"subnets": [{"name": "a\n", "cidr": "192.168.50.0/24"}]}, "subnet name"),
    ({"subnets": [{"name": "a", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "n1\n", "ip": "192.168.50.5"}]},
     "node name"),
])
def test_invalid_requests_fail_before_touching_anything(args, message, tmp_path):
    name = "t" + secrets.token_hex(3)
    result = run_module({"name": name, "state_dir": str(tmp_path / "state"), **args}, tmp_path)
    assert result.get("failed"), result
    assert message in result["msg"]
    assert not [n for n in netns_names() if n.startswith(name)]
    assert not (tmp_path / "state").exists()


@pytest.fixture()
def lab(tmp_path):
    """A lab name and its state dir; whatever happens, the lab is destroyed afterwards."""
    name = "t" + secrets.token_hex(3)
    base = {"name": name, "state_dir": str(tmp_path / "state")}
    try:
        yield base
    finally:
        result = run_module({**base, "state": "absent"}, tmp_path)
        assert not result.get("failed"), result
        assert not {f"{name}-net", f"{name}-out"} & netns_names()
        assert not (tmp_path / "state" / name).exists()


SPEC = {
    "subnets": [{"name": "east", "cidr": "192.168.50.0/24"}, {"name": "west", "cidr": "192.168.60.0/24"}],
    "nodes": [
        {"name": "node1", "ip": "192.168.50.11"},
        {"name": "node2", "ip": "192.168.50.12", "subnet": "east"},
        {"name": "node3", "ip": "192.168.60.11"},
    ],
    "outside": {"cidr": "203.0.113.0/24", "ip": "203.0.113.10"},
}


def test_check_mode_builds_nothing(lab, tmp_path):
    result = run_module({**lab, **SPEC}, tmp_path, check=True)
    assert result["changed"] and not result.get("failed"), result
    assert "start node node1" in result["actions"]
    assert not {f"{lab['name']}-net", f"{lab['name']}-out"} & netns_names()
    assert not (tmp_path / "state" / lab["name"]).exists()


def test_lab_lifecycle(lab, tmp_path):
    name = lab["name"]
    args = {**lab, **SPEC}
    first = run_module(args, tmp_path)
    assert first["changed"] and not first.get("failed"), first
    nodes = first["nodes"]
    assert {n: v["ip"] for n, v in nodes.items()} == {"node1": "192.168.50.11", "node2": "192.168.50.12", "node3": "192.168.60.11"}
    assert {f"{name}-net", f"{name}-out"} <= netns_names()
    for node, info in nodes.items():
        assert open(info["pidfile"], encoding="ascii").read().strip() == str(info["pid"])
        assert nsexec(info["pid"], "hostname").stdout.strip() == node

    # Idempotent: nothing to do, same PIDs.
    again = run_module(args, tmp_path)
    assert not again["changed"], again["actions"]
    assert again["nodes"] == nodes
    assert not run_module(args, tmp_path, check=True)["changed"]

    pid1, pid3 = nodes["node1"]["pid"], nodes["node3"]["pid"]
    # The node's facts are its own: eth0 with its address, default route via the gateway.
    addr = json.loads(nsexec(pid1, "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout)
    assert addr[0]["addr_info"][0]["local"] == "192.168.50.11"
    assert "default via 192.168.50.1 dev eth0" in nsexec(pid1, "ip", "route").stdout
    # Routed between subnets, and the outside sees the node's underlay address.
    assert nsexec(pid1, "ping", "-c1", "-W2", "192.168.60.11").returncode == 0
    probe = ("import socket, urllib.request\n"
             "print(urllib.request.urlopen('http://203.0.113.10:8083/clientip', timeout=3).read().decode())\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
             "s.sendto(b'x', ('203.0.113.10', 8081)); print(s.recv(100).decode())\n")
    out = nsexec(pid3, "python3", "-", data=probe)
    assert out.returncode == 0, out.stderr
    http_ip, udp_reply = out.stdout.split("\n")[:2]
    assert http_ip.rsplit(":", 1)[0] == "192.168.60.11"
    assert udp_reply == "outside 192.168.60.11"

    # Repair: a lost veth is made again.
    subprocess.run(["ip", "-n", f"{name}-net", "link", "del", "v-node2"], check=True)
    repaired = run_module(args, tmp_path)
    assert repaired["changed"] and any("connect node node2" in a for a in repaired["actions"]), repaired
    assert nsexec(pid1, "ping", "-c1", "-W2", "192.168.50.12").returncode == 0

    # Reboot: /var/lib and /etc survive, /run does not; new PID.
    assert nsexec(pid1, "sh", "-c", "echo disk > /var/lib/flatnet-t; echo mem > /run/flatnet-t").returncode == 0
    assert not os.path.exists("/var/lib/flatnet-t")  # the node's disk, not the host's
    rebooted = run_module({**args, "restart": ["node1"]}, tmp_path)
    assert rebooted["changed"] and "restart node node1" in rebooted["actions"]
    new1 = rebooted["nodes"]["node1"]["pid"]
    assert new1 != pid1 and not alive(pid1)
    assert nsexec(new1, "cat", "/var/lib/flatnet-t").stdout == "disk\n"
    assert nsexec(new1, "cat", "/run/flatnet-t").returncode != 0
    assert nsexec(new1, "ping", "-c1", "-W2", "192.168.60.11").returncode == 0

    # A node that died is booted again by the next run.
    os.kill(pid3, 9)
    revived = run_module(args, tmp_path)
    assert "start node node3" in revived["actions"] and alive(revived["nodes"]["node3"]["pid"])

    # Stopped keeps the disk; absent wipes it; running again makes an empty node.
    node_dir = tmp_path / "state" / name / "node1"
    stopped = run_module({**args, "nodes": [dict(SPEC["nodes"][0], state="stopped")] + SPEC["nodes"][1:]}, tmp_path)
    assert stopped["nodes"]["node1"]["pid"] is None and not alive(new1)
    assert (node_dir / "varlib" / "upper" / "flatnet-t").exists()
    gone = run_module({**args, "nodes": [dict(SPEC["nodes"][0], state="absent")] + SPEC["nodes"][1:]}, tmp_path)
    assert "wipe node node1" in gone["actions"] and not node_dir.exists()
    fresh = run_module(args, tmp_path)
    assert nsexec(fresh["nodes"]["node1"]["pid"], "cat", "/var/lib/flatnet-t").returncode != 0

    # Dropping a node from the list and the outside removes them.
    smaller = run_module({**args, "nodes": SPEC["nodes"][:2], "outside": None}, tmp_path)
    assert "stop node node3" in smaller["actions"] and f"{name}-out" not in netns_names()
    assert not alive(revived["nodes"]["node3"]["pid"])
    links = subprocess.run(["ip", "-n", f"{name}-net", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "v-node3" not in links and "out0" not in links

    # Destroy, then destroying again changes nothing.
    pids = [v["pid"] for v in smaller["nodes"].values()]
    down = run_module({**lab, "state": "absent"}, tmp_path)
    assert down["changed"] and not any(alive(p) for p in pids)
    assert not run_module({**lab, "state": "absent"}, tmp_path)["changed"]


def _write_marker(lab_dir, name, netns):
    """The marker as the lab writes it first thing (the format of lab.MARKER)."""
    os.makedirs(lab_dir, mode=0o700, exist_ok=True)
    write_private(os.path.join(lab_dir, "lab.json"),
                  json.dumps({"lab": name, "made_by": "flatnet.cluster.lab", "netns": netns}))


def test_absent_cleans_a_half_failed_create(lab, tmp_path):
    name = lab["name"]
    lab_dir = str(tmp_path / "state" / name)
    # What a crash mid-create leaves: the marker with the netns still pending (the crash
    # came between "ip netns add" and recording it), the netns, a node dir without pidfiles.
    _write_marker(lab_dir, name, {f"{name}-net": "pending"})
    subprocess.run(["ip", "netns", "add", f"{name}-net"], check=True)
    (tmp_path / "state" / name / "node1").mkdir(parents=True)
    down = run_module({**lab, "state": "absent"}, tmp_path)
    assert down["changed"] and not down.get("failed"), down
    assert f"{name}-net" not in netns_names()


def test_absent_cleans_a_create_that_died_before_its_marker(lab, tmp_path):
    (tmp_path / "state" / lab["name"]).mkdir(parents=True)  # empty: nothing to lose
    down = run_module({**lab, "state": "absent"}, tmp_path)
    assert down["changed"] and not down.get("failed"), down


SMALL = {"subnets": [{"name": "lan", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "node1", "ip": "192.168.50.11"}]}


@pytest.fixture()
def foreign(tmp_path):
    """A lab name whose state dir and namespaces the test makes as a stranger would; every
    namespace of that name is deleted afterwards."""
    name = "t" + secrets.token_hex(3)
    try:
        yield {"name": name, "state_dir": str(tmp_path / "state")}
    finally:
        for ns in (f"{name}-net", f"{name}-out"):
            if ns in netns_names():
                subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.parametrize("content", ["file", "marker-of-another-lab", "corrupt-marker"])
def test_foreign_state_dir_is_refused_and_kept(foreign, tmp_path, content):
    name = foreign["name"]
    lab_dir = tmp_path / "state" / name
    lab_dir.mkdir(parents=True)
    precious = lab_dir / "precious"
    precious.write_text("not the lab's")
    if content == "marker-of-another-lab":
        _write_marker(str(lab_dir), "other", {})
    elif content == "corrupt-marker":
        (lab_dir / "lab.json").write_text("{")
        (lab_dir / "lab.json").chmod(0o600)
    before = sorted(os.listdir(lab_dir))
    for args in ({**foreign, **SMALL}, {**foreign, "state": "absent"}):
        for check in (False, True):
            result = run_module(args, tmp_path, check=check)
            assert result.get("failed"), result
            assert str(lab_dir) in result["msg"] and "flatnet_lab_name" in result["msg"], result["msg"]
            assert result["actions"] == []
    assert sorted(os.listdir(lab_dir)) == before and precious.read_text() == "not the lab's"
    assert not {f"{name}-net", f"{name}-out"} & netns_names()


def _links(ns):
    out = subprocess.run(["ip", "-n", ns, "-json", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(link["ifname"] for link in json.loads(out))


def test_foreign_lab_netns_is_refused_and_kept(foreign, tmp_path):
    name = foreign["name"]
    ns = f"{name}-net"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "add", f"{name}d", "type", "bridge"], check=True)
    for args in ({**foreign, **SMALL}, {**foreign, "state": "absent"}):
        result = run_module(args, tmp_path)
        assert result.get("failed"), result
        assert f"network namespace {ns} exists but lab {name} did not make it" in result["msg"]
        assert f"ip netns del {ns}" in result["msg"] and "flatnet_lab_name" in result["msg"]
    assert _links(ns) == sorted(["lo", f"{name}d"])
    assert not (tmp_path / "state" / name).exists()
    # Even a marker that lists it as pending does not make a namespace with content ours.
    _write_marker(str(tmp_path / "state" / name), name, {ns: "pending"})
    result = run_module({**foreign, "state": "absent"}, tmp_path)
    assert result.get("failed") and f"network namespace {ns}" in result["msg"], result
    assert _links(ns) == sorted(["lo", f"{name}d"])


def test_foreign_outside_netns_is_refused_and_kept(lab, tmp_path):
    name = lab["name"]
    up = run_module({**lab, **SMALL}, tmp_path)
    assert not up.get("failed"), up
    out = f"{name}-out"
    subprocess.run(["ip", "netns", "add", out], check=True)
    try:
        subprocess.run(["ip", "-n", out, "link", "add", f"{name}d", "type", "bridge"], check=True)
        spec = {**lab, **SMALL, "outside": {"cidr": "203.0.113.0/24", "ip": "203.0.113.10"}}
        for args in (spec, {**lab, **SMALL}, {**lab, "state": "absent"}):
            result = run_module(args, tmp_path)
            assert result.get("failed") and f"network namespace {out} exists" in result["msg"], result
        assert _links(out) == sorted(["lo", f"{name}d"])
        assert alive(up["nodes"]["node1"]["pid"])  # the refused absent stopped nothing
    finally:
        subprocess.run(["ip", "netns", "del", out], check=False)


@pytest.fixture()
def host_probe():
    """A uniquely named file in the machine's /var/lib/flatnet and a directory in its
    /etc/netns (each made, with its parent if missing, and removed afterwards)."""
    tag = "t" + secrets.token_hex(3)
    made = []
    paths = {}
    try:
        for parent, kind in (("/var/lib/flatnet", "file"), ("/etc/netns", "dir")):
            if not os.path.isdir(parent):
                os.makedirs(parent)
                made.append(parent)
            path = os.path.join(parent, f"{tag}-probe")
            if kind == "file":
                with open(path, "x", encoding="ascii") as f:
                    f.write("machine\n")
            else:
                os.mkdir(path)
            made.append(path)
            paths[parent] = path
        yield {"tag": tag, **paths}
    finally:
        for path in reversed(made):
            if os.path.isdir(path):
                os.rmdir(path)  # only if empty: it was ours
            elif os.path.exists(path):
                os.unlink(path)


def test_node_dirs_are_private(lab, tmp_path, host_probe):
    tag = host_probe["tag"]
    up = run_module({**lab, **SMALL}, tmp_path)
    assert not up.get("failed"), up
    pid = up["nodes"]["node1"]["pid"]
    for d in ("/var/lib/flatnet", "/etc/netns", "/etc/cni/net.d"):
        out = nsexec(pid, "ls", "-A", d)
        assert out.returncode == 0 and out.stdout == "", (d, out.stdout, out.stderr)
    inside = f"/var/lib/flatnet/{tag}-node"
    assert nsexec(pid, "sh", "-c", f"echo node > {inside}; mkdir /etc/netns/{tag}-ns").returncode == 0
    assert not os.path.exists(inside) and not os.path.exists(f"/etc/netns/{tag}-ns")
    # Kept across a restart, like the rest of the node's disk; still without the machine's.
    again = run_module({**lab, **SMALL, "restart": ["node1"]}, tmp_path)
    new = again["nodes"]["node1"]["pid"]
    assert new != pid
    assert nsexec(new, "cat", inside).stdout == "node\n"
    assert nsexec(new, "ls", "-A", "/etc/netns").stdout.split() == [f"{tag}-ns"]
    assert nsexec(new, "ls", "-A", "/var/lib/flatnet").stdout.split() == [f"{tag}-node"]
    with open(host_probe["/var/lib/flatnet"], encoding="ascii") as f:
        assert f.read() == "machine\n"  # the machine's file is untouched


def test_identity_is_recorded_and_rewritten_on_restart(lab, tmp_path):
    up = run_module({**lab, **SMALL}, tmp_path)
    pid = up["nodes"]["node1"]["pid"]
    node_dir = tmp_path / "state" / lab["name"] / "node1"
    path = node_dir / "identity.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "state" / lab["name"] / "lab.json").stat().st_mode & 0o077 == 0
    record = read_record(str(path))
    assert record["pid"] == pid and record["node"] == "node1" and record["lab"] == lab["name"]
    assert not mismatches(record, live_identity(pid))
    assert record["ns"]["net"][1] == os.stat(f"/proc/{pid}/ns/net").st_ino
    restarted = run_module({**lab, **SMALL, "restart": ["node1"]}, tmp_path)
    new = restarted["nodes"]["node1"]["pid"]
    record2 = read_record(str(path))
    assert record2["pid"] == new and not mismatches(record2, live_identity(new))
    assert record2["ns"]["net"] != record["ns"]["net"]
    stopped = run_module({**lab, **SMALL, "nodes": [dict(SMALL["nodes"][0], state="stopped")]}, tmp_path)
    assert not stopped.get("failed") and not path.exists() and not (node_dir / "pid").exists()
