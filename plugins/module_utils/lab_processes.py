# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The processes of a M(flatnet.cluster.lab): node init processes and the outside agent.

A node is an ``unshare`` whose child is the node's PID 1 (``NODE_INIT``); its directory
``<state_dir>/<lab>/<node>`` holds ``unshare.pid``, ``pid``, ``ready``, its identity record
and its log. The outside agent is the probe agent run in the outside namespace, with its
script, pidfile and log in ``<state_dir>/<lab>/_outside``. The ``/proc`` readers are those
of ``procs.py``; starting a detached process is ``workload.spawn``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys

from ansible_collections.flatnet.cluster.plugins.module_utils import lab_identity, procs
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import RECORD
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_spec import LabError
from ansible_collections.flatnet.cluster.plugins.module_utils.probe_agent import agent_source
from ansible_collections.flatnet.cluster.plugins.module_utils.reconcile import wait_until
from ansible_collections.flatnet.cluster.plugins.module_utils.workload import spawn

OUTSIDE_DIR = "_outside"  # not a DNS label, so never a node's directory
AGENT_TCP_PORT = 8083
AGENT_UDP_PORT = 8081
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
BOOT_TIMEOUT = 10.0
BOOT_FILES = ("pid", "unshare.pid", "ready", RECORD)

# Runs as PID 1 of a node. Overlays are mounted while the state dir is still visible; the
# shell then keeps the node dir as its cwd so the ready marker can be written after /run
# and /tmp (where the state dir may live) are covered by the node's own tmpfs.
NODE_INIT = r"""set -eu
node=$1
dir=$2
printf '%s\n' "$node" > /proc/sys/kernel/hostname
for d in etc varlib; do
  mkdir -p "$dir/$d/upper" "$dir/$d/work"
done
mount -t overlay "$node-etc" -o "lowerdir=/etc,upperdir=$dir/etc/upper,workdir=$dir/etc/work" /etc
mount -t overlay "$node-varlib" -o "lowerdir=/var/lib,upperdir=$dir/varlib/upper,workdir=$dir/varlib/work" /var/lib
printf '%s\n' "$node" > /etc/hostname
# Directories that must be the node's own, not the machine's seen through the overlay
# (a machine that is itself a flatnet node would hand its records to every node): each is
# a bind mount of a node-private directory, kept across restarts like the rest of the disk.
for p in /var/lib/flatnet /etc/netns /etc/cni/net.d; do
  mkdir -p "$dir/private$p" "$p"
  mount --bind "$dir/private$p" "$p"
done
umount -l /sys
mount -t sysfs "$node-sys" /sys
ip link set lo up
cd "$dir"
mount -t tmpfs -o mode=0755,nosuid,nodev "$node-run" /run
mount -t tmpfs -o mode=1777,nosuid,nodev "$node-tmp" /tmp
echo ready > ready
cd /
# PID 1 of the node inherits every orphan (workloads, sshd sessions): with SIGCHLD
# ignored the kernel reaps them, so they do not linger as zombies.
exec env --ignore-signal=CHLD sleep infinity
"""


# --- /proc and pidfiles ----------------------------------------------------------------
def is_running(pid):
    st = procs.stat(pid)
    return st is not None and st["state"] not in procs.GONE


def read_int(path):
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_text(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def kill_all(pids, timeout=5.0):
    """SIGKILL every PID and wait until none runs; False when some still runs at the deadline."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return wait_until(lambda: not any(is_running(p) for p in pids), timeout, 0.01)


def _log_tail(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()[-2000:].strip()


# --- nodes -----------------------------------------------------------------------------
def is_node_unshare(pid, node_dir):
    """True when PID is the unshare that started the node living in node_dir."""
    argv = procs.cmdline(pid)
    return bool(argv) and os.path.basename(argv[0]) == "unshare" and node_dir in argv and is_running(pid)


def node_pid(node_dir):
    """PID of a running node, verified against its unshare parent, else None."""
    pid = read_int(os.path.join(node_dir, "pid"))
    upid = read_int(os.path.join(node_dir, "unshare.pid"))
    if not pid or not upid or not is_node_unshare(upid, node_dir):
        return None
    st = procs.stat(pid)
    if st is None or st["state"] in procs.GONE or st["ppid"] != upid:
        return None
    if not os.path.exists(os.path.join(node_dir, "ready")):
        return None
    return pid


def _unshares(match):
    found = []
    for pid in procs.pids():
        argv = procs.cmdline(pid)
        if argv and os.path.basename(argv[0]) == "unshare" and match(argv):
            found.append(pid)
    return [p for p in found if is_running(p)]


def node_unshares(node_dir):
    """PIDs of live unshare processes that started the node living in node_dir."""
    return _unshares(lambda argv: node_dir in argv)


def lab_unshares(lab_dir):
    """PIDs of live unshare processes that started any node of the lab in lab_dir."""
    prefix = lab_dir + os.sep
    return _unshares(lambda argv: any((a + os.sep).startswith(prefix) for a in argv[1:]))


def kill_unshares(unshares):
    """Kill unshares and their children (a node's PID 1 takes everything inside with it).
    The PIDs that were alive; LabError when they do not die."""
    pids = [p for p in [c for u in unshares for c in children(u)] + unshares if is_running(p)]
    if pids and not kill_all(pids):
        raise LabError(f"processes {pids} did not die")
    return pids


def kill_node(node_dir, node):
    """Kill a node's processes (all of them die with its PID 1). True if any was alive."""
    try:
        return bool(kill_unshares(node_unshares(node_dir)))
    except LabError as e:
        raise LabError(f"node {node}: {e}")


def record_identity(lab, node_dir, node, pid):
    live = lab_identity.live_identity(pid)
    if live is None:
        raise LabError(f"node {node}: process {pid} died while it was being recorded")
    controller = lab_identity.controller_namespaces()
    for ns, key in controller.items():
        if live["ns"][ns] == key:
            raise LabError(f"node {node}: process {pid} lives in the controller's own {ns} namespace")
    lab_identity.write_record(node_dir, live, lab, node)


def identity_problems(node_dir, pid):
    try:
        record = lab_identity.read_record(os.path.join(node_dir, RECORD))
    except lab_identity.IdentityError as e:
        return [str(e)]
    return lab_identity.mismatches(record, lab_identity.live_identity(pid), lab_identity.controller_namespaces())


def clear_boot_files(node_dir):
    for f in BOOT_FILES:
        try:
            os.unlink(os.path.join(node_dir, f))
        except FileNotFoundError:
            pass


def start_node(unshare, lab, node_dir, node):
    """Boot a node from its directory; its PID 1 once it is ready and recorded."""
    os.makedirs(node_dir, mode=0o700, exist_ok=True)
    clear_boot_files(node_dir)
    log_path = os.path.join(node_dir, "log")
    argv = [
        unshare, "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
        "--kill-child=SIGKILL", "--propagation", "private", "--",
        "/bin/sh", "-c", NODE_INIT, "flatnet-node", node, node_dir,
    ]
    proc = spawn(argv, log_path, env=CLEAN_ENV)
    write_text(os.path.join(node_dir, "unshare.pid"), f"{proc.pid}\n")
    pid = None

    def booted():
        """"ready" once PID 1 wrote its marker, "exited" when the unshare died, else False."""
        nonlocal pid
        if proc.poll() is not None:
            return "exited"
        if pid is None:
            kids = children(proc.pid)
            pid = kids[0] if kids else None
        return pid is not None and os.path.exists(os.path.join(node_dir, "ready")) and "ready"

    if wait_until(booted, BOOT_TIMEOUT, 0.005) == "ready":
        # The identity first: a pidfile is never seen without its record.
        record_identity(lab, node_dir, node, pid)
        write_text(os.path.join(node_dir, "pid"), f"{pid}\n")
        return pid
    kill_all([proc.pid] + ([pid] if pid else []), timeout=0)
    raise LabError(f"node {node} did not boot (rc={proc.poll()}): {_log_tail(log_path)}")


# --- the outside agent -----------------------------------------------------------------
def agent_paths(lab_dir):
    odir = os.path.join(lab_dir, OUTSIDE_DIR)
    return odir, os.path.join(odir, "agent.py"), os.path.join(odir, "pid")


def agent_pid(lab_dir):
    _odir, script, pidfile = agent_paths(lab_dir)
    pid = read_int(pidfile)
    if pid and is_running(pid) and script in (procs.cmdline(pid) or []):
        return pid
    return None


def kill_agent(lab_dir):
    _odir, script, _pidfile = agent_paths(lab_dir)
    pids = []
    for pid in procs.pids():
        argv = procs.cmdline(pid)
        if argv and script in argv[1:3] and is_running(pid):
            pids.append(pid)
    kill_all(pids)
    return bool(pids)


def start_agent(lab_dir, ip_bin, outns):
    # The outside host runs the collection's probe agent, named "outside": HTTP
    # /clientip answers the caller's address, UDP answers "outside <client-ip>".
    odir, script, pidfile = agent_paths(lab_dir)
    os.makedirs(odir, mode=0o700, exist_ok=True)
    write_text(script, agent_source())
    log_path = os.path.join(odir, "log")
    python = sys.executable or "/usr/bin/python3"
    # ip netns exec execs the agent: the PID is the agent's own.
    proc = spawn(
        [ip_bin, "netns", "exec", outns, python, script, "--name", "outside",
         "--http-port", str(AGENT_TCP_PORT), "--udp-port", str(AGENT_UDP_PORT)],
        log_path, env=CLEAN_ENV, mode="wb",
    )
    write_text(pidfile, f"{proc.pid}\n")

    def listening():
        """"up" once the agent printed its banner (both sockets bound), "exited" when it died."""
        with open(log_path, encoding="utf-8", errors="replace") as f:
            if "probe agent outside:" in f.read():
                return "up"
        return proc.poll() is not None and "exited"

    if wait_until(listening, BOOT_TIMEOUT, 0.01) == "up":
        return proc.pid
    kill_all([proc.pid], timeout=0)
    raise LabError(f"the outside agent did not start: {_log_tail(log_path)}")


# --- a node's lifecycle in the lab ------------------------------------------------------
class LabNodes:
    """Starting, restarting, stopping and wiping the lab's nodes (a part of the module's Lab:
    it uses its ``do``, ``check``, ``name``, ``unshare``, ``node_dir`` and ``ensure_node_link``)."""

    def ensure_node(self, node, restart, lab_up):
        """A node as its spec says; ``lab_up``: the lab namespace exists (its veth can be wired)."""
        name, ndir = node["name"], self.node_dir(node["name"])
        info = {"pid": None, "pidfile": os.path.join(ndir, "pid"), "ip": str(node["ip"]),
                "subnet": node["subnet"]["name"], "state": node["state"]}
        if node["state"] != "running":
            self.remove_node(name, wipe=node["state"] == "absent")
            return info
        pid = node_pid(ndir)
        if restart or pid is None:
            # Killed first: on a start, the leftovers of a half-started node.
            if not self.do(f"restart node {name}" if restart else f"start node {name}", kill_node, ndir, name):
                return info
            pid = start_node(self.unshare, self.name, ndir, name)
        elif identity_problems(ndir, pid):
            # A running node without a (matching) record, e.g. started by an older lab.
            self.do(f"record the identity of node {name}", record_identity, self.name, ndir, name, pid)
        info["pid"] = pid
        if lab_up:
            self.ensure_node_link(node, pid)
        return info

    def remove_node(self, name, wipe=True):
        ndir = self.node_dir(name)
        if node_pid(ndir) is not None or node_unshares(ndir):
            self.do(f"stop node {name}", kill_node, ndir, name)
        if not self.check:
            clear_boot_files(ndir)
        if wipe and os.path.isdir(ndir):
            self.do(f"wipe node {name}", shutil.rmtree, ndir)
