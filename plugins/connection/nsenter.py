# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# Copyright: flatnet.cluster contributors

from __future__ import annotations

DOCUMENTATION = r"""
name: nsenter
short_description: Run tasks inside a flatnet lab node through nsenter
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Reaches a node of a lab made by M(flatnet.cluster.lab) (a process in its own network,
    mount, UTS and PID namespaces) by running every command as
    C(nsenter --target PID --mount --net --uts --pid -- /bin/sh -c CMD) on the controller.
  - The node is named by a PID or by the path of a pidfile holding it (what
    M(flatnet.cluster.lab) writes as C(<state_dir>/<lab>/<node>/pid)). The pidfile is read
    again for every command, so a node restarted during a play is followed.
  - Supports pipelining (the module travels on standard input). Files are copied with
    C(cat) through the same namespaces, so they land in the node's own view of the file
    system (its overlays and tmpfs).
  - Commands run as the controller's user, which must be root. Become to root is therefore
    a no-op and skipped; become to another user is passed through to the become plugin
    (it must be installed on the controller, which the nodes share, and must not prompt).
options:
  remote_addr:
    description:
      - The node, as a PID or as the absolute path of a pidfile.
      - Used when O(pidfile) is not set. Usually C(ansible_host) in the inventory, for
        example C(/run/flatnet/lab/{{ flatnet_lab_name }}/{{ inventory_hostname }}/pid).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  pidfile:
    description:
      - Absolute path of the node's pidfile, or its PID. Takes precedence over O(remote_addr).
    type: str
    vars:
      - name: flatnet_nsenter_pidfile
  nsenter_path:
    description: Path of C(nsenter) on the controller. Found on E(PATH) when not set.
    type: str
    vars:
      - name: flatnet_nsenter_path
  pipelining:
    description: Pipeline modules over standard input instead of copying them first.
    type: bool
    default: true
    vars:
      - name: ansible_pipelining
      - name: flatnet_nsenter_pipelining
notes:
  - Only for the local lab; it needs root on the controller and a running lab node. When
    the node is not running the host is reported unreachable with the hint to run
    C(playbooks/lab_up.yml).
seealso:
  - module: flatnet.cluster.lab
"""

EXAMPLES = r"""
# inventories/lab/group_vars/flatnet_nodes.yml
# ansible_connection: flatnet.cluster.nsenter
# ansible_host: "/run/flatnet/lab/{{ flatnet_lab_name }}/{{ inventory_hostname }}/pid"
# ansible_python_interpreter: /usr/bin/python3
"""

import os
import shutil
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

display = Display()

LAB_UP_HINT = "run playbooks/lab_up.yml"


def node_label(target):
    """A readable node name: the directory of a ``.../<node>/pid`` file, else the target."""
    target = to_text(target or "")
    if target.startswith("/") and os.path.basename(target) == "pid":
        return os.path.basename(os.path.dirname(target)) or target
    return target


def resolve_pid(target, node_name=None):
    """PID of a lab node from a PID or a pidfile path; AnsibleConnectionFailure if not running."""
    label = node_name or node_label(target)
    target = (to_text(target) if target is not None else "").strip()
    if not target:
        raise AnsibleConnectionFailure(f"the lab node {label} has no pidfile: set ansible_host or flatnet_nsenter_pidfile")
    if target.isdigit():
        pid, source = int(target), f"PID {target}"
    elif target.startswith("/"):
        source = f"pidfile {target}"
        try:
            with open(target, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            raise AnsibleConnectionFailure(f"the lab node {label} is not running ({source} is missing): {LAB_UP_HINT}")
        except OSError as e:
            raise AnsibleConnectionFailure(f"the lab node {label}: cannot read {source}: {e}")
        if not text.isdigit():
            raise AnsibleConnectionFailure(f"the lab node {label} is not running ({source} holds {text!r}, not a PID): {LAB_UP_HINT}")
        pid = int(text)
    else:
        raise AnsibleConnectionFailure(
            f"the lab node {label}: {target!r} is neither a PID nor an absolute pidfile path "
            "(set ansible_host or flatnet_nsenter_pidfile to the node's pidfile)"
        )
    if pid <= 1 or not _alive(pid):
        raise AnsibleConnectionFailure(f"the lab node {label} is not running (process {pid} from {source} is gone): {LAB_UP_HINT}")
    return pid


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    state = text[text.rfind(")") + 2:].split(" ", 1)[0]
    return state not in ("Z", "X") and os.path.exists(f"/proc/{pid}/ns/net")


class Connection(ConnectionBase):
    """Commands and files into a lab node's namespaces with nsenter."""

    transport = "flatnet.cluster.nsenter"
    has_pipelining = True
    # The shell the node runs commands with; Ansible's own wrapper comes as CMD.
    default_user = "root"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._nsenter = None

    # --- plumbing ----------------------------------------------------------------------
    def _target(self):
        return self.get_option("pidfile") or self.get_option("remote_addr")

    def _pid(self):
        return resolve_pid(self._target(), self._node_label())

    def _node_label(self):
        return node_label(self._target())

    def _prefix(self, pid):
        return [self._nsenter, "--target", str(pid), "--mount", "--net", "--uts", "--pid", "--"]

    def _connect(self):
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("flatnet.cluster.nsenter needs the controller to run as root")
        if self._nsenter is None:
            self._nsenter = self.get_option("nsenter_path") or shutil.which("nsenter") or shutil.which(
                "nsenter", path="/usr/bin:/bin:/usr/sbin:/sbin"
            )
            if not self._nsenter:
                raise AnsibleConnectionFailure("nsenter not found on the controller (util-linux)")
        if not self._connected:
            pid = self._pid()
            display.vvv(f"ESTABLISH NSENTER CONNECTION TO PID {pid}", host=self._node_label())
            self._connected = True
        return self

    @property
    def become(self):
        # Every command already runs as root inside the node: become to root is a no-op
        # (and sudo may not even exist on the controller). Other users go through.
        plugin = self._become_plugin
        if plugin is None:
            return None
        try:
            user = plugin.get_option("become_user")
        except KeyError:
            user = None
        if not user or user == "root":
            return None
        return plugin

    @become.setter
    def become(self, plugin):
        self._become_plugin = plugin

    # --- commands ----------------------------------------------------------------------
    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        self._connect()
        pid = self._pid()
        shell = "/bin/sh"
        argv = self._prefix(pid) + [shell, "-c", to_native(cmd)]
        display.vvv(f"EXEC (pid {pid}) {to_text(cmd)}", host=self._node_label())
        become = self.become
        if become is not None and sudoable and become.expect_prompt():
            raise AnsibleError("flatnet.cluster.nsenter cannot answer become password prompts; become needs no password as root")
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            argv,
            stdin=subprocess.PIPE if in_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        stdout, stderr = proc.communicate(in_data)
        return proc.returncode, stdout, stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        pid = self._pid()
        display.vvv(f"PUT {in_path} TO {out_path} (pid {pid})", host=self._node_label())
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound(f"file or module does not exist: {to_native(in_path)}")
        argv = self._prefix(pid) + ["/bin/sh", "-c", 'cat > "$1"', "sh", to_native(out_path)]
        try:
            with open(b_in, "rb") as src:
                proc = subprocess.run(argv, stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as e:
            raise AnsibleError(f"failed to transfer {in_path} to {out_path}: {e}")
        if proc.returncode != 0:
            raise AnsibleError(
                f"failed to transfer {in_path} to {out_path} in the node: {to_text(proc.stderr).strip()}"
            )

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        pid = self._pid()
        display.vvv(f"FETCH {in_path} TO {out_path} (pid {pid})", host=self._node_label())
        argv = self._prefix(pid) + ["/bin/sh", "-c", 'cat -- "$1"', "sh", to_native(in_path)]
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        try:
            with open(b_out, "wb") as dst:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=dst, stderr=subprocess.PIPE, check=False)
        except OSError as e:
            raise AnsibleError(f"failed to fetch {in_path} to {out_path}: {e}")
        if proc.returncode != 0:
            try:
                os.unlink(b_out)
            except OSError:
                pass
            raise AnsibleError(f"failed to fetch {in_path} from the node: {to_text(proc.stderr).strip()}")

    def reset(self):
        self.close()

    def close(self):
        self._connected = False
