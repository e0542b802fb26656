# SPDX-License-Identifier: GPL-3.0-or-later
"""The nsenter connection plugin, against a real throw-away node (root only)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest
from ansible.errors import AnsibleConnectionFailure
from ansible.playbook.play_context import PlayContext
import yaml
from ansible import constants as C

from ansible_collections.flatnet.cluster.plugins.connection import nsenter
from ansible_collections.flatnet.cluster.plugins.connection.nsenter import node_label, resolve_pid

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


def test_resolve_pid_from_pid_and_pidfile(node):
    assert resolve_pid(str(node["pid"])) == node["pid"]
    assert resolve_pid(node["pidfile"]) == node["pid"]


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


def test_neither_pid_nor_path():
    with pytest.raises(AnsibleConnectionFailure, match="neither a PID nor"):
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
    conn = connect(str(node["pid"]))
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
