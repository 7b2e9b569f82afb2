"""The swap's drain guard (PortGuard, module_utils/deploykit_host.py), on real sockets in a network namespace of
the test's own (where net.ipv4.tcp_migrate_req=1 can be set as on the hosts, without touching this machine's).

When the app's listener closes while the guard holds the port, then clients connecting meanwhile are not
refused, and once a listener of the app is back and the guard closed, every one of them is accepted by it with
the bytes it sent. While the app listens beside the guard, the guard's rotation hands connections on to it.
The app's sockets belong to another uid than the test's, as in the containers: the guard must take it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# the module_utils file the swap takes the guard from, loaded by the check script as it is (standard library only)
SOURCES = f"{ROOT / 'module_utils' / 'deploykit_host.py'}"
CHECK = textwrap.dedent("""
    import importlib.util, os, socket, sys, time
    spec = importlib.util.spec_from_file_location("deploykit_host", sys.argv[1])
    host = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host)
    UID, PORT, CLIENTS = 10001, 18000, 20

    def app_listener():
        os.seteuid(UID)
        try:
            return host.PortGuard.listen(socket.AF_INET, "127.0.0.1", PORT, 128)
        finally:
            os.seteuid(0)

    def clients():
        found = []
        for number in range(CLIENTS):
            client = socket.create_connection(("127.0.0.1", PORT), timeout=2)  # refused: ConnectionRefusedError
            client.sendall(b"request %d" % number)
            found.append(client)
        return found

    def accepted(listener, seconds):
        listener.settimeout(0.1)
        got, deadline = set(), time.monotonic() + seconds
        while len(got) < CLIENTS and time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            got.add(conn.recv(64))
            conn.close()
        return got

    expected = set(b"request %d" % n for n in range(CLIENTS))
    # made during the gate, a guard is bound and takes nothing: with no other listener, a connection is refused
    bound = host.PortGuard("127.0.0.1", PORT, UID, period=0.05)
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=1)
        raise AssertionError("a guard that was not started accepted a connection")
    except ConnectionRefusedError:
        pass
    bound.close()
    # the new container dies while the old one drains: nobody but the guard listens
    new = app_listener()
    guard = host.PortGuard("127.0.0.1", PORT, UID, period=0.05)
    guard.start()
    new.close()
    waiting = clients()
    time.sleep(0.3)  # several rotations of the guard: nothing may be lost between its listeners
    old = app_listener()  # the old release listens again
    guard.close()
    assert accepted(old, 3) == expected, "after the guard closed"
    # the new container lives beside the guard: the rotation hands the guard's share on to it
    guard = host.PortGuard("127.0.0.1", PORT, UID, period=0.05)
    guard.start()
    waiting += clients()
    assert accepted(old, 3) == expected, "while the guard rotates"
    guard.close()
    guard.close()  # idempotent
    print("ok")
""")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_the_guard_holds_the_port_and_hands_every_connection_on():
    script = ("ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && "
              f"{sys.executable} -c \"$CHECK\" {SOURCES}")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], env={**os.environ, "CHECK": CHECK},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_without_a_guard_the_same_death_refuses_connections():
    """The control: the same sequence with no guard loses the connections (so the test above can fail)."""
    control = CHECK.replace('guard = host.PortGuard("127.0.0.1", PORT, UID, period=0.05)\nguard.start()\nnew.close()',
                            'new.close()')
    assert control != CHECK
    script = ("ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=1 && "
              f"{sys.executable} -c \"$CHECK\" {SOURCES}")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], env={**os.environ, "CHECK": control},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "ConnectionRefusedError" in result.stderr
