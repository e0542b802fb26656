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

from ansible_collections.flatnet.cluster.plugins.plugin_utils.ipam import (
    BACKENDS,
    DEFAULT_CLUSTER_CIDR,
    DEFAULT_NODE_PREFIX,
    DEFAULT_NODE_PREFIX_V6,
    DEFAULT_SERVICE_CIDR,
    DEFAULT_VXLAN,
    PlanError,
    build_plan,
)

ARGUMENT_SPEC = {
    "nodes": {"type": "dict", "required": True},
    "cluster_cidr": {"type": "raw", "default": DEFAULT_CLUSTER_CIDR},
    "node_prefix": {"type": "int", "default": DEFAULT_NODE_PREFIX},
    "node_prefix_v6": {"type": "int", "default": DEFAULT_NODE_PREFIX_V6},
    "service_cidr": {"type": "raw", "default": DEFAULT_SERVICE_CIDR},
    "reserved_cidrs": {"type": "list", "elements": "str", "default": []},
    "backend": {"type": "str", "default": "host-gw", "choices": list(BACKENDS)},
    "mtu": {"type": "int"},
    "vxlan": {
        "type": "dict",
        "default": {},
        "options": {
            "vni": {"type": "int", "default": DEFAULT_VXLAN["vni"]},
            "port": {"type": "int", "default": DEFAULT_VXLAN["port"]},
            "device": {"type": "str", "default": DEFAULT_VXLAN["device"]},
        },
    },
    "masquerade": {"type": "bool", "default": True},
    "plan_file": {"type": "path"},
    "inventory_nodes": {"type": "list", "elements": "str"},
}


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
    return write_atomic(path, json.dumps(plan, indent=2, sort_keys=True) + "\n")


def _plain(value):
    """Drop templating wrappers (tagged str/dict types) so the plan is plain JSON data."""
    return json.loads(json.dumps(value))


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
            cached = read_plan_file(plan_file)
            plan = build_plan(
                _plain(args["nodes"]),
                cluster_cidr=_plain(args["cluster_cidr"]),
                node_prefix=args["node_prefix"],
                node_prefix_v6=args["node_prefix_v6"],
                service_cidr=_plain(args["service_cidr"]),
                reserved_cidrs=_plain(args["reserved_cidrs"]),
                backend=args["backend"],
                mtu=args["mtu"],
                vxlan=_plain(args["vxlan"]),
                masquerade=args["masquerade"],
                inventory_nodes=_plain(args["inventory_nodes"]),
                cached=cached,
            )
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

        result.update(
            changed=False,
            ansible_facts={"flatnet_plan": plan},
            plan_file=plan_file,
            plan_file_written=written,
        )
        return result
