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
    mount, UTS and PID namespaces) by running every command through C(nsenter) into the
    node's namespaces on the controller, as C(/bin/sh -c CMD).
  - The node is named by the path of its pidfile (what M(flatnet.cluster.lab) writes as
    C(<state_dir>/<lab>/<node>/pid)). The pidfile is read again for every command, so a node
    restarted during a play is followed.
  - Before every connect, command and file transfer the plugin proves that the PID is the
    node; it compares the process's start time, the boot id and its network, mount, UTS and
    PID namespace inodes with the identity record that M(flatnet.cluster.lab) wrote next to
    the pidfile (C(identity.json)) when it started the node, and refuses a process that lives
    in the controller's own network or mount namespace. Any mismatch (a stale pidfile after
    a crash and PID reuse, a typo, a missing record) marks the host unreachable with a
    message naming the pidfile, what did not match and the repair; nothing is run there.
    The namespaces are entered by the file descriptors the check opened, so the PID cannot
    change hands in between.
  - A bare PID is refused, since it has no record next to it to be checked against.
  - Supports pipelining (the module travels on standard input). Files are copied with
    C(cat) through the same namespaces, so they land in the node's own view of the file
    system (its overlays and tmpfs).
  - Commands run as the controller's user, which must be root, without the controller's
    E(TMPDIR) (the node has its own C(/tmp)). Become to root is therefore
    a no-op and skipped; become to another user is passed through to the become plugin
    (it must be installed on the controller, which the nodes share, and must not prompt).
options:
  remote_addr:
    description:
      - The node, as the absolute path of its pidfile. A bare PID is refused.
      - Used when O(pidfile) is not set. Usually C(ansible_host) in the inventory, for
        example C(/run/flatnet/lab/{{ flatnet_lab_name }}/{{ inventory_hostname }}/pid).
    type: str
    default: inventory_hostname
    vars:
      - name: inventory_hostname
      - name: ansible_host
  pidfile:
    description:
      - Absolute path of the node's pidfile. Takes precedence over O(remote_addr).
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
    the node is not running, or its pidfile does not match the lab's record, the host is
    reported unreachable with the hint to run C(playbooks/lab_up.yml) (or
    C(playbooks/lab_down.yml) then C(playbooks/lab_up.yml)).
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
from ansible_collections.flatnet.cluster.plugins.module_utils.lab_identity import (
    RECORD,
    IdentityError,
    close_fds,
    controller_namespaces,
    mismatches,
    open_namespaces,
    read_record,
)

display = Display()

LAB_UP_HINT = "run playbooks/lab_up.yml"
REPAIR_HINT = "repair the lab: run playbooks/lab_up.yml (or playbooks/lab_down.yml, then playbooks/lab_up.yml)"
# The order nsenter is given the namespaces (it opens every file before entering any).
NS_OPTIONS = (("mnt", "--mount"), ("net", "--net"), ("uts", "--uts"), ("pid", "--pid"))
# Controller variables that must not follow the command into the node: TMPDIR names a
# directory of the controller, hidden in the node by its private /tmp.
DROP_ENV = ("TMPDIR", "TMP", "TEMP")


def node_label(target):
    """A readable node name: the directory of a ``.../<node>/pid`` file, else the target."""
    target = to_text(target or "")
    if target.startswith("/") and os.path.basename(target) == "pid":
        return os.path.basename(os.path.dirname(target)) or target
    return target


def read_pidfile(target, node_name=None):
    """(pidfile, PID) named by the target; AnsibleConnectionFailure if it names no running node.

    Only a pidfile is accepted: a bare PID has no lab record next to it to prove what it is."""
    label = node_name or node_label(target)
    target = (to_text(target) if target is not None else "").strip()
    if not target:
        raise AnsibleConnectionFailure(f"the lab node {label} has no pidfile: set ansible_host or flatnet_nsenter_pidfile")
    if target.isdigit():
        raise AnsibleConnectionFailure(
            f"the lab node {label}: {target!r} is a bare PID, which flatnet.cluster.nsenter refuses: it enters only "
            "a process the lab recorded as a node, and finds that record next to the node's pidfile; set ansible_host "
            "(or flatnet_nsenter_pidfile) to <state_dir>/<lab>/<node>/pid"
        )
    if not target.startswith("/"):
        raise AnsibleConnectionFailure(
            f"the lab node {label}: {target!r} is not an absolute pidfile path "
            "(set ansible_host or flatnet_nsenter_pidfile to the node's pidfile, <state_dir>/<lab>/<node>/pid)"
        )
    source = f"pidfile {target}"
    try:
        with open(target, encoding="ascii") as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise AnsibleConnectionFailure(f"the lab node {label} is not running ({source} is missing): {LAB_UP_HINT}")
    except (OSError, ValueError) as e:
        raise AnsibleConnectionFailure(f"the lab node {label}: cannot read {source}: {e}")
    if not text.isdigit() or int(text) <= 1:
        raise AnsibleConnectionFailure(f"the lab node {label} is not running ({source} holds {text!r}, not a node PID): {LAB_UP_HINT}")
    return target, int(text)


def enter_node(target, node_name=None):
    """Prove that the target is the lab node it claims to be; return (PID, {ns: fd}).

    Reads the pidfile and the lab's identity record next to it, opens the process's
    namespaces and compares PID, start time, boot id and namespace inodes with the record,
    and refuses the controller's own network or mount namespace. The caller enters the
    returned fds (never the PID again) and closes them. Any doubt is an
    AnsibleConnectionFailure (the host is unreachable) and nothing is run."""
    label = node_name or node_label(target)
    pidfile, pid = read_pidfile(target, label)
    record_path = os.path.join(os.path.dirname(pidfile), RECORD)
    live, fds = open_namespaces(pid)
    if live is None:
        raise AnsibleConnectionFailure(
            f"the lab node {label} is not running (process {pid} from pidfile {pidfile} is gone): {LAB_UP_HINT}"
        )
    try:
        problems = []
        try:
            record = read_record(record_path)
        except IdentityError as e:
            record = None
            problems.append(f"{e}, so process {pid} is not known to be the node")
            controller = controller_namespaces()
            problems += [f"process {pid} lives in the controller's own {ns} namespace"
                         for ns in controller if live["ns"][ns] == controller[ns]]
        if record is not None:
            problems = mismatches(record, live, controller_namespaces())
    except BaseException:
        close_fds(fds)
        raise
    if problems:
        close_fds(fds)
        raise AnsibleConnectionFailure(
            f"flatnet.cluster.nsenter refuses the lab node {label}: pidfile {pidfile} holds PID {pid}, "
            f"which is not the process the lab started as that node: {'; '.join(problems)}. "
            f"Nothing was run there. To {REPAIR_HINT}"
        )
    return pid, fds


def resolve_pid(target, node_name=None):
    """PID of a checked lab node (see enter_node)."""
    pid, fds = enter_node(target, node_name)
    close_fds(fds)
    return pid


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in DROP_ENV}


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

    def _enter(self):
        """(PID, {ns: fd}) of the checked node; done again for every command."""
        return enter_node(self._target(), self._node_label())

    def _pid(self):
        return resolve_pid(self._target(), self._node_label())

    def _node_label(self):
        return node_label(self._target())

    def _prefix(self, fds):
        # Enter the namespaces held open by the check, not /proc/PID again: no window
        # in which the PID could be reused between the check and nsenter. (The command
        # inherits these fds; they are the node's own namespaces, so that grants nothing.)
        argv = [self._nsenter]
        argv += [f"{opt}=/proc/self/fd/{fds[ns]}" for ns, opt in NS_OPTIONS]
        return argv + ["--"]

    def _run(self, fds, argv, **kwargs):
        try:
            return subprocess.run(argv, pass_fds=tuple(fds.values()), env=_clean_env(), check=False, **kwargs)
        finally:
            close_fds(fds)

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
        become = self.become
        if become is not None and sudoable and become.expect_prompt():
            raise AnsibleError("flatnet.cluster.nsenter cannot answer become password prompts; become needs no password as root")
        pid, fds = self._enter()
        shell = "/bin/sh"
        argv = self._prefix(fds) + [shell, "-c", to_native(cmd)]
        display.vvv(f"EXEC (pid {pid}) {to_text(cmd)}", host=self._node_label())
        proc = self._run(
            fds, argv, input=in_data,
            stdin=None if in_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        self._connect()
        b_in = to_bytes(in_path, errors="surrogate_or_strict")
        if not os.path.exists(b_in):
            raise AnsibleFileNotFound(f"file or module does not exist: {to_native(in_path)}")
        try:
            src = open(b_in, "rb")  # pylint: disable=consider-using-with
        except OSError as e:
            raise AnsibleError(f"failed to transfer {in_path} to {out_path}: {e}")
        with src:
            pid, fds = self._enter()
            display.vvv(f"PUT {in_path} TO {out_path} (pid {pid})", host=self._node_label())
            argv = self._prefix(fds) + ["/bin/sh", "-c", 'cat > "$1"', "sh", to_native(out_path)]
            proc = self._run(fds, argv, stdin=src, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise AnsibleError(
                f"failed to transfer {in_path} to {out_path} in the node: {to_text(proc.stderr).strip()}"
            )

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        self._connect()
        b_out = to_bytes(out_path, errors="surrogate_or_strict")
        # The check comes first: a refused node leaves no file behind on the controller.
        pid, fds = self._enter()
        display.vvv(f"FETCH {in_path} TO {out_path} (pid {pid})", host=self._node_label())
        argv = self._prefix(fds) + ["/bin/sh", "-c", 'cat -- "$1"', "sh", to_native(in_path)]
        try:
            dst = open(b_out, "wb")  # pylint: disable=consider-using-with
        except OSError as e:
            close_fds(fds)
            raise AnsibleError(f"failed to fetch {in_path} to {out_path}: {e}")
        with dst:
            proc = self._run(fds, argv, stdin=subprocess.DEVNULL, stdout=dst, stderr=subprocess.PIPE)
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
