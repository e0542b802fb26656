# SPDX-License-Identifier: GPL-3.0-or-later
"""The nsenter connection plugin: the identity check, against a real throw-away node and
against a real lab whose pidfile is made to point elsewhere (root only)."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest
from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.play_context import PlayContext
import yaml
from ansible import constants as C

from ansible_collections.flatnet.cluster.plugins.connection import nsenter
from ansible_collections.flatnet.cluster.plugins.connection.nsenter import node_label, resolve_pid
from ansible_collections.flatnet.cluster.plugins.module_utils import lab_identity
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import (
    IdentityError,
    controller_namespaces,
    live_identity,
    mismatches,
    read_record,
    write_record,
)
from ansible_collections.flatnet.cluster.plugins.modules import lab as lab_module

FQCN = "flatnet.cluster.nsenter"
# What the plugin loader does when it loads the plugin: register its documented options.
C.config.initialize_plugin_configuration_definitions(
    "connection", FQCN, yaml.safe_load(nsenter.DOCUMENTATION)["options"]
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a node")


@pytest.fixture()
def node(tmp_path):
    """A minimal lab node: own namespaces, hostname, a private /run; its pidfile."""
    name = "t" + secrets.token_hex(3)
    init = 'hostname "$1"; mount -t tmpfs "$1-run" /run; echo ok > "$2"; exec sleep infinity'
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
         "--kill-child=SIGKILL", "--propagation", "private", "--", "sh", "-c", init, "sh", name, str(ready)],
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 5
        pid = None
        while time.monotonic() < deadline and not (pid and ready.exists()):
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children", encoding="ascii") as f:
                kids = f.read().split()
            pid = int(kids[0]) if kids else None
            time.sleep(0.01)
        assert pid and ready.exists(), "test node did not start"
        pidfile = tmp_path / name / "pid"
        pidfile.parent.mkdir()
        # What the lab does when it starts a node: the identity record, then the pidfile.
        write_record(str(pidfile.parent), live_identity(pid), "test", name)
        pidfile.write_text(f"{pid}\n")
        yield {"name": name, "pid": pid, "pidfile": str(pidfile), "proc": proc}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)  # --kill-child takes the node with it
        proc.wait(timeout=5)


def connect(target, **options):
    play_context = PlayContext()
    play_context.executable = "/bin/sh"
    conn = nsenter.Connection(play_context, None)
    conn._load_name = FQCN
    conn.set_options(direct={"remote_addr": target, **options})
    return conn


def test_node_label():
    assert node_label("/run/flatnet/lab/lab/node2/pid") == "node2"
    assert node_label("1234") == "1234"


def test_resolve_pid_from_pidfile(node):
    assert resolve_pid(node["pidfile"]) == node["pid"]


def test_bare_pid_is_refused(node):
    # Even the PID of a real, recorded node: a bare PID has no record next to it.
    with pytest.raises(AnsibleConnectionFailure, match=r"'\d+' is a bare PID.*<state_dir>/<lab>/<node>/pid"):
        resolve_pid(str(node["pid"]))
    with pytest.raises(AnsibleConnectionFailure, match="bare PID"):
        resolve_pid("2")


def test_missing_pidfile_names_the_fix(tmp_path):
    with pytest.raises(AnsibleConnectionFailure, match=r"lab node node1 is not running .*lab_up\.yml"):
        resolve_pid(str(tmp_path / "node1" / "pid"))


def test_dead_process_names_the_fix(tmp_path):
    proc = subprocess.Popen(["true"])
    proc.wait()
    pidfile = tmp_path / "pid"
    pidfile.write_text(f"{proc.pid}\n")
    with pytest.raises(AnsibleConnectionFailure, match=r"is not running .*is gone.*lab_up"):
        resolve_pid(str(pidfile))


def test_not_a_path():
    with pytest.raises(AnsibleConnectionFailure, match="not an absolute pidfile path"):
        resolve_pid("node1.example.com")


def test_exec_command_runs_inside_the_node(node):
    conn = connect(node["pidfile"])
    rc, out, err = conn.exec_command("hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; ip -o link show | cut -d: -f2")
    assert rc == 0, err
    lines = out.decode().split("\n")
    assert lines[0] == node["name"]
    assert lines[1] == "sleep infinity "
    assert [line.strip() for line in lines[2:] if line.strip()] == ["lo"]  # its own netns


def test_exec_command_pipes_stdin_and_exit_code(node):
    conn = connect(node["pidfile"])
    rc, out, _err = conn.exec_command("cat; exit 3", in_data=b"module source\n")
    assert (rc, out) == (3, b"module source\n")


def test_pidfile_option_wins_over_remote_addr(node):
    conn = connect("/nonexistent/pid", pidfile=node["pidfile"])
    rc, out, _err = conn.exec_command("hostname")
    assert rc == 0 and out.decode().strip() == node["name"]


def test_put_and_fetch_use_the_node_view(node, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"payload \x00\xff\n")
    conn = connect(node["pidfile"])
    remote = f"/run/{node['name']} file"  # the node's private /run, with a blank
    conn.put_file(str(src), remote)
    assert not os.path.exists(remote), "landed on the host, not in the node"
    dst = tmp_path / "dst"
    conn.fetch_file(remote, str(dst))
    assert dst.read_bytes() == src.read_bytes()


def test_fetch_missing_file_fails(node, tmp_path):
    conn = connect(node["pidfile"])
    with pytest.raises(Exception, match="failed to fetch"):
        conn.fetch_file("/run/none", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_dead_node_is_unreachable(node):
    conn = connect(node["pidfile"])
    os.kill(node["proc"].pid, signal.SIGKILL)
    node["proc"].wait(timeout=5)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{node['pid']}") and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(AnsibleConnectionFailure, match="is not running"):
        conn.exec_command("true")


class _Become:
    """Just what the plugin asks a become plugin."""

    def __init__(self, user):
        self.user = user

    def get_option(self, name):
        assert name == "become_user"
        return self.user


def test_become_to_root_is_a_no_op(node):
    conn = connect(node["pidfile"])
    conn.set_become_plugin(_Become("root"))
    assert conn.become is None
    conn.set_become_plugin(_Become(None))
    assert conn.become is None
    other = _Become("nobody")
    conn.set_become_plugin(other)
    assert conn.become is other


# --- the identity check, recorded against live ---------------------------------------
NS = {"net": [4, 4026532300], "mnt": [4, 4026532298], "uts": [4, 4026532299], "pid": [4, 4026532301]}
RECORDED = {"pid": 4242, "starttime": 987654, "boot_id": "b0", "ns": NS, "lab": "lab", "node": "node1"}
CONTROLLER = {"net": [4, 4026531840], "mnt": [4, 4026531841]}


def _live(ns=None, **fields):
    """A live identity: the recorded one with some fields and namespaces changed."""
    live = {"pid": 4242, "starttime": 987654, "boot_id": "b0", "ns": {**copy.deepcopy(NS), **(ns or {})}}
    live.update(fields)
    return live


def test_identity_match():
    assert not mismatches(RECORDED, _live(), CONTROLLER)


@pytest.mark.parametrize("live, expected", [
    # PID reuse: the same number, a process started later.
    (_live(starttime=1000001), r"started at tick 1000001, the node at tick 987654 \(the PID now belongs to another process\)"),
    (_live(pid=77), r"recorded PID 4242 for this node, not 77"),
    (_live(ns={"net": [4, 4026531999]}), r"net namespace 4026531999 is not the node's 4026532300"),
    (_live(ns={"mnt": [4, 4026531999]}), r"mnt namespace 4026531999 is not the node's"),
    (_live(ns={"pid": [4, 1]}), r"pid namespace 1 is not the node's"),
    (_live(ns={"net": [5, 4026532300]}), r"net namespace 4026532300 is not the node's 4026532300"),
    (_live(boot_id="b1"), r"rebooted"),
    (None, r"process 4242 is gone"),
])
def test_identity_mismatch(live, expected):
    problems = mismatches(RECORDED, live, CONTROLLER)
    assert problems and re.search(expected, "; ".join(problems)), problems


@pytest.mark.parametrize("ns", ["net", "mnt"])
def test_controller_namespace_is_refused_even_when_recorded(ns):
    # A record that (wrongly) names the controller's own namespace does not make it a node.
    record = copy.deepcopy(RECORDED)
    record["ns"][ns] = CONTROLLER[ns]
    problems = mismatches(record, _live(ns={ns: CONTROLLER[ns]}), CONTROLLER)
    assert problems == [f"process 4242 lives in the controller's own {ns} namespace"]


def test_read_record_refuses_missing_corrupt_and_unsafe(tmp_path):
    path = tmp_path / "identity.json"
    with pytest.raises(IdentityError, match="there is no identity record"):
        read_record(str(path))
    write_record(str(tmp_path), _live(), "lab", "node1")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_record(str(path))["starttime"] == 987654
    path.chmod(0o666)
    with pytest.raises(IdentityError, match="not root-only"):
        read_record(str(path))
    path.chmod(0o600)
    path.write_text('{"pid": 1}')
    with pytest.raises(IdentityError, match="is corrupt"):
        read_record(str(path))


def test_live_identity_of_a_real_process():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        live = live_identity(proc.pid)
        with open(f"/proc/{proc.pid}/stat", encoding="ascii") as f:
            assert live["starttime"] == int(f.read().rsplit(")", 1)[1].split()[19])
        assert live["ns"]["net"][1] == os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            assert live["boot_id"] == f.read().strip()
        assert live["ns"]["net"] == controller_namespaces()["net"]
    finally:
        proc.kill()
        proc.wait()
    assert live_identity(proc.pid) is None


# --- the check on a hand-made node ---------------------------------------------------
def test_missing_record_is_refused(node, tmp_path):
    os.unlink(os.path.join(os.path.dirname(node["pidfile"]), "identity.json"))
    conn = connect(node["pidfile"])
    marker = tmp_path / "ran"
    with pytest.raises(AnsibleConnectionFailure, match=rf"{re.escape(node['pidfile'])}.*no identity record.*lab_up\.yml"):
        conn.exec_command(f"touch {marker}")
    assert not marker.exists()


def test_record_of_another_start_is_refused(node, tmp_path):
    # The record of an earlier process with the same PID: PID reuse.
    path = os.path.join(os.path.dirname(node["pidfile"]), "identity.json")
    record = json.loads(open(path, encoding="utf-8").read())
    record["starttime"] -= 1
    lab_identity.write_private(path, json.dumps(record))
    conn = connect(node["pidfile"])
    with pytest.raises(AnsibleConnectionFailure, match=r"the PID now belongs to another process"):
        conn.exec_command("true")


def test_tmpdir_does_not_reach_the_node(node, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/nonexistent-controller-tmp")
    rc, out, _err = connect(node["pidfile"]).exec_command('echo "${TMPDIR-unset}"')
    assert (rc, out) == (0, b"unset\n")


# --- a real lab whose pidfile points at a process of the machine ---------------------
def _collections_root():
    for entry in sys.path:
        if os.path.isdir(os.path.join(entry, "ansible_collections", "flatnet", "cluster")):
            return entry
    raise RuntimeError("flatnet.cluster is not importable")


def run_lab(args, tmp_path):
    path = tmp_path / f"args-{secrets.token_hex(2)}.json"
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PYTHONPATH": _collections_root()}
    proc = subprocess.run([sys.executable, lab_module.__file__, str(path)], capture_output=True, text=True,
                          env=env, check=False)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"module output is not JSON: {proc.stdout}\n{proc.stderr}")


@pytest.fixture()
def lab_node(tmp_path):
    name = "t" + secrets.token_hex(3)
    base = {"name": name, "state_dir": str(tmp_path / "state")}
    spec = {"subnets": [{"name": "lan", "cidr": "192.168.50.0/24"}], "nodes": [{"name": "node1", "ip": "192.168.50.11"}]}
    try:
        up = run_lab({**base, **spec}, tmp_path)
        assert not up.get("failed"), up
        yield {"name": name, "args": {**base, **spec}, **up["nodes"]["node1"]}
    finally:
        down = run_lab({**base, "state": "absent"}, tmp_path)
        assert not down.get("failed"), down
        assert not os.path.exists(f"/run/netns/{name}-net")


@pytest.fixture()
def host_netns_process():
    """A process that is not a lab node, in a throwaway network namespace of its own: what
    a stale pidfile may point at. Its mount namespace is the machine's."""
    own = os.stat("/proc/self/ns/net").st_ino
    proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if os.stat(f"/proc/{proc.pid}/ns/net").st_ino != own and "sleep" in open(
                        f"/proc/{proc.pid}/cmdline", "rb").read().decode():
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            raise AssertionError("the throwaway namespace did not come up")
        yield proc.pid
    finally:
        proc.kill()  # by its PID: the process this fixture started
        proc.wait(timeout=5)


def netns_snapshot(pid):
    """Links, addresses and routes of a process's netns, read without changing anything."""
    out = {}
    for what in (["link"], ["addr"], ["route", "show", "table", "all"], ["-6", "route", "show", "table", "all"]):
        proc = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-json"] + what,
                              capture_output=True, text=True, check=True)
        out[" ".join(what)] = json.loads(proc.stdout or "[]")
    return out


def _repoint(pidfile, pid):
    tmp = pidfile + ".new"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, pidfile)


def test_pidfile_pointing_into_a_host_namespace_is_refused(lab_node, host_netns_process, tmp_path):
    pidfile, victim = lab_node["pidfile"], host_netns_process
    dummy = lab_node["name"] + "x"
    created = tmp_path / "created"
    before = netns_snapshot(victim)
    _repoint(pidfile, victim)
    conn = connect(pidfile)
    # What a play would do there: a link, an address, a file.
    cmd = f"ip link add {dummy} type dummy; ip addr add 192.0.2.1/32 dev lo; touch {created}"
    with pytest.raises(AnsibleConnectionFailure) as info:
        conn.exec_command(cmd)
    msg = str(info.value)
    assert pidfile in msg and f"PID {victim}" in msg
    assert f"recorded PID {lab_node['pid']} for this node" in msg
    assert "net namespace" in msg and "playbooks/lab_up.yml" in msg and "Nothing was run" in msg
    src = tmp_path / "src"
    src.write_text("payload")
    with pytest.raises(AnsibleConnectionFailure):
        conn.put_file(str(src), str(tmp_path / "put"))
    with pytest.raises(AnsibleConnectionFailure):
        conn.fetch_file(str(src), str(tmp_path / "fetched"))
    assert netns_snapshot(victim) == before
    assert not created.exists() and not (tmp_path / "put").exists() and not (tmp_path / "fetched").exists()

    # A forged record for the victim (the node's record with its PID) fails on the start
    # time and the namespaces all the same.
    record_path = os.path.join(os.path.dirname(pidfile), "identity.json")
    record = json.loads(open(record_path, encoding="utf-8").read())
    lab_identity.write_private(record_path, json.dumps(dict(record, pid=victim)))
    with pytest.raises(AnsibleConnectionFailure, match=r"the PID now belongs to another process.*net namespace"):
        connect(pidfile).exec_command(cmd)
    assert netns_snapshot(victim) == before and not created.exists()

    # lab_up repairs it: the node is found dead-or-foreign, booted again, recorded again.
    repaired = run_lab(lab_node["args"], tmp_path)
    assert not repaired.get("failed") and "start node node1" in repaired["actions"], repaired
    rc, out, _err = connect(pidfile).exec_command("hostname")
    assert (rc, out) == (0, b"node1\n")
    assert netns_snapshot(victim) == before


def test_pidfile_pointing_at_the_controller_is_refused(lab_node, tmp_path):
    pidfile = lab_node["pidfile"]
    created = tmp_path / "created"
    _repoint(pidfile, os.getpid())
    # Even a record that matches the controller's process in every field is refused.
    write_record(os.path.dirname(pidfile), live_identity(os.getpid()), lab_node["name"], "node1")
    with pytest.raises(AnsibleConnectionFailure) as info:
        connect(pidfile).exec_command(f"touch {created}")
    msg = str(info.value)
    assert pidfile in msg and "controller's own net namespace" in msg and "controller's own mnt namespace" in msg
    assert not created.exists()


def test_lab_up_records_a_node_without_record(lab_node, tmp_path):
    pidfile = lab_node["pidfile"]
    os.unlink(os.path.join(os.path.dirname(pidfile), "identity.json"))
    with pytest.raises(AnsibleConnectionFailure, match="no identity record"):
        connect(pidfile).exec_command("true")
    again = run_lab(lab_node["args"], tmp_path)
    assert again["actions"] == ["record the identity of node node1"], again
    assert again["nodes"]["node1"]["pid"] == lab_node["pid"]  # the same node, not a reboot
    rc, out, _err = connect(pidfile).exec_command("hostname")
    assert (rc, out) == (0, b"node1\n")
