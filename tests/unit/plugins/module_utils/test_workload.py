# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import subprocess
import sys
import time

from ansible_collections.flatnet.cluster.plugins.module_utils import workload


def test_argv_of():
    assert workload.argv_of(None) is None
    assert workload.argv_of(["sleep", 5]) == ["sleep", "5"]
    assert workload.argv_of("sh -c 'a; b'") == ["sh", "-c", "a; b"]


def test_running_in_and_stop_check_the_recorded_process():
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    proc = subprocess.Popen(argv)
    try:
        ino = workload.ns_inode_of(proc.pid)
        deadline = time.monotonic() + 5
        while not workload.running_in(proc.pid, argv, ino) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd
        assert workload.running_in(proc.pid, argv, ino)
        # another command line or another namespace: not ours, never signalled
        assert not workload.running_in(proc.pid, ["sleep", "60"], ino)
        assert not workload.running_in(proc.pid, argv, ino + 1)
        assert not workload.stop(proc.pid, ["sleep", "60"])
        assert not workload.stop(proc.pid, argv, ns_inode=ino + 1)
        assert proc.poll() is None
        assert workload.stop(proc.pid, argv, ns_inode=ino)
        assert proc.wait(timeout=5) is not None
        assert not workload.running_in(proc.pid, argv, ino)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
