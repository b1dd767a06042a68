"""`write_batch` / `deferred`: a turn's last Redis writes in one round trip, in order."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from agentplatform.infra.redis import ONE_WRITE_LIMIT, Script, deferred, get_redis, write_batch


def test_outside_a_batch_a_command_runs_at_once(redis_client: redis.Redis) -> None:
    seen: list[Any] = []
    deferred("set", "k", "1", nx=True, then=seen.append)
    assert redis_client.get("k") == b"1" and seen == [True]


def test_a_batch_sends_in_order_at_its_end_and_hands_each_result_back(
    redis_client: redis.Redis,
) -> None:
    seen: list[Any] = []
    with write_batch():
        deferred("set", "k", "first")
        deferred("set", "k", "second", then=seen.append)
        deferred("set", "k", "third", nx=True, then=seen.append)  # k exists by then
        assert redis_client.get("k") is None  # nothing sent yet
        assert seen == []
    assert redis_client.get("k") == b"second"
    assert seen == [True, None]


def test_a_batch_is_sent_when_its_block_raises_and_the_blocks_error_wins(
    redis_client: redis.Redis,
) -> None:
    with pytest.raises(ZeroDivisionError), write_batch():
        deferred("set", "released", "yes")
        raise ZeroDivisionError
    assert redis_client.get("released") == b"yes"


def test_nested_batches_send_once_from_the_outer_block(redis_client: redis.Redis) -> None:
    with write_batch():
        with write_batch():
            deferred("set", "k", "v")
        assert redis_client.get("k") is None
    assert redis_client.get("k") == b"v"


def test_a_script_runs_by_sha_and_reloads_after_redis_forgets_it(
    redis_client: redis.Redis,
) -> None:
    incr = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert incr(["n"], [2]) == 2
    redis_client.script_flush()  # as after a Redis restart
    assert incr(["n"], [3]) == 5


def test_a_failed_command_still_hands_the_others_results_back_then_raises(
    redis_client: redis.Redis,
) -> None:
    # A turn's first batch takes the lease with other commands: when one of them fails, the
    # lease's answer must still be known, so that the turn can give the lease back.
    redis_client.set("not-a-list", "text")
    seen: list[Any] = []
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"), write_batch():
        deferred("lpush", "not-a-list", "x", then=seen.append)
        deferred("set", "lease", "mine", nx=True, then=seen.append)
    assert seen == [True]
    assert redis_client.get("lease") == b"mine"


class _CountingSocket:
    """A connection's socket that counts its writes."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.writes = sock, 0

    def sendall(self, data: Any) -> None:
        self.writes += 1
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.mark.parametrize(("size", "writes"), [(20_000, 1), (ONE_WRITE_LIMIT + 1, 3)])
def test_a_batch_with_a_large_value_goes_in_one_write_up_to_the_limit(
    redis_client: redis.Redis, size: int, writes: int
) -> None:
    # redis-py would write a value over 6,000 bytes on its own (three writes for this
    # batch); the platform's connections join a batch up to ONE_WRITE_LIMIT.
    pool = get_redis().connection_pool
    connection = pool.get_connection()
    connection.connect()
    counting = _CountingSocket(connection._sock)
    connection._sock = counting
    pool.release(connection)
    try:
        with write_batch():
            deferred("set", "small", "1")
            deferred("set", "large", "x" * size)
            deferred("set", "after", "2")
        assert counting.writes == writes
        assert redis_client.mget("small", "after") == [b"1", b"2"]
        assert redis_client.strlen("large") == size
    finally:
        connection._sock = counting.sock
