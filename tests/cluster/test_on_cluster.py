"""The platform's own tests of Redis-backed behaviour, run again against the Redis Cluster
(tests/cluster/conftest.py points each test of this package at it): turns over REST and
websockets (streaming, several sockets, resume), leases and the four double-text policies,
throttling, idempotency and erasure, and `make run` with WEB_CONCURRENCY=2 serving the chat
page from each process. The assertions are the originals', unchanged."""

from __future__ import annotations

import pytest
import redis
from django.core.cache import cache

from agentplatform.infra import redis_keys
from tests.agentplatform.test_idempotency import (
    test_a_key_whose_holder_died_is_taken_over,
    test_a_repeated_post_returns_the_first_result_and_does_no_work,
    test_an_in_progress_key_answers_409,
    test_keys_are_per_tenant,
)
from tests.agentplatform.test_throttle_health import (
    test_a_tenant_over_its_rate_gets_429_and_others_do_not,
    test_concurrent_requests_never_overspend_a_budget,
    test_readyz_checks_postgres_and_redis,
    three_per_minute,
)
from tests.agents.test_concurrency import (
    test_a_lease_whose_holder_died_is_recovered_after_expiry,
    test_a_stale_lease_holder_cannot_write,
    test_enqueue_runs_every_message_in_order,
    test_interrupt_keeps_partial_replies_marked_interrupted,
    test_reject_answers_409_to_a_busy_session_and_loses_nothing,
    test_rollback_discards_the_running_turn_but_keeps_its_rows,
)
from tests.agents.test_consumer import (
    test_a_message_streams_tokens_then_the_stored_messages,
    test_a_resent_client_message_id_never_runs_twice,
    test_resume_replays_exactly_the_missed_frames,
    test_two_sockets_and_a_rest_call_see_the_same_conversation,
)
from tests.conftest import Persona
from tests.e2e.conftest import amqp_url, rabbitmq
from tests.e2e.test_make_run_processes import (
    devrun,
    test_make_run_with_two_web_processes_serves_the_chat_page_from_each,
)
from tests.memory.test_erasure import (
    test_erase_removes_the_user_from_every_store_and_nothing_else,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_throttle_key_lives_on_the_cluster(
    alice: Persona, three_per_minute: None, redis_client: redis.Redis
) -> None:
    alice.client().get("/api/v1/agents/")
    assert redis_client.pttl(redis_keys.api_throttle(alice.tenant.pk)) > 0


def test_the_cache_works_on_the_cluster() -> None:
    cache.set_many({"a": 1, "b": [2]}, 30)
    cache.set("c", "three", 30)
    assert cache.get_many(["a", "b", "c", "missing"]) == {"a": 1, "b": [2], "c": "three"}
    cache.delete_many(["a", "b"])
    assert cache.get("a") is None and cache.get("c") == "three"


__all__ = [
    "amqp_url",
    "devrun",
    "rabbitmq",
    "test_a_key_whose_holder_died_is_taken_over",
    "test_a_lease_whose_holder_died_is_recovered_after_expiry",
    "test_a_message_streams_tokens_then_the_stored_messages",
    "test_a_repeated_post_returns_the_first_result_and_does_no_work",
    "test_a_resent_client_message_id_never_runs_twice",
    "test_a_stale_lease_holder_cannot_write",
    "test_a_tenant_over_its_rate_gets_429_and_others_do_not",
    "test_an_in_progress_key_answers_409",
    "test_concurrent_requests_never_overspend_a_budget",
    "test_enqueue_runs_every_message_in_order",
    "test_erase_removes_the_user_from_every_store_and_nothing_else",
    "test_interrupt_keeps_partial_replies_marked_interrupted",
    "test_keys_are_per_tenant",
    "test_make_run_with_two_web_processes_serves_the_chat_page_from_each",
    "test_readyz_checks_postgres_and_redis",
    "test_reject_answers_409_to_a_busy_session_and_loses_nothing",
    "test_resume_replays_exactly_the_missed_frames",
    "test_rollback_discards_the_running_turn_but_keeps_its_rows",
    "test_two_sockets_and_a_rest_call_see_the_same_conversation",
    "three_per_minute",
]
