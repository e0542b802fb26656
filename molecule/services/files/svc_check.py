# SPDX-License-Identifier: GPL-3.0-or-later
"""Service checks run inside a pod (ip netns exec), on a node's host network or outside.

argv[1] is a JSON list of checks; prints a JSON list of failures (empty: all passed).
  {"http": "IP", "port": 80, "count": 30, "names": [...] (all must answer, none else),
   "client": "IP" (what every endpoint must see), "self": "pod" (hairpin: that endpoint must
   NOT see the client address), "not_client": "IP", "one": true (affinity: one endpoint)}
  {"http": "IP", "port": 80, "refused": true}   refused (RST / unreachable) in under 1 s
  {"resolve": "name", "to": "IP"}
"""
import json
import socket
import sys
import time
import urllib.request


def get(host, port, timeout=2.0):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=timeout) as reply:
            return json.loads(reply.read()), time.monotonic() - start
    except Exception as exc:  # pylint: disable=broad-except
        return {"error": repr(getattr(exc, "reason", exc))}, time.monotonic() - start


def run(check):
    where = json.dumps(check)
    if "resolve" in check:
        try:
            got = socket.gethostbyname(check["resolve"])
        except OSError as exc:
            return [f"{where}: {exc}"]
        return [] if got == check["to"] else [f"{where}: resolved to {got}"]
    if check.get("refused"):
        reply, seconds = get(check["http"], check["port"], 3.0)
        if "error" not in reply or "refused" not in reply["error"].lower() or seconds >= 1.0:
            return [f"{where}: {reply} after {seconds:.2f}s, not refused in under 1 s"]
        return []
    failures, seen = [], set()
    for _request in range(check.get("count", 1)):
        reply, _seconds = get(check["http"], check["port"])
        if "error" in reply:
            failures.append(f"{where}: {reply['error']}")
            continue
        seen.add(reply["name"])
        if check.get("self") == reply["name"]:
            if reply["client_ip"] == check.get("client"):
                failures.append(f"{where}: hairpin reply from {reply['name']} kept the client address")
        elif check.get("client") and reply["client_ip"] != check["client"]:
            failures.append(f"{where}: {reply['name']} saw {reply['client_ip']}")
        if check.get("not_client") and reply["client_ip"] == check["not_client"]:
            failures.append(f"{where}: {reply['name']} saw the outside address (no masquerade)")
    if "names" in check and seen != set(check["names"]):
        failures.append(f"{where}: endpoints reached {sorted(seen)}")
    if check.get("one") and len(seen) != 1:
        failures.append(f"{where}: affinity broken, reached {sorted(seen)}")
    return failures[:5]


print(json.dumps([f for check in json.loads(sys.argv[1]) for f in run(check)]))
