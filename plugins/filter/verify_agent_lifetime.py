# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: verify_agent_lifetime
author: flatnet maintainers (@flatnet)
version_added: 0.2.0
short_description: How long the verification's probe agents live, derived from the plan
description:
  - The lifetime to give M(flatnet.cluster.probe_agents), so that agents of a play that never
    reaches its stop task exit by themselves. Unless O(lifetime) is given - every probe of the
    busiest node timing out (an HTTP probe is two requests, O(workers) at a time), and again in
    the retry round (at most 5 x O(timeout) per probe), plus 600 seconds.
options:
  _input:
    description: The plan, C(flatnet_plan).
    type: dict
    required: true
  workers:
    description: Probes running at the same time on one node (C(flatnet_verify_workers)).
    type: int
    required: true
  timeout:
    description: Seconds each single probe may take (C(flatnet_verify_timeout)).
    type: float
    required: true
  retries:
    description: Whether a failed probe runs once more, V(0) or V(1) (C(flatnet_verify_retries)).
    type: int
    required: true
  lifetime:
    description: The lifetime to use instead (C(flatnet_verify_agent_lifetime)); V(null) computes it.
    type: float
seealso:
  - module: flatnet.cluster.probe_agents
"""

EXAMPLES = r"""
- name: Start the probe agents in this node's pods
  flatnet.cluster.probe_agents:
    pods: "{{ flatnet_plan.nodes[inventory_hostname].pods | map(attribute='name') | list }}"
    state: started
    lifetime: "{{ flatnet_plan | flatnet.cluster.verify_agent_lifetime(workers=32, timeout=2, retries=1) }}"
"""

RETURN = r"""
_value:
  description: Seconds.
  type: float
  sample: 1048.0
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.flatnet.cluster.plugins.plugin_utils.verify_inputs import VerifyInputError, agent_lifetime


def _verify_agent_lifetime(plan, workers, timeout, retries, lifetime=None):
    try:
        return agent_lifetime(plan, workers, timeout, retries, lifetime)
    except (VerifyInputError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise AnsibleFilterError(f"verify_agent_lifetime: {exc}") from None


class FilterModule:
    def filters(self):
        return {"verify_agent_lifetime": _verify_agent_lifetime}
