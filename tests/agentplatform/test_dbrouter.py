"""The router's rules that need no replica running (tests/agentplatform/test_replica.py
has those that do)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import router

from agentplatform.core.dbrouter import REPLICA, read_alias, reads_may_lag
from agentplatform.project.databases import replica_database
from agentplatform.project.env import ConfigError
from agents.models import Agent
from tests.conftest import Persona

PRIMARY = {
    "ENGINE": "agentplatform.core.dbbackend",
    "USER": "agentplatform_app",
    "PASSWORD": "secret",
    "HOST": "primary.internal",
    "PORT": 5432,
    "NAME": "agentplatform",
    "OPTIONS": {"pool": {"min_size": 2, "max_size": 20, "timeout": 5}},
    "TEST": {"NAME": None},
}


def test_without_a_replica_lag_tolerant_reads_stay_on_the_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(settings.DATABASES, REPLICA, raising=False)
    with reads_may_lag():
        assert read_alias() == "default"
        assert router.db_for_read(Agent) == "default"


@pytest.mark.django_db
def test_a_row_read_from_one_alias_may_be_related_to_a_row_of_the_other(alice: Persona) -> None:
    alice.agent._state.db = REPLICA  # as if listed from the replica
    assert router.allow_relation(alice.agent, alice.session)
    assert router.db_for_write(Agent, instance=alice.agent) == "default"


def test_the_replica_takes_the_primarys_settings_and_mirrors_its_test_database() -> None:
    replica = replica_database(
        PRIMARY, "postgresql://agentplatform_app:secret@standby.internal:5433/agentplatform"
    )
    assert (replica["HOST"], replica["PORT"]) == ("standby.internal", 5433)
    assert replica["ENGINE"] == PRIMARY["ENGINE"] and replica["OPTIONS"] == PRIMARY["OPTIONS"]
    assert replica["TEST"]["MIRROR"] == "default"
    assert PRIMARY["HOST"] == "primary.internal"  # the primary's settings are not touched


def test_a_replica_url_with_another_role_is_refused() -> None:
    with pytest.raises(ConfigError, match="DATABASE_REPLICA_URL must connect as"):
        replica_database(PRIMARY, "postgresql://postgres@standby.internal/agentplatform")
