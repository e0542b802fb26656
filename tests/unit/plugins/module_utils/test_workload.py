# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import os
import signal
import subprocess
import time

from ansible_collections.flatnet.cluster.plugins.module_utils import procs, workload


def test_argv_of():
    assert workload.argv_of(None) is None
    assert workload.argv_of(["sleep", 5]) == ["sleep", "5"]
    assert workload.argv_of("sh -c 'a; b'") == ["sh", "-c", "a; b"]


def test_command_line_matching_survives_path_resolution_and_interpreters():
    argv = ["python3", "-m", "http.server", "8080"]
    assert workload._same_argv(list(argv), argv)
    # A wrapper (a pyenv shim) re-execs the program by its full path.
    assert workload._same_argv(["/root/.pyenv/versions/3.11.7/bin/python3", "-m", "http.server", "8080"], argv)
    # A script started through its shebang gets the interpreter in front.
    assert workload._same_argv(["/usr/bin/python3", "./serve.py", "--port", "1"], ["./serve.py", "--port", "1"])
    # Anything else is another process.
    assert not workload._same_argv(["python3", "-m", "http.server", "8081"], argv)
    assert not workload._same_argv(["/usr/bin/perl", "-m", "http.server", "8080"], argv)
    assert not workload._same_argv(["8080"], argv)
    assert not workload._same_argv(["python3"], [])


# --- process trees, on a fake /proc ------------------------------------------------

NS, OTHER_NS = 4026532613, 4026531840


def fake_proc(root, procs_, boot="boot-1"):
    """Write a /proc tree: {pid: dict(comm, state, ppid, session, start, netns, env)}."""
    (root / "sys" / "kernel" / "random").mkdir(parents=True, exist_ok=True)
    (root / "sys" / "kernel" / "random" / "boot_id").write_text(boot + "\n")
    (root / "uptime").write_text("1000.00 1900.00\n")
    for pid, p in procs_.items():
        d = root / str(pid)
        (d / "ns").mkdir(parents=True, exist_ok=True)
        rest = [p.get("state", "S"), p.get("ppid", 1), p.get("pgid", p["session"]), p["session"]]
        rest += [0] * 15 + [p["start"]] + [0] * 30  # field 22 is the 20th after the name
        (d / "stat").write_text(f"{pid} ({p.get('comm', 'sleep')}) " + " ".join(map(str, rest)) + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in p.get("argv", ["sleep", "600"])) + b"\0")
        (d / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in p.get("env", {}).items()))
        if p.get("netns"):
            os.symlink(f"net:[{p['netns']}]", d / "ns" / "net")
    return str(root)


def ident(**kw):
    return dict({"sid": 100, "start_time": 5000, "boot_id": "boot-1", "netns_inode": NS, "token": "tok"}, **kw)


def test_parse_stat_survives_odd_command_names():
    line = "42 (a) b (c) S 1 40 41 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0 0\n"
    st = procs.parse_stat(line)
    assert st == {"pid": 42, "comm": "a) b (c", "state": "S", "ppid": 1, "pgid": 40, "session": 41,
                  "start_time": 777}
    assert procs.parse_stat("garbage") is None


def test_members_follow_the_session_after_exec_and_fork(tmp_path):
    proc = fake_proc(tmp_path, {
        100: dict(session=100, start=5000, netns=NS, argv=["sleep", "600"]),  # leader, exec'd
        101: dict(session=100, start=5003, netns=NS, ppid=100),  # a forked child
        102: dict(session=100, start=5004, netns=NS, state="Z"),  # a zombie holds nothing
        103: dict(session=100, start=5005, netns=OTHER_NS),  # left the pod's namespace
        200: dict(session=200, start=4000, netns=NS, comm="bash"),  # someone else in the pod
        300: dict(session=300, start=6000, netns=NS, env={workload.TOKEN_ENV: "tok"}),  # setsid'd child
    })
    assert workload.members(ident(), proc=proc) == [100, 101, 300]
    assert [p["pid"] for p in workload.in_netns(NS, proc=proc)] == [100, 101, 200, 300]
    # no token recorded (a 0.1 workload): only the session
    assert workload.members(ident(token=None), proc=proc) == [100, 101]
    # another boot: nothing recorded before it can still run
    assert workload.members(ident(boot_id="boot-0"), proc=proc) == []
    # a record of another namespace, or none
    assert workload.members(ident(netns_inode=OTHER_NS, token=None), proc=proc) == [103]
    assert workload.members(None, proc=proc) == [] and workload.members(ident(sid=None), proc=proc) == []


def test_members_after_the_leader_exited(tmp_path):
    # `sh -c "prog &"`: the leader is gone, the session lives on in its child.
    proc = fake_proc(tmp_path, {101: dict(session=100, start=5003, netns=NS)})
    assert workload.members(ident(token=None), proc=proc) == [101]


def test_a_recycled_leader_pid_is_never_ours(tmp_path):
    # Our tree died; PID 100 now belongs to a newer process that made its own session.
    proc = fake_proc(tmp_path, {
        100: dict(session=100, start=9000, netns=NS),
        101: dict(session=100, start=9001, netns=NS),
        300: dict(session=300, start=9500, netns=NS, env={workload.TOKEN_ENV: "tok"}),
    })
    assert workload.members(ident(), proc=proc) == [300]
    assert workload.members(ident(token=None), proc=proc) == []
    # members of the session that started before our leader cannot be ours either
    proc = fake_proc(tmp_path / "b", {101: dict(session=100, start=4999, netns=NS)})
    assert workload.members(ident(token=None), proc=proc) == []


def test_describe_and_snapshot(tmp_path):
    proc = fake_proc(tmp_path, {7: dict(session=7, start=1, netns=NS, comm="nginx"),
                                8: dict(session=7, start=2, netns=None)})
    assert [p["pid"] for p in procs.snapshot(proc)] == [7]
    assert procs.session_members(7, proc) == [7]
    assert procs.boot_id(proc) == "boot-1" and procs.uptime(proc) == 1000.0
    assert procs.environ(7, proc) == {} and procs.cmdline(7, proc) == ["sleep", "600"]
    assert workload.describe([7, 9], proc) == "7 nginx, 9"


# --- process trees, for real (in this process's own namespace) -----------------------


def _tree(script):
    """A session of its own running ``sh -c script``, and its identity (this netns)."""
    p = subprocess.Popen(["sh", "-c", script], start_new_session=True)  # noqa: S603, S607
    st = procs.stat(p.pid)
    return p, {"sid": p.pid, "start_time": st["start_time"], "boot_id": procs.boot_id(),
               "netns_inode": procs.netns_inode("self"), "token": None}


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_stop_tree_stops_every_process_of_a_forking_shell():
    p, tree = _tree("sleep 60 & sleep 61 & wait")
    try:
        assert _wait_for(lambda: len(workload.members(tree)) == 3)
        pids = workload.members(tree)
        signalled, left = workload.stop_tree(tree, grace=2)
        assert signalled == pids and left == []
        assert workload.members(tree) == []
        assert p.wait(timeout=5) is not None
    finally:
        for pid in workload.members(tree):
            os.kill(pid, signal.SIGKILL)


def test_stop_tree_kills_what_ignores_term():
    # An ignored signal stays ignored across fork and exec: both processes ignore TERM.
    p, tree = _tree("trap '' TERM; sleep 60 & wait")
    try:
        assert _wait_for(lambda: len(workload.members(tree)) == 2)
        start = time.monotonic()
        signalled, left = workload.stop_tree(tree, grace=0.3)
        assert len(signalled) == 2 and left == []
        assert time.monotonic() - start >= 0.3
        assert p.wait(timeout=5) is not None  # (reaped by stop_tree or here)
    finally:
        for pid in workload.members(tree):
            os.kill(pid, signal.SIGKILL)


def test_stop_trees_stops_several_trees_in_one_round_and_leaves_others():
    trees = [_tree("sleep 60 & wait") for _n in range(3)]
    other, other_tree = _tree("sleep 62 & wait")
    try:
        assert _wait_for(lambda: all(len(workload.members(t)) == 2 for _p, t in trees + [(other, other_tree)]))
        pids = sorted(pid for _p, t in trees[:2] for pid in workload.members(t))
        signalled, left = workload.stop_trees([trees[0][1], None, trees[1][1]], grace=2)
        assert signalled == pids and left == []
        assert workload.members(trees[0][1]) == [] and workload.members(trees[1][1]) == []
        assert len(workload.members(trees[2][1])) == 2 and len(workload.members(other_tree)) == 2
        assert workload.stop_trees([]) == ([], [])
    finally:
        for _p, t in trees + [(other, other_tree)]:
            for pid in workload.members(t):
                os.kill(pid, signal.SIGKILL)
        for p, _t in trees + [(other, other_tree)]:
            p.wait(timeout=5)


def test_stop_netns_never_touches_the_callers_namespace():
    assert workload.stop_netns(procs.netns_inode("self")) == ([], [])
    assert workload.stop_netns(None) == ([], [])


def test_a_process_with_another_start_time_is_never_signalled():
    p = subprocess.Popen(["sleep", "60"])  # noqa: S603, S607
    try:
        st = procs.stat(p.pid)
        assert not workload._send(dict(st, start_time=st["start_time"] + 1), signal.SIGKILL)
        assert p.poll() is None
        assert workload._send(st, signal.SIGKILL)
        assert p.wait(timeout=5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
