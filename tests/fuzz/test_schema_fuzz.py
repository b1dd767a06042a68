"""API fuzzing: schemathesis generates requests for every operation of /api/v1/schema/ and
sends them, with a valid key, to the application in-process. No answer may be a 5xx, and
every documented answer must match the schema. Bounded: a few examples per operation."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from agents.llm.scripted import scripted_backend
from tests.conftest import make_persona

EXAMPLES = 12

schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", get_wsgi_application())


@pytest.fixture
def api_key(transactional_db: None) -> str:
    scripted_backend.reset()
    return make_persona("fuzz").api_key


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
def test_every_operation_answers_within_its_schema(case: schemathesis.Case, api_key: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {api_key}"},
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance],
    )
