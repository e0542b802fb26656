# SPDX-License-Identifier: GPL-3.0-or-later
"""Labs for the benchmarks: a generated inventory in a temp dir, a per-run lab name, the
collection's playbooks run with timing, and a teardown that holds even when they fail.

The lab itself is the collection's (playbooks/lab_up.yml, lab_down.yml, the lab module);
this file only drives it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time

from common import PREFIX, REPO_ROOT, Skip, collection_root, done, mkdtemp, on_cleanup, run

PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
_lab_count = 0


def ansible_bin(name):
    local = os.path.join(os.path.dirname(sys.executable), name)
    found = local if os.access(local, os.X_OK) else shutil.which(name)
    if not found:
        raise Skip(f"{name} not found next to {sys.executable} or on PATH")
    return found


def require(*playbooks):
    missing = [p for p in playbooks if not os.path.exists(os.path.join(PLAYBOOKS, p))]
    if not os.path.exists(os.path.join(REPO_ROOT, "plugins", "modules", "lab.py")):
        missing.append("plugins/modules/lab.py")
    if missing:
        raise Skip("missing: " + ", ".join(missing))


def _yaml(value):
    # JSON is YAML; no PyYAML needed to write inventories.
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


class Lab:
    """A lab of ``nodes`` nodes on one underlay subnet, with its inventory in a temp dir."""

    def __init__(self, nodes, pods_per_node=1, backend="host-gw", group_vars=None, tag="l"):
        global _lab_count
        _lab_count += 1
        # Lab names: at most 16 characters; the prefix makes them ours.
        self.name = f"{PREFIX}{tag}{_lab_count}"[:16]
        self.dir = mkdtemp(f"lab{_lab_count}")
        self.inventory = os.path.join(self.dir, "inventory")
        self.state_dir = os.path.join(self.dir, "state")
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        self.pods_per_node = pods_per_node
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collection_root(),
                        ANSIBLE_HOME=os.path.join(self.dir, "ansible-home"),
                        ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                        ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_DEPRECATION_WARNINGS="0",
                        ANSIBLE_FORKS=str(max(5, nodes)), PYTHONDONTWRITEBYTECODE="1")
        # TMPDIR reaches the nodes' processes through the nsenter connection, and a host dir
        # there is hidden by the node's private /tmp.
        for var in ("ANSIBLE_CONFIG", "ANSIBLE_INVENTORY", "ANSIBLE_ROLES_PATH", "ANSIBLE_COLLECTIONS_PATHS", "TMPDIR"):
            self.env.pop(var, None)
        os.makedirs(os.path.join(self.inventory, "group_vars"))
        hosts = {n: {"flatnet_lab_subnet": "lan", "flatnet_lab_ip": f"192.168.50.{11 + i}"}
                 for i, n in enumerate(self.nodes)}
        with open(os.path.join(self.inventory, "hosts.yml"), "w", encoding="utf-8") as handle:
            handle.write("---\n" + _yaml({"all": {"children": {"flatnet_nodes": {"hosts": hosts}}}}))
        gvars = {
            "flatnet_lab_name": self.name,
            "flatnet_lab_state_dir": self.state_dir,
            "flatnet_lab_subnets": [{"name": "lan", "cidr": "192.168.50.0/24"}],
            "flatnet_lab_mtu": 1500,
            "ansible_connection": "flatnet.cluster.nsenter",
            "ansible_host": "{{ flatnet_lab_state_dir }}/{{ flatnet_lab_name }}/{{ inventory_hostname }}/pid",
            "ansible_python_interpreter": "/usr/bin/python3",
            "flatnet_backend": backend,
            "flatnet_pods_per_node": pods_per_node,
        }
        gvars.update(group_vars or {})
        with open(os.path.join(self.inventory, "group_vars", "flatnet_nodes.yml"), "w", encoding="utf-8") as handle:
            handle.write("---\n" + _yaml(gvars))
        self.up = False
        self._entry = on_cleanup(self._destroy)

    def playbook(self, name, extra=None, timeout=900, check=True):
        """Run one of the collection's playbooks on this lab; return (seconds, output)."""
        argv = [ansible_bin("ansible-playbook"), "-i", self.inventory, os.path.join(PLAYBOOKS, name),
                "-e", f"flatnet_lab_name={self.name}"]
        for key, value in (extra or {}).items():
            argv += ["-e", json.dumps({key: value})]
        start = time.perf_counter()
        res = run(argv, env=self.env, cwd=self.dir, timeout=timeout, check=False)
        elapsed = time.perf_counter() - start
        if check and res.returncode != 0:
            tail = "\n".join(res.stdout.splitlines()[-25:])
            raise RuntimeError(f"{name} failed on lab {self.name} (rc={res.returncode}):\n{tail}\n{res.stderr[-1500:]}")
        return elapsed, res.stdout

    def start(self):
        self.up = True
        self.playbook("lab_up.yml")

    def pid(self, node):
        with open(os.path.join(self.state_dir, self.name, node, "pid"), encoding="utf-8") as handle:
            return int(handle.read().split()[0])

    def node_prefix(self, node):
        return ["nsenter", "-t", str(self.pid(node)), "-m", "-n", "-u", "-p", "--"]

    def _destroy(self):
        if not self.up:
            return
        try:
            self.playbook("lab_down.yml", timeout=300)
        except Exception as exc:  # the fallback below still frees what is ours
            print(f"bench: lab_down.yml failed for {self.name}: {exc}; cleaning up by hand", file=sys.stderr)
            self._force_down()
        self.up = False

    def _force_down(self):
        # Only what carries this lab's name: node PIDs from its pidfiles, its two namespaces.
        for node in self.nodes:
            try:
                os.kill(self.pid(node), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for ns in (f"{self.name}-net", f"{self.name}-out"):
            if os.path.exists(f"/run/netns/{ns}"):
                run(["ip", "netns", "del", ns], check=False, timeout=30)

    def stop(self):
        done(self._entry)
