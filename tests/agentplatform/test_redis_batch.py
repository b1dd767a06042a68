"""`write_batch` / `deferred`: a turn's last Redis writes in one round trip, in order."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from agentplatform.infra.redis import Script, deferred, write_batch


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
