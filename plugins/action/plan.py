# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin flatnet.cluster.plan: plan pod addresses on the controller.

Nothing runs on the managed hosts. The documentation lives in plugins/modules/plan.py.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.action import ActionBase

from ansible_collections.flatnet.cluster.plugins.module_utils.state import write_atomic
from ansible_collections.flatnet.cluster.plugins.plugin_utils.bgp_plan import check_bgp

from ansible_collections.flatnet.cluster.plugins.plugin_utils.services_plan import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_NODE_PORT_RANGE,
    plan_services,
    prepare,
)
from ansible_collections.flatnet.cluster.plugins.plugin_utils.cluster_plan import build_plan, plan_json
from ansible_collections.flatnet.cluster.plugins.plugin_utils.plan_inputs import (
    DEFAULT_BRIDGE,
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_NODE_PREFIX,
    DEFAULT_NODE_PREFIX_V6,
    DEFAULT_SERVICE_CIDR,
    DEFAULT_VXLAN,
    PlanError,
    check_cluster_name,
    check_group,
)

# Options whose values the planner checks itself are "raw" here: its messages name the role
# variable (flatnet_*) the value came from, and a type conversion here would hide what was
# written (True as 1, "1e3" as an error naming the option instead of the variable).
ARGUMENT_SPEC = {
    "nodes": {"type": "dict", "required": True},
    "cluster_cidr": {"type": "raw", "default": DEFAULT_CLUSTER_CIDR},
    "node_prefix": {"type": "raw", "default": DEFAULT_NODE_PREFIX},
    "node_prefix_v6": {"type": "raw", "default": DEFAULT_NODE_PREFIX_V6},
    "service_cidr": {"type": "raw", "default": DEFAULT_SERVICE_CIDR},
    "reserved_cidrs": {"type": "raw", "default": []},
    "backend": {"type": "raw", "default": "host-gw"},
    "mtu": {"type": "raw"},
    "vxlan": {
        "type": "dict",
        "default": {},
        "options": {
            "vni": {"type": "raw", "default": DEFAULT_VXLAN["vni"]},
            "port": {"type": "raw", "default": DEFAULT_VXLAN["port"]},
            "device": {"type": "raw", "default": DEFAULT_VXLAN["device"]},
        },
    },
    "masquerade": {"type": "raw", "default": True},
    # The bgp backend (plugin_utils/bgp_plan.py): checked after the plan is built, before any change.
    "bgp": {"type": "raw", "default": {}},
    "bridge": {"type": "raw", "default": DEFAULT_BRIDGE},
    "pods_per_node": {"type": "raw", "default": 0},
    "cni": {"type": "raw", "default": False},
    "cni_range": {"type": "raw"},
    "cluster_name": {"type": "raw"},
    "group": {"type": "raw"},
    "plan_file": {"type": "raw"},
    "as_fact": {"type": "bool", "default": True},
    "inventory_nodes": {"type": "list", "elements": "str"},
    # Services (plugin_utils/services_plan.py): checked and allocated here too, before any change.
    "services": {"type": "raw", "default": []},
    "node_port_range": {"type": "raw", "default": DEFAULT_NODE_PORT_RANGE},
    "dns_replicas": {"type": "raw", "default": 0},
    "cluster_domain": {"type": "raw", "default": DEFAULT_CLUSTER_DOMAIN},
}


def check_plan_file(path) -> str | None:
    """The plan file path: None, or a string that can name a file (``~`` expanded)."""
    if path is None or path == "":
        return None
    if not isinstance(path, str) or "\0" in path or "\n" in path:
        raise PlanError(
            f"flatnet_plan_file {path!r} is not a usable file path (it must be a string without NUL "
            "or newline characters); set it to a path such as ~/cluster/.flatnet/flatnet-plan.json, or null"
        )
    path = os.path.expanduser(os.path.expandvars(path))
    if path.endswith(os.sep) or os.path.isdir(path):
        raise PlanError(
            f"flatnet_plan_file {path} is a directory; give the path of a file in it, e.g. "
            f"{os.path.join(path, 'flatnet-plan.json')}"
        )
    return path


def read_plan_file(path: str | None) -> dict | None:
    """The cached plan, or None when there is none yet."""
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise PlanError(
            f"cannot read the cached plan {path} ({exc}); fix or delete it — the nodes' own "
            "records keep their blocks, only nodes outside this play lose theirs"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes", {}), dict):
        raise PlanError(f"the cached plan {path} is not a flatnet plan (no 'nodes' mapping); fix or delete it")
    return data


def write_plan_file(path: str, plan: dict) -> bool:
    """Write the plan atomically; return whether the file content changed."""
    return write_atomic(path, plan_json(plan))


def _plain(value):
    """Drop templating wrappers (tagged str/dict types) so the plan is plain JSON data."""
    return json.loads(json.dumps(value, default=str))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp

        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)[1]
        plan_file = args["plan_file"]
        try:
            if args["cluster_name"] is not None:
                check_cluster_name(_plain(args["cluster_name"]))
            if args["group"] is not None:
                check_group(_plain(args["group"]))
            plan_file = check_plan_file(_plain(plan_file))
            cached = read_plan_file(plan_file)
            nodes = _plain(args["nodes"])
            if not isinstance(nodes, dict):
                raise PlanError(f"nodes {nodes!r} is not a mapping of node name to its request")
            # DNS pods go to the nodes in turn: those of the play and those the cache keeps.
            inventory = set(_plain(args["inventory_nodes"]) or []) | set(nodes)
            cached_nodes = (cached or {}).get("nodes") or {}
            candidates = sorted(set(nodes) | {n for n in cached_nodes if n in inventory})
            prepared = prepare(nodes, _plain(args["services"]), _plain(args["service_cidr"]),
                               _plain(args["node_port_range"]), _plain(args["dns_replicas"]),
                               _plain(args["cluster_domain"]), candidates)
            plan = build_plan(
                nodes,
                cluster_cidr=_plain(args["cluster_cidr"]),
                node_prefix=_plain(args["node_prefix"]),
                node_prefix_v6=_plain(args["node_prefix_v6"]),
                service_cidr=_plain(args["service_cidr"]),
                reserved_cidrs=_plain(args["reserved_cidrs"]),
                backend=_plain(args["backend"]),
                mtu=_plain(args["mtu"]),
                vxlan=_plain(args["vxlan"]),
                masquerade=_plain(args["masquerade"]),
                inventory_nodes=_plain(args["inventory_nodes"]),
                cached=cached,
                bridge=_plain(args["bridge"]),
                pods_per_node=_plain(args["pods_per_node"]),
                cni=_plain(args["cni"]),
                cni_range=_plain(args["cni_range"]),
            )
            plan_services(plan, nodes, _plain(args["services"]), _plain(args["node_port_range"]), cached,
                          prepared)
            if plan.get("backend") == "bgp":
                plan["bgp"] = check_bgp(_plain(args["bgp"]), plan)
        except PlanError as exc:
            result.update(failed=True, changed=False, msg=str(exc))
            return result

        written = False
        if plan_file and not self._task.check_mode:
            try:
                written = write_plan_file(plan_file, plan)
            except OSError as exc:
                result.update(failed=True, changed=False,
                              msg=f"cannot write the plan file {plan_file} ({exc}); fix its directory "
                                  "permissions or set plan_file to null")
                return result

        result.update(changed=False, plan_file=plan_file, plan_file_written=written)
        if args["as_fact"]:
            result["ansible_facts"] = {"flatnet_plan": plan}
        else:
            # Ansible deep-copies every fact of a host for every task and host it runs: a
            # 100-node plan as a fact made the controller, not the nodes, the bottleneck.
            result["plan"] = plan
        return result
