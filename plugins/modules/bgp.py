#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: bgp
short_description: Configure, run and health-check BIRD 2 for the bgp backend
version_added: 0.2.0
author: flatnet maintainers (@flatnet)
description:
  - Renders the BIRD 2 configuration of one node from its BGP view (the
    C(flatnet.cluster.bgp_of) filter of the plan) - router id = underlay IPv4, C(protocol device),
    C(protocol kernel) exporting only BGP-learned routes into the main table (BIRD marks them
    with route protocol 12, C(proto bird); never flatnet's 157), C(protocol static) announcing
    exactly the node's pod CIDRs, one C(protocol bgp) per session (iBGP; C(rr client) on a
    reflector's clients), an import filter that accepts only a prefix inside a cluster CIDR that
    the plan gave to a peer, from that peer's underlay address, and an export filter of the node's
    own pod CIDRs (and, on a reflector, what it reflects).
  - The text is checked with C(bird -p -c) before it replaces the file (atomically). The file
    starts with a marker line; an existing file at O(config_path) without the marker that this
    module did not record is refused.
  - O(supervisor=process) (the lab) runs C(bird -f -s SOCKET -c CONFIG) as a process tree of
    this node, recorded by identity (module_utils/workload.py) so that a rerun never starts a
    second copy. O(supervisor=systemd) (real hosts) runs Debian's C(bird.service) with a drop-in
    (O(dropin_path)) that points it at O(config_path); C(/etc/bird/bird.conf) is left alone.
    V(auto) picks systemd when C(/run/systemd/system) exists.
  - A changed configuration is applied with C(birdc configure) (no restart, sessions stay up); an
    unchanged one does nothing. A daemon that is not answering on its socket is (re)started.
  - O(state=absent) stops BIRD (its kernel routes go with a clean stop), deletes any C(proto bird)
    route left inside the recorded cluster CIDRs, and removes the file, the drop-in and the record.
requirements:
  - bird2 (Debian package) on the managed host
options:
  config:
    description: The node's BGP view, C(flatnet_plan | flatnet.cluster.bgp_of(inventory_hostname)).
    type: dict
  state:
    description:
      - Whether BIRD runs with this configuration, or is stopped and removed.
      - V(query) changes nothing - it returns C(running), the sessions of O(config), the routes
        BIRD learned and the C(proto bird) routes of the kernel (C(kernel_routes)), for verify.
    type: str
    choices: [present, absent, query]
    default: present
  supervisor:
    description: How BIRD is run.
    type: str
    choices: [auto, process, systemd]
    default: auto
  config_path:
    description: The collection's BIRD configuration file.
    type: path
    default: /etc/flatnet/bird.conf
  socket:
    description:
      - BIRD's control socket. Defaults to C(/run/flatnet/bird.ctl) with O(supervisor=process)
        and Debian's C(/run/bird/bird.ctl) with O(supervisor=systemd).
    type: path
  dropin_path:
    description: The systemd drop-in that points C(bird.service) at O(config_path).
    type: path
    default: /etc/systemd/system/bird.service.d/flatnet.conf
  wait:
    description:
      - Seconds to wait for every session to reach C(Established) before returning (0 - do not
        wait; a node's sessions come up when its peers run BIRD too, so a play waits in verify
        with O(state=query)).
    type: float
    default: 0
extends_documentation_fragment:
  - flatnet.cluster.state_dir
  - flatnet.cluster.attributes
attributes:
  check_mode:
    description: Renders and checks the configuration, and reports what would be written, started or reloaded.
  diff_mode:
    description: Shows the configuration file before and after.
"""

EXAMPLES = r"""
- name: Run BIRD with this node's sessions and filters
  flatnet.cluster.bgp:
    config: "{{ flatnet_plan | flatnet.cluster.bgp_of(inventory_hostname) }}"

- name: Stop BIRD and remove its configuration and routes
  flatnet.cluster.bgp:
    state: absent
"""

RETURN = r"""
actions:
  description: What was (or would be) done.
  returned: always
  type: list
  elements: str
  sample: ["write /etc/flatnet/bird.conf", "start bird (process)"]
sessions:
  description: Each BGP session by peer name - its protocol name, address, state and info
    (C(Established) when up).
  returned: when BIRD runs
  type: dict
  sample: {node2: {protocol: peer_192_168_50_12, address: 192.168.50.12, state: up, info: Established}}
routes:
  description: The prefixes BIRD learned over BGP (best routes), with the next hop.
  returned: when BIRD runs
  type: list
  elements: dict
  sample: [{prefix: 10.244.1.0/24, protocol: peer_192_168_50_12, via: 192.168.50.12}]
running:
  description: Whether BIRD answers on its socket.
  returned: unless O(state=absent)
  type: bool
kernel_routes:
  description: The C(proto bird) routes of the main table (O(state=query)).
  returned: when O(state=query)
  type: list
  elements: dict
  sample: [{prefix: 10.244.1.0/24, via: 192.168.50.12}]
pid:
  description: PIDs of the BIRD process tree (process supervisor).
  returned: when BIRD runs
  type: list
  elements: int
supervisor:
  description: The supervisor used.
  returned: always
  type: str
"""

import ipaddress
import os
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import bird
from ansible_collections.flatnet.cluster.plugins.module_utils import procs
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils import workload
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import ENV, KernelError, Runner

RECORD = "bgp.json"
LOG = "bird.log"
PROCESS_SOCKET = "/run/flatnet/bird.ctl"
SYSTEMD_SOCKET = "/run/bird/bird.ctl"


class BgpError(Exception):
    """BIRD refused, did not answer or did not stop; the message says which."""


def dropin_text(config_path):
    return (bird.HEADER +
            "[Service]\n"
            "ExecStartPre=\n"
            "ExecStartPre=/usr/lib/bird/prepare-environment\n"
            f"ExecStartPre=/usr/sbin/bird -p -c {config_path}\n"
            "ExecStart=\n"
            f"ExecStart=/usr/sbin/bird -f -u $BIRD_RUN_USER -g $BIRD_RUN_GROUP -c {config_path} $BIRD_ARGS\n"
            "ExecReload=\n"
            "ExecReload=/usr/sbin/birdc configure\n")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


class Bgp:
    def __init__(self, module):
        self.module = module
        p = module.params
        self.p = p
        self.actions = []
        self.record_path = os.path.join(p["state_dir"], RECORD)
        self.record = flatnet_state.load_or_fail(module, self.record_path)
        sup = p["supervisor"]
        if sup == "auto":
            sup = self.record.get("supervisor") or ("systemd" if os.path.isdir("/run/systemd/system") else "process")
        self.supervisor = sup
        self.socket = p["socket"] or (SYSTEMD_SOCKET if sup == "systemd" else PROCESS_SOCKET)
        self.kernel = Runner(module)

    # --- tools -------------------------------------------------------------------
    def birdc(self, *args, check=False):
        return self.kernel.run("birdc", ["-s", self.socket] + list(args), check=check)

    def answering(self):
        if not os.path.exists(self.socket):
            return False
        rc, out, _err = self.birdc("show", "status")
        return rc == 0 and "Daemon is up and running" in out

    def systemctl(self, *args, check=True):
        rc, out, _err = self.kernel.run("systemctl", args, check=check)
        return rc, out

    def check_config(self, text):
        """``bird -p -c`` on the text in a temp file next to the config; fail with BIRD's words."""
        directory = os.path.dirname(self.p["config_path"])
        base = directory if os.path.isdir(directory) else tempfile.gettempdir()
        fd, tmp = tempfile.mkstemp(prefix=".flatnet-bird-", suffix=".conf", dir=base)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            rc, out, err = self.kernel.run("bird", ["-p", "-c", tmp], check=False)
        finally:
            os.unlink(tmp)
        if rc != 0:
            raise BgpError(f"BIRD refused the rendered configuration: {(err or out).strip()}")

    # --- process supervisor ------------------------------------------------------
    def process_members(self):
        return workload.members(self.record.get("workload"))

    def launch(self):
        log = os.path.join(self.p["state_dir"], LOG)
        os.makedirs(os.path.dirname(self.socket), mode=0o755, exist_ok=True)
        os.makedirs(self.p["state_dir"], mode=0o755, exist_ok=True)
        token = os.urandom(16).hex()
        env = dict(os.environ, **ENV)
        env[workload.TOKEN_ENV] = token
        argv = [self.kernel.bin("bird"), "-f", "-s", self.socket, "-c", self.p["config_path"]]
        proc = workload.spawn(argv, log, env=env)
        st = procs.stat(proc.pid)
        ident = {"sid": proc.pid, "start_time": st["start_time"] if st else None, "boot_id": procs.boot_id(),
                 "netns_inode": workload.own_netns_inode(), "token": token}
        # Recorded at once: a failure from here on still knows what to stop.
        self.record["workload"] = ident
        flatnet_state.save(self.record_path, self.record)
        return ident

    def wait_answering(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answering():
                return True
            time.sleep(0.05)
        return False

    # --- state -------------------------------------------------------------------
    def present(self):
        p = self.p
        text = bird.render(p["config"])
        path = p["config_path"]
        old = read(path)
        if old is not None and not old.startswith(bird.HEADER) and self.record.get("config_path") != path:
            raise BgpError(f"{path} exists and was not written by flatnet.cluster.bgp (no marker line); "
                           "move it away or set config_path to another file")
        changed_config = old != text
        if changed_config:
            self.check_config(text)
            self.actions.append(f"write {path}")
        dropin_changed = False
        if self.supervisor == "systemd" and read(p["dropin_path"]) != dropin_text(path):
            dropin_changed = True
            self.actions.append(f"write {p['dropin_path']}")
        if self.module.check_mode:
            running = self.answering()
            if not running:
                self.actions.append(f"start bird ({self.supervisor})")
            elif changed_config:
                self.actions.append("reload bird (birdc configure)")
            return old, text
        record = dict(self.record, supervisor=self.supervisor, config_path=path, socket=self.socket,
                      cluster_cidrs=list(p["config"].get("cluster_cidrs") or []))
        if self.supervisor == "systemd":
            record["dropin_path"] = p["dropin_path"]
        if record != self.record:
            self.record = record
            flatnet_state.save(self.record_path, self.record)
        if changed_config:
            flatnet_state.write_atomic(path, text)
        if self.supervisor == "process":
            self.present_process(changed_config)
        else:
            self.present_systemd(changed_config, dropin_changed)
        return old, text

    def present_process(self, changed_config):
        members = self.process_members()
        if members and self.answering():
            if changed_config:
                self.reload()
            return
        if members:  # alive but deaf: restart it
            self.actions.append(f"restart bird (pid {workload.describe(members)} does not answer on {self.socket})")
            workload.stop_tree(self.record.get("workload"))
        else:
            self.actions.append("start bird (process)")
        ident = self.launch()
        if not self.wait_answering():
            left = workload.members(ident)
            workload.stop_tree(ident)
            tail = (read(os.path.join(self.p["state_dir"], LOG)) or "").strip().splitlines()[-5:]
            raise BgpError(f"bird did not answer on {self.socket} ({'running' if left else 'exited'}): "
                           + " | ".join(tail))

    def present_systemd(self, changed_config, dropin_changed):
        p = self.p
        if dropin_changed:
            flatnet_state.write_atomic(p["dropin_path"], dropin_text(p["config_path"]))
            self.systemctl("daemon-reload")
        rc, _out = self.systemctl("is-active", "--quiet", "bird.service", check=False)
        if rc != 0:
            self.actions.append("start bird.service")
            self.systemctl("enable", "--now", "bird.service")
        elif dropin_changed:
            self.actions.append("restart bird.service (drop-in changed)")
            self.systemctl("restart", "bird.service")
        elif changed_config:
            self.reload()
        if not self.wait_answering(30.0):
            raise BgpError(f"bird.service does not answer on {self.socket}: see journalctl -u bird")

    def reload(self):
        self.actions.append("reload bird (birdc configure)")
        _rc, out, _err = self.birdc("configure", check=True)
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise BgpError(f"birdc configure did not reconfigure: {out.strip()}")

    def absent(self):
        rec = self.record
        path = rec.get("config_path")
        sup = rec.get("supervisor") or self.supervisor
        if sup == "process":
            members = self.process_members()
            if members:
                self.actions.append(f"stop bird (pid {workload.describe(members)})")
                if not self.module.check_mode:
                    _sig, left = workload.stop_tree(rec.get("workload"))
                    if left:
                        raise BgpError(f"bird did not stop: {workload.describe(left)}")
        elif rec:
            self.actions.append("stop bird.service")
            if not self.module.check_mode:
                self.systemctl("stop", "bird.service", check=False)
        leftovers = self.leftover_routes(rec.get("cluster_cidrs") or [])
        for dst in leftovers:
            self.actions.append(f"delete route {dst} proto bird")
        if not self.module.check_mode and leftovers:
            self.kernel.batch("ip", [["route", "del", dst, "proto", str(bird.RTPROT_BIRD)] for dst in leftovers],
                              force=True)
        for f in (path, rec.get("dropin_path")):
            if f and os.path.exists(f) and (read(f) or "").startswith(bird.HEADER):
                self.actions.append(f"remove {f}")
                if not self.module.check_mode:
                    flatnet_state.remove(f)
                    flatnet_state.remove_dir_if_empty(os.path.dirname(f))
        if rec.get("dropin_path") and not self.module.check_mode and sup == "systemd":
            self.systemctl("daemon-reload", check=False)
        log = os.path.join(self.p["state_dir"], LOG)
        if not self.module.check_mode:
            if os.path.exists(log):
                flatnet_state.remove(log)
            if rec:
                flatnet_state.remove(self.record_path)
            if sup == "process":
                flatnet_state.remove_dir_if_empty(os.path.dirname(rec.get("socket") or self.socket))

    def kernel_routes(self):
        """``proto bird`` routes of the main table, ``{prefix, via}``."""
        out = []
        for r in self._bird_routes():
            dst = r.get("dst", "")
            host = "/128" if ":" in dst else "/32"
            out.append({"prefix": dst if "/" in dst or dst == "default" else dst + host, "via": r.get("gateway")})
        return out

    def leftover_routes(self, cluster_cidrs):
        """``proto bird`` routes of the main table inside the recorded cluster CIDRs."""
        if not cluster_cidrs:
            return []
        nets = [ipaddress.ip_network(c) for c in cluster_cidrs]
        out = []
        for r in self.kernel_routes():
            try:
                net = ipaddress.ip_network(r["prefix"])
            except ValueError:
                continue  # "default"
            if any(net.version == n.version and net.subnet_of(n) for n in nets):
                out.append(str(net))
        return sorted(out)

    def _bird_routes(self):
        return self.kernel.json("ip", ["-json", "route", "show", "proto", str(bird.RTPROT_BIRD)])

    def status(self, wait):
        """Sessions (by peer name) and learned routes, waiting up to ``wait`` s for Established."""
        names = {bird.protocol_name(s["address"]): s for s in (self.p["config"] or {}).get("sessions") or []}
        deadline = time.monotonic() + (wait or 0)
        while True:
            _rc, out, _err = self.birdc("show", "protocols")
            protos = bird.parse_protocols(out)
            sessions = {}
            for proto, s in sorted(names.items()):
                info = protos.get(proto) or {}
                sessions[s.get("name") or s["address"]] = {"protocol": proto, "address": s["address"],
                                                           "state": info.get("state"), "info": info.get("info")}
            up = all(v["info"] == "Established" for v in sessions.values())
            if up or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        _rc, out, _err = self.birdc("show", "route", "where", "source = RTS_BGP")
        return sessions, bird.parse_routes(out)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="dict"),
            state=dict(type="str", choices=["present", "absent", "query"], default="present"),
            supervisor=dict(type="str", choices=["auto", "process", "systemd"], default="auto"),
            config_path=dict(type="path", default="/etc/flatnet/bird.conf"),
            socket=dict(type="path"),
            dropin_path=dict(type="path", default="/etc/systemd/system/bird.service.d/flatnet.conf"),
            wait=dict(type="float", default=0),
            state_dir=flatnet_state.state_dir_spec(),
        ),
        required_if=[("state", "present", ("config",)), ("state", "query", ("config",))],
        supports_check_mode=True,
    )
    b = Bgp(module)
    try:
        result = run(module, b)
    except (BgpError, KernelError) as exc:
        module.fail_json(msg=str(exc), actions=b.actions)
    module.exit_json(**result)


def run(module, b):
    """The module's work for its state; returns the result."""
    result = dict(changed=False, supervisor=b.supervisor)
    if module.params["state"] == "absent":
        b.absent()
    elif module.params["state"] == "query":
        result["running"] = b.answering()
        result["sessions"], result["routes"] = b.status(module.params["wait"]) if result["running"] else ({}, [])
        result["kernel_routes"] = b.kernel_routes()
    else:
        try:
            before, after = b.present()
        except bird.BirdError as exc:
            raise BgpError(f"cannot render the BIRD configuration: {exc}") from None
        if module._diff:
            result["diff"] = dict(before=before or "", after=after, before_header=module.params["config_path"],
                                  after_header=module.params["config_path"])
        result["running"] = b.answering()
        if result["running"]:
            result["sessions"], result["routes"] = b.status(module.params["wait"])
            if b.supervisor == "process":
                result["pid"] = b.process_members()
    result["actions"] = b.actions
    result["changed"] = bool(b.actions)
    return result


if __name__ == "__main__":
    main()
