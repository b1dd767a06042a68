"""A Redis Cluster on loopback from Debian's redis-server: 3 primaries, each with a replica.

Used by tests/cluster (one per test session) and bench/scale.py:

    cluster = LocalCluster(directory).start()
    cluster.url      # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...
    cluster.kill_primary()  # SIGKILL one primary; cluster.wait_failover() until its
    cluster.stop()          # replica serves its slots

Every node has its own data directory, log, client port and cluster-bus port (chosen free,
not port + 10000, which could pass 65535), no persistence, and a short node timeout so a
dead primary's replica takes over within a few seconds. Only the processes started here are
ever signalled.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from agentplatform.devtools.testing import free_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def available() -> bool:
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


class LocalCluster:
    def __init__(self, directory: Path | str, *, primaries: int = 3, replicas: int = 1) -> None:
        self.directory = Path(directory)
        self.primaries_count, self.replicas = primaries, replicas
        self.ports: list[int] = []
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.bus_ports: dict[int, int] = {}  # kept, so a restarted node keeps its own

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self) -> LocalCluster:
        count = self.primaries_count * (1 + self.replicas)
        self.ports = [free_port() for _ in range(count)]
        for port in self.ports:
            self._start_node(port)
        for port in self.ports:
            wait_until(lambda port=port: self._pings(port), what=f"redis-server on {port}")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas",
             str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def _start_node(self, port: int) -> None:
        home = self.directory / str(port)
        home.mkdir(parents=True, exist_ok=True)
        bus_port = self.bus_ports.setdefault(port, free_port())
        self.processes[port] = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", str(home / "nodes.conf"),
             "--cluster-port", str(bus_port), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
             # A replica may take over however long it was cut off from its primary.
             "--cluster-replica-validity-factor", "0",
             "--dir", str(home), "--save", "", "--appendonly", "no",
             "--logfile", str(home / "redis.log"), "--daemonize", "no"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def _pings(self, port: int) -> bool:
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def _info(self, port: int) -> dict[str, str]:
        with redis.Redis(port=port, socket_connect_timeout=0.5, socket_timeout=2) as client:
            info = client.execute_command("CLUSTER INFO")  # parsed by redis-py
        return {str(name): str(value) for name, value in info.items()}

    def _ok(self) -> bool:
        try:
            return all(
                self._info(port).get("cluster_state") == "ok"
                and self._info(port).get("cluster_known_nodes") == str(len(self.ports))
                for port in self.live_ports()
            )
        except redis.RedisError:
            return False

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node sees the whole cluster and every slot served."""
        wait_until(self._ok, what="cluster_state:ok on every node", timeout=timeout)

    def live_ports(self) -> list[int]:
        return [port for port, process in self.processes.items() if process.poll() is None]

    def primaries(self) -> list[int]:
        """Ports of the live nodes that are primaries now."""
        live = []
        for port in self.live_ports():
            with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                if client.execute_command("ROLE")[0] in (b"master", "master"):
                    live.append(port)
        return live

    def kill_primary(self, port: int | None = None) -> int:
        """SIGKILL a primary (the first one, unless `port` is given), as in a crash."""
        port = port or self.primaries()[0]
        process = self.processes[port]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return port

    def wait_failover(self, dead: int, timeout: float = 30) -> None:
        """Until the live nodes serve every slot again, without the dead primary."""

        def recovered() -> bool:
            try:
                return len(self.primaries()) == self.primaries_count and all(
                    self._info(port).get("cluster_state") == "ok" for port in self.live_ports()
                )
            except redis.RedisError:
                return False

        wait_until(recovered, what=f"a replica to take over from {dead}", timeout=timeout)

    def restart(self, port: int) -> None:
        """Start a killed node again: it rejoins (from its nodes.conf) as a replica."""
        self._start_node(port)
        wait_until(lambda: self._pings(port), what=f"redis-server on {port}")
        self.wait_ok()

    def flush(self) -> None:
        for port in self.primaries():
            with redis.Redis(port=port) as client:
                client.flushall()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
