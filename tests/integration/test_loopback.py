"""raybench's own local cluster listens on 127.0.0.1 only (a laptop must not expose Ray).

Sockets are read from /proc (Linux): every TCP socket in LISTEN state that belongs to the
driver or any process below it (GCS, raylet, dashboard, workers) must be on loopback.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from raybench import cluster
    cluster.connect(None)
    print(json.dumps({"pid": os.getpid(), "env": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}), flush=True)
    sys.stdin.readline()  # the test inspects the sockets now
    cluster.disconnect()
    """
)
LISTEN = "0A"


def descendants(root: int) -> set[int]:
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        frontier.extend(kids)
    return found


def socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def listening(inodes: set[str]) -> list[tuple[str, int]]:
    out = []
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(path).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != LISTEN or cols[9] not in inodes:
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints the address as host-order 32-bit words
            words = struct.unpack("<" + "I" * (len(raw) // 4), raw)
            ip = socket.inet_ntop(family, struct.pack(">" + "I" * len(words), *words))
            out.append((ip, int(hex_port, 16)))
    return out


def test_local_cluster_binds_every_socket_to_loopback():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        report = json.loads(proc.stdout.readline())
        assert report["env"] == "0"  # raybench set it itself, before Ray was imported
        sockets = listening(socket_inodes(descendants(report["pid"])))
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=60)
    assert len(sockets) >= 3, sockets  # GCS, raylet, dashboard at least
    assert exposed(sockets) == [], f"Ray sockets listening beyond loopback: {exposed(sockets)}"


def exposed(sockets: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [s for s in sockets if s[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]


def test_the_socket_reader_sees_a_wildcard_listener():
    """The check above can fail: a socket on all interfaces is reported as exposed."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        sockets = listening(socket_inodes({os.getpid()}))
    assert exposed(sockets) == [("0.0.0.0", port)]
