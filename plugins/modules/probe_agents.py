#!/usr/bin/python
# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start or stop the flatnet.cluster probe agent in pods of a node."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: probe_agents
short_description: Start or stop the verification probe agent in the pods of a node
version_added: 0.1.0
author: flatnet maintainers (@flatnet)
description:
  - Writes the probe agent (a small HTTP and UDP endpoint, like Kubernetes' C(agnhost netexec))
    to the node and starts one agent inside the network namespace of every given pod.
  - The agent answers C(GET /hostname) with the pod name, C(GET /clientip) with the caller's
    address (C(IP:PORT)), and any UDP datagram with C(NAME CLIENT_IP).
  - Each agent runs in a session of its own with C(FLATNET_PROBE_AGENT=<agent file>) and a random
    C(FLATNET_WORKLOAD_ID) in its environment. Its identity (session id, start time, boot id, the
    pod's network namespace, the token) is recorded in O(run_dir) as soon as it starts; only
    recorded agents, and processes carrying the C(FLATNET_PROBE_AGENT) mark of this O(run_dir),
    are ever stopped (TERM, then KILL after 3 seconds).
  - Each agent exits by itself after O(lifetime) seconds, so agents of an interrupted verification
    (Ctrl-C, a killed C(ansible-playbook)) do not listen for ever.
  - The module waits until every agent listens on both ports before it returns.
options:
  pods:
    description:
      - Names of the pods (named network namespaces on the node) to act on.
      - With O(state=stopped), an empty list stops every recorded agent.
    type: list
    elements: str
    default: []
  state:
    description:
      - V(started) makes sure exactly one agent runs in each pod of O(pods). It first stops stale
        agents in those pods (marked agents that are not the recorded one, left by an interrupted
        run), then restarts the recorded agent when the ports, the lifetime or the agent code
        changed or when less than half of its lifetime is left, and starts the missing ones.
        Agents of other pods are left alone.
      - V(stopped) stops the recorded and the marked agents of O(pods) (every one of this
        O(run_dir) when O(pods) is empty) and removes the agent files when none is left.
    type: str
    choices: [started, stopped]
    default: started
  http_port:
    description: TCP port of the agent's HTTP endpoint.
    type: int
    default: 8083
  udp_port:
    description: UDP port of the agent's echo endpoint.
    type: int
    default: 8081
  wait_timeout:
    description: Seconds to wait for each agent to listen on both ports.
    type: float
    default: 10
  lifetime:
    description:
      - Seconds after which each agent exits by itself; V(0) means never.
      - The C(flatnet.cluster.verify) role derives it from the number of probes and
        C(flatnet_verify_timeout).
    type: float
    default: 600
  run_dir:
    description:
      - Directory of the agent file, its record and the agents' logs. For tests.
    type: path
    default: /run/flatnet/probe
extends_documentation_fragment:
  - flatnet.cluster.attributes.no_diff
attributes:
  check_mode:
    description: Reports which agents would be started or stopped.
notes:
  - The agent runs with the same Python interpreter as the module.
seealso:
  - module: flatnet.cluster.probe
"""

EXAMPLES = r"""
- name: Start a probe agent in every pod of the node
  flatnet.cluster.probe_agents:
    pods: "{{ flatnet_plan.nodes[inventory_hostname].pods | map(attribute='name') }}"
    state: started

- name: Stop them all
  flatnet.cluster.probe_agents:
    state: stopped
"""

RETURN = r"""
agents:
  description: Running agents after the call, pod name → PID of the agent (its session id; empty after O(state=stopped) of all).
  returned: always
  type: dict
  sample: {node1-pod-1: 4242}
actions:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: ["stop stale probe agent in pod node1-pod-1 (pid 4240)", "start probe agent in pod node1-pod-1"]
"""

import hashlib
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import probe_agent, procs, workload
from ansible_collections.flatnet.cluster.plugins.module_utils import state as flatnet_state
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode
from ansible_collections.flatnet.cluster.plugins.module_utils.kernel import KernelError, Runner

AGENT_FILE = "agent.py"
RECORD_FILE = "agents.json"
# Set in every agent's environment: an agent of this run_dir, even one that is not recorded.
MARK_ENV = "FLATNET_PROBE_AGENT"

TCP_LISTEN = "0A"


def _listening_ports(pid, proto):
    """Local ports of ``proto`` sockets in the network namespace of ``pid``.

    /proc/PID/net/* shows the namespace of that process, so no setns is needed. For TCP only
    listening sockets count.
    """
    ports = set()
    for suffix in ("", "6"):
        try:
            with open(f"/proc/{pid}/net/{proto}{suffix}", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) < 4:
                        continue
                    if proto == "tcp" and fields[3] != TCP_LISTEN:
                        continue
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def wait_listening(pid, argv, netns, http_port, udp_port, timeout):
    """True once ``pid`` (still our agent) listens on both ports; False if it died or timed out."""
    deadline = time.monotonic() + timeout
    while True:
        if not workload.alive(pid, argv, netns):
            # Just after fork the child may not be in the namespace yet; give it its start.
            if not workload.wait_started(pid, argv, netns, timeout=0.5):
                return False
        if http_port in _listening_ports(pid, "tcp") and udp_port in _listening_ports(pid, "udp"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _log_tail(path, lines=5):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def agent_argv(python, agent_path, pod, http_port, udp_port, lifetime=0):
    argv = [python, agent_path, "--name", pod, "--http-port", str(http_port), "--udp-port", str(udp_port)]
    if lifetime:
        argv += ["--lifetime", f"{lifetime:g}"]
    return argv


def marked_agents(agent_path, snap, netns=None):
    """Processes carrying this run_dir's agent mark (only in the namespaces ``netns``, if given)."""
    found = []
    for p in snap:
        if netns is not None and p["netns"] not in netns:
            continue
        cmd = procs.cmdline(p["pid"])
        if not cmd or agent_path not in cmd:
            continue
        if (procs.environ(p["pid"]) or {}).get(MARK_ENV) == agent_path:
            found.append(dict(p, pod=_name_arg(cmd)))
    return found


def _name_arg(cmd):
    try:
        return cmd[cmd.index("--name") + 1]
    except (ValueError, IndexError):
        return "?"


def remaining_lifetime(ident, argv):
    """Seconds the agent ``ident`` still has to live (None: no limit)."""
    try:
        lifetime = float(argv[argv.index("--lifetime") + 1])
    except (ValueError, IndexError):
        return None
    up = procs.uptime()
    if up is None or not ident or ident.get("start_time") is None:
        return 0.0
    return lifetime - (up - ident["start_time"] / procs.clock_ticks())


def _pids(found):
    return ", ".join(str(p["pid"]) for p in found)


def agents_to_start(p, python, agent_path, agents, idents, trees, pod_ns, stale_code, actions):
    """Which pods get a new agent: ``(to_start [(pod, argv)], to_stop [identity])``; the
    reasons are appended to ``actions``. A running agent is restarted for new ports or
    lifetime, new agent code, a replaced pod namespace or less than half its lifetime left."""
    to_start, to_stop = [], []
    for pod in p["pods"]:
        argv = agent_argv(python, agent_path, pod, p["http_port"], p["udp_port"], p["lifetime"])
        entry = agents.get(pod)
        ident = idents.get(pod) or {}
        if trees.get(pod):
            left = remaining_lifetime(ident, entry["argv"])
            why = None
            if entry["argv"] != argv:
                why = "new ports or lifetime"
            elif stale_code:
                why = "new agent code"
            elif ident.get("netns_inode") != pod_ns[pod]:
                why = "the pod's namespace was replaced"
            elif left is not None and left < p["lifetime"] / 2:
                why = f"{max(left, 0):.0f} s of its lifetime left"
            if why is None:
                continue
            actions.append(f"restart probe agent in pod {pod} (pid {entry['pid']}: {why})")
            to_stop.append(ident)
        else:
            actions.append(f"start probe agent in pod {pod}")
        to_start.append((pod, argv))
    return to_start, to_stop


def start_agents(p, ip_bin, agent_path, record_path, digest, agents, to_start):
    """Start the agents, record each at once, then wait for all to listen; the failures."""
    started, failed = [], []
    for pod, argv in to_start:
        log = os.path.join(p["run_dir"], f"{pod}.log")
        ident = workload.launch(ip_bin, pod, argv, log, env={MARK_ENV: agent_path})
        agents[pod] = {"pid": ident["sid"], "argv": argv, "workload": ident}
        # Recorded before the next one starts, so a later run finds all that were started.
        flatnet_state.save(record_path, {"source_sha256": digest, "agents": agents})
        started.append((pod, ident["sid"], argv, log))
    for pod, pid, argv, log in started:
        if not wait_listening(pid, argv, pod, p["http_port"], p["udp_port"], p["wait_timeout"]):
            failed.append(f"{pod} (pid {pid}): {_log_tail(log) or 'not listening'}")
    return failed


ARGUMENT_SPEC = dict(
    pods=dict(type="list", elements="str", default=[]),
    state=dict(type="str", choices=["started", "stopped"], default="started"),
    http_port=dict(type="int", default=8083),
    udp_port=dict(type="int", default=8081),
    wait_timeout=dict(type="float", default=10.0),
    lifetime=dict(type="float", default=600.0),
    run_dir=dict(type="path", default="/run/flatnet/probe"),
)


def write_agent(run_dir, agent_path, source):
    """The agent's code, replaced whole (a running agent keeps the file it started from)."""
    os.makedirs(run_dir, mode=0o755, exist_ok=True)
    tmp = agent_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(source)
    os.replace(tmp, agent_path)


def run_module():  # noqa: C901 (one decision per pod, in order)
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    p = module.params
    if p["lifetime"] < 0:
        module.fail_json(msg=f"lifetime must be 0 (no limit) or a number of seconds, not {p['lifetime']:g}")
    try:
        ip_bin = Runner(module).bin("ip")
    except KernelError as exc:
        module.fail_json(msg=str(exc))
    run_dir = p["run_dir"]
    agent_path = os.path.join(run_dir, AGENT_FILE)
    record_path = os.path.join(run_dir, RECORD_FILE)
    record = flatnet_state.load_or_fail(module, record_path)
    agents = dict(record.get("agents", {}))
    actions = []
    changed = False

    source = probe_agent.agent_source()
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    snap = procs.snapshot()
    idents = {pod: entry.get("workload") for pod, entry in agents.items()}
    trees = {pod: workload.members(ident, snap) for pod, ident in idents.items()}

    def result():
        return dict(changed=changed, actions=actions, agents={k: v["pid"] for k, v in agents.items()})

    if p["state"] == "stopped":
        names = [pod for pod in (p["pods"] or sorted(agents)) if pod in agents]
        running = [pod for pod in names if trees.get(pod)]
        for pod in running:
            actions.append(f"stop probe agent in pod {pod} (pid {' '.join(map(str, trees[pod]))})")
        if running:
            changed = True
            if not module.check_mode:
                # All at once: TERM to every agent, then one wait (a scan of the process table
                # per agent made stopping 10 agents take seconds).
                workload.stop_trees([idents[pod] for pod in running])
        for pod in names:
            if not module.check_mode:
                _remove(os.path.join(run_dir, f"{pod}.log"))
            agents.pop(pod)
        # Agents not (or no longer) recorded, e.g. started by a run interrupted before it
        # saved its record: their mark says they are ours.
        scope = None if not p["pods"] else {netns_inode(pod) for pod in p["pods"]} - {None}
        tracked = {pid for pids in trees.values() for pid in pids}
        stale = [a for a in marked_agents(agent_path, snap, scope) if a["pid"] not in tracked]
        for pod in sorted({a["pod"] for a in stale}):
            mine = [a for a in stale if a["pod"] == pod]
            actions.append(f"stop stale probe agent in pod {pod} (pid {_pids(mine)})")
        if stale:
            changed = True
            if not module.check_mode:
                workload.stop_procs(stale)
                for pod in {a["pod"] for a in stale} - set(agents):
                    _remove(os.path.join(run_dir, f"{os.path.basename(pod)}.log"))
        leftovers = [f for f in (agent_path, record_path) if os.path.exists(f)]
        if not agents and leftovers:
            actions.append(f"remove {', '.join(leftovers)}")
            changed = True
            if not module.check_mode:
                for f in leftovers:
                    _remove(f)
                flatnet_state.remove_dir_if_empty(run_dir)
        elif agents != record.get("agents", {}) and not module.check_mode:
            flatnet_state.save(record_path, {"source_sha256": digest, "agents": agents})
        module.exit_json(**result())

    pod_ns = {pod: netns_inode(pod) for pod in p["pods"]}
    missing = [pod for pod, ino in pod_ns.items() if ino is None]
    if missing:
        module.fail_json(msg=f"pods without a network namespace on this node: {', '.join(missing)}",
                         missing=missing)

    python = sys.executable or module.get_bin_path("python3", required=True)
    current = flatnet_state.read_text(agent_path)
    stale_code = current != source or record.get("source_sha256") != digest
    if current != source:
        actions.append(f"write {agent_path}")
        changed = True
        if not module.check_mode:
            write_agent(run_dir, agent_path, source)

    # Stale agents first: marked agents in these pods that are not the recorded one. They would
    # hold the ports, and a pod must end up with exactly one agent.
    tracked = {pid for pids in trees.values() for pid in pids}
    stale = [a for a in marked_agents(agent_path, snap, set(pod_ns.values())) if a["pid"] not in tracked]
    for pod in sorted({a["pod"] for a in stale}):
        mine = [a for a in stale if a["pod"] == pod]
        actions.append(f"stop stale probe agent in pod {pod} (pid {_pids(mine)})")
        changed = True
    if stale and not module.check_mode:
        workload.stop_procs(stale)

    to_start, to_stop = agents_to_start(p, python, agent_path, agents, idents, trees, pod_ns, stale_code, actions)
    changed = changed or bool(to_start)

    if to_stop and not module.check_mode:
        # The agents to restart, all in one round (as state=stopped does).
        workload.stop_trees(to_stop)

    failed = []
    if not module.check_mode and to_start:
        failed = start_agents(p, ip_bin, agent_path, record_path, digest, agents, to_start)
    elif not module.check_mode and (record.get("source_sha256") != digest or agents != record.get("agents", {})) \
            and agents:
        flatnet_state.save(record_path, {"source_sha256": digest, "agents": agents})

    if failed:
        module.fail_json(msg="probe agents did not start listening: " + "; ".join(failed), **result())
    module.exit_json(**result())


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main():
    run_module()


if __name__ == "__main__":
    main()
