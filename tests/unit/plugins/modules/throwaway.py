# SPDX-License-Identifier: GPL-3.0-or-later
"""A throwaway node for kernel tests: ``unshare --net --mount --pid`` with a tmpfs on /run, so
/run/netns, the state dir and every link made inside live and die with it. Modules run in it
through nsenter exactly as Ansible runs them (JSON arguments on stdin). Every name carries a
per-run prefix; killing the node's init frees everything, even when a test fails. Needs root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import ansible_collections.flatnet.cluster.plugins.modules.pods as _pods_module

COLLECTIONS_ROOT = _pods_module.__file__.rsplit(
    os.sep.join(["", "ansible_collections", "flatnet", "cluster", ""]), 1)[0]

INIT = "mount -t tmpfs flatnet-test /run && ip link set lo up && touch /run/ready && exec sleep infinity"


def kernel_tests_possible():
    return os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("nsenter"))


class ThrowawayNode:
    def __init__(self):
        self.prefix = "t" + secrets.token_hex(3)
        self.state_dir = f"/run/{self.prefix}-state"
        self.unshare = subprocess.Popen(  # pylint: disable=consider-using-with
            ["unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc",
             "--kill-child=SIGKILL", "--propagation", "private", "--", "sh", "-c", INIT],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children", encoding="ascii") as f:
                    kids = f.read().split()
            except OSError:
                kids = []
            if kids and self.sh(["test", "-e", "/run/ready"], pid=int(kids[0]), check=False).returncode == 0:
                self.pid = int(kids[0])
                return
            time.sleep(0.02)
        self.close()
        raise RuntimeError("test node did not start")

    def sh(self, argv, pid=None, check=True, data=None):
        cmd = ["nsenter", "-t", str(pid or self.pid), "-n", "-m", "-p", "--"] + argv
        res = subprocess.run(cmd, input=data, capture_output=True, text=True, timeout=120, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} failed: {res.stderr}")
        return res

    def ip(self, *args, check=True):
        return self.sh(["ip"] + list(args), check=check).stdout

    def ipj(self, *args):
        out = self.ip("-json", *args).strip()
        return json.loads(out) if out else []

    def module(self, name, args, check_mode=False, diff=True, expect_fail=False):
        """Run module ``name`` in the node; its result, with ``_elapsed`` seconds."""
        args = dict(args, state_dir=self.state_dir, _ansible_check_mode=check_mode,
                    _ansible_diff=diff)
        env = dict(os.environ, PYTHONPATH=COLLECTIONS_ROOT)
        cmd = ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "--", sys.executable, "-m",
               f"ansible_collections.flatnet.cluster.plugins.modules.{name}"]
        start = time.monotonic()
        res = subprocess.run(cmd, input=json.dumps({"ANSIBLE_MODULE_ARGS": args}), env=env,
                             capture_output=True, text=True, timeout=120, check=False)
        elapsed = time.monotonic() - start
        result = json.loads(res.stdout.strip().splitlines()[-1])
        result["_elapsed"] = elapsed
        if expect_fail:
            assert result.get("failed"), result
        else:
            assert not result.get("failed"), result
        return result

    def netns(self):
        return sorted(line.split()[0] for line in self.ip("netns", "list").splitlines() if line.strip())

    def close(self):
        # The pid namespace dies with its init, taking workloads, namespaces and links along.
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.unshare.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.unshare.kill()
            self.unshare.wait()
