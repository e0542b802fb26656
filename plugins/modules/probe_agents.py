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
  - Started agents are recorded (PID and command line) in O(run_dir); only recorded agents
    whose PID, command line and network namespace still match are ever stopped.
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
      - V(started) makes sure an agent runs in each pod of O(pods) (restarting it when the
        ports or the agent code changed). Agents of other pods are left alone.
      - V(stopped) stops the recorded agents of O(pods) (all recorded agents when O(pods) is
        empty) and removes the agent files when none is left.
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
  run_dir:
    description:
      - Directory of the agent file, its record and the agents' logs. For tests.
    type: path
    default: /run/flatnet/probe
attributes:
  check_mode:
    support: full
    description: Reports which agents would be started or stopped.
  diff_mode:
    support: none
    description: Nothing to show as a diff.
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
  description: Running agents after the call, pod name → PID (empty after O(state=stopped) of all).
  returned: always
  type: dict
  sample: {node1-pod-1: 4242}
actions:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
  sample: ["start probe agent in pod node1-pod-1"]
"""

import hashlib
import os
import sys
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.flatnet.cluster.plugins.module_utils import probe_agent, state, workload
from ansible_collections.flatnet.cluster.plugins.module_utils.iproute2 import netns_inode

AGENT_FILE = "agent.py"
RECORD_FILE = "agents.json"

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


def agent_argv(python, agent_path, pod, http_port, udp_port):
    return [python, agent_path, "--name", pod, "--http-port", str(http_port), "--udp-port", str(udp_port)]


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            pods=dict(type="list", elements="str", default=[]),
            state=dict(type="str", choices=["started", "stopped"], default="started"),
            http_port=dict(type="int", default=8083),
            udp_port=dict(type="int", default=8081),
            wait_timeout=dict(type="float", default=10.0),
            run_dir=dict(type="path", default="/run/flatnet/probe"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    ip_bin = module.get_bin_path("ip", required=True)
    run_dir = p["run_dir"]
    agent_path = os.path.join(run_dir, AGENT_FILE)
    record_path = os.path.join(run_dir, RECORD_FILE)
    record = state.load_or_fail(module, record_path)
    agents = dict(record.get("agents", {}))
    actions = []
    changed = False

    source = probe_agent.agent_source()
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()

    if p["state"] == "stopped":
        names = p["pods"] or sorted(agents)
        for pod in names:
            entry = agents.get(pod)
            if entry is None:
                continue
            # The pod may be gone already: then only the command line can tell it is ours.
            netns = pod if netns_inode(pod) is not None else None
            if _running(entry, netns):
                actions.append(f"stop probe agent in pod {pod} (pid {entry['pid']})")
                changed = True
            if not module.check_mode:
                workload.stop(entry["pid"], entry["argv"], netns)
                _remove(os.path.join(run_dir, f"{pod}.log"))
            agents.pop(pod)
        leftovers = [f for f in (agent_path, record_path) if os.path.exists(f)]
        if not agents and leftovers:
            actions.append(f"remove {', '.join(leftovers)}")
            changed = True
            if not module.check_mode:
                for f in leftovers:
                    _remove(f)
                state.remove_dir_if_empty(run_dir)
        elif agents != record.get("agents", {}) and not module.check_mode:
            state.save(record_path, {"source_sha256": digest, "agents": agents})
        module.exit_json(changed=changed, actions=actions, agents={k: v["pid"] for k, v in agents.items()})

    missing = [pod for pod in p["pods"] if netns_inode(pod) is None]
    if missing:
        module.fail_json(msg=f"pods without a network namespace on this node: {', '.join(missing)}",
                         missing=missing)

    python = sys.executable or module.get_bin_path("python3", required=True)
    current = _read(agent_path)
    stale_code = current != source or record.get("source_sha256") != digest
    if current != source:
        actions.append(f"write {agent_path}")
        changed = True
        if not module.check_mode:
            os.makedirs(run_dir, mode=0o755, exist_ok=True)
            tmp = agent_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(source)
            os.replace(tmp, agent_path)

    to_start = []
    for pod in p["pods"]:
        argv = agent_argv(python, agent_path, pod, p["http_port"], p["udp_port"])
        entry = agents.get(pod)
        if entry and workload.alive(entry["pid"], entry["argv"], pod):
            if entry["argv"] == argv and not stale_code:
                continue
            actions.append(f"restart probe agent in pod {pod} (pid {entry['pid']})")
            if not module.check_mode:
                workload.stop(entry["pid"], entry["argv"], pod)
        else:
            actions.append(f"start probe agent in pod {pod}")
        changed = True
        to_start.append((pod, argv))

    failed = []
    if not module.check_mode and to_start:
        started = []
        for pod, argv in to_start:
            log = os.path.join(run_dir, f"{pod}.log")
            pid = workload.start(ip_bin, pod, argv, log)
            agents[pod] = {"pid": pid, "argv": argv}
            started.append((pod, pid, argv, log))
        # Record before waiting, so a later state=stopped finds even an agent that failed to listen.
        state.save(record_path, {"source_sha256": digest, "agents": agents})
        for pod, pid, argv, log in started:
            if not wait_listening(pid, argv, pod, p["http_port"], p["udp_port"], p["wait_timeout"]):
                failed.append(f"{pod} (pid {pid}): {_log_tail(log) or 'not listening'}")
    elif not module.check_mode and record.get("source_sha256") != digest and agents:
        state.save(record_path, {"source_sha256": digest, "agents": agents})

    result = dict(changed=changed, actions=actions, agents={k: v["pid"] for k, v in agents.items()})
    if failed:
        module.fail_json(msg="probe agents did not start listening: " + "; ".join(failed), **result)
    module.exit_json(**result)


def _running(entry, netns):
    if netns is not None:
        return workload.alive(entry["pid"], entry["argv"], netns)
    try:
        with open(f"/proc/{entry['pid']}/cmdline", "rb") as f:
            cmdline = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return False
    return cmdline[-len(entry["argv"]):] == entry["argv"]


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def main():
    run_module()


if __name__ == "__main__":
    main()
