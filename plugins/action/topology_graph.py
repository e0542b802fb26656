# SPDX-License-Identifier: GPL-3.0-or-later
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin flatnet.cluster.topology_graph: the picture of the cluster, drawn on the controller.

Nothing runs on the managed hosts. The documentation lives in plugins/modules/topology_graph.py;
the model and the DOT text come from the pure functions of plugins/plugin_utils/topology_picture.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible_collections.flatnet.cluster.plugins.module_utils.state import write_atomic
from ansible_collections.flatnet.cluster.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.flatnet.cluster.plugins.plugin_utils import topology_picture as topo

ARGUMENT_SPEC = {
    "states": {"type": "dict"},
    "hosts": {"type": "list", "elements": "str"},
    "state_var": {"type": "str", "default": "flatnet_topology"},
    "plan": {"type": "dict"},
    "title": {"type": "str", "default": ""},
    "svg_path": {"type": "path"},
    "dot_path": {"type": "path"},
    "pod_limit": {"type": "int", "default": 20},
    "preflight": {"type": "bool", "default": False},
}

MISSING_DOT = ("Graphviz 'dot' was not found on the controller (PATH: {path}): install the graphviz "
               "package (apt-get install graphviz) to draw the topology")


def dot_binary():
    return shutil.which("dot")


def collect(args, task_vars):
    """``{host: topology or None}`` from the ``states`` option, else each host's ``state_var``."""
    if args.get("states") is not None:
        return dict(args["states"])
    hostvars = task_vars.get("hostvars", {})
    hosts = args.get("hosts") or task_vars.get("ansible_play_hosts_all") or []
    out = {}
    for host in hosts:
        value = hostvars.get(host, {}).get(args["state_var"])
        out[host] = value if isinstance(value, dict) else None
    return out


def render_svg(dot, text):
    proc = subprocess.run([dot, "-Tsvg"], input=text.encode("utf-8"), capture_output=True, check=False,
                          env=dict(os.environ, LC_ALL="C"))
    if proc.returncode != 0:
        raise RuntimeError(f"dot -Tsvg failed (rc={proc.returncode}): {proc.stderr.decode('utf-8', 'replace').strip()}")
    return proc.stdout.decode("utf-8")


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def run_on_controller(self, result, args, task_vars):
        dot = dot_binary()
        for key in ("svg_path", "dot_path"):
            path = args.get(key)
            if path is not None and (not path or "\0" in path or "\n" in path or os.path.isdir(path)):
                return dict(result, failed=True, msg=f"{key} {path!r} is not a file path (a directory, empty, "
                                                     "or holding a newline)")
        if args["pod_limit"] < 0:
            return dict(result, failed=True, msg=f"pod_limit {args['pod_limit']!r} must be 0 or more")
        if args.get("svg_path") and dot is None:
            return dict(result, failed=True, msg=MISSING_DOT.format(path=os.environ.get("PATH", "")))
        if args["preflight"]:
            return dict(result, changed=False, dot=dot, msg=f"Graphviz dot: {dot}")
        states = collect(args, task_vars)
        model = topo.build(states, args.get("plan"), args["pod_limit"])
        text = topo.to_dot(model, args["title"])
        changed = False
        if args.get("dot_path"):
            changed |= write_atomic(args["dot_path"], text)
        if args.get("svg_path"):
            try:
                svg = render_svg(dot, text)
            except RuntimeError as exc:
                return dict(result, failed=True, msg=str(exc))
            changed |= write_atomic(args["svg_path"], svg)
        drift = [f"{d['node']}: {d['what']}" for d in model["drift"]]
        result.update(changed=changed, dot=text, drift=drift, summary=model["summary"],
                      paths=model["paths"], router=model["router"],
                      svg_path=args.get("svg_path"), dot_path=args.get("dot_path"),
                      msg=(f"{len(drift)} differences from the plan" if drift else "no drift from the plan"))
        return result
