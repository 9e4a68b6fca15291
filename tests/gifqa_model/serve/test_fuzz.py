"""Schemathesis against the running server's own OpenAPI: every operation, valid and invalid
generated inputs (bounded per operation), zero 5xx, and 2xx bodies that match their schema."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance


def test_no_input_makes_the_server_fail(live_server) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = {
        "POST /v1/answer",
        "POST /v1/answer:batch",
        "GET /v1/search",
        "POST /v1/frames",
        "GET /v1/samples/{n}.gif",
    }
    assert fuzzed <= {op.label for op in operations}
    failures: list[str] = []
    calls: Counter[str] = Counter()

    def fuzzer(label: str, strategy):
        @given(case=strategy)
        # derandomized: the same inputs every run, so the suite never fails by chance
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            calls[label] += 1
            response = case.call(timeout=30)
            if response.status_code >= 500:
                failures.append(f"{label} → {response.status_code}: {response.text[:200]}")
            elif response.status_code < 300:
                case.validate_response(response, checks=[response_schema_conformance])

        return fuzz

    for op in operations:
        for mode in GenerationMode:
            try:
                fuzzer(op.label, op.as_strategy(generation_mode=mode))()
            except Unsatisfiable:  # an operation without inputs has no invalid ones
                assert mode is GenerationMode.NEGATIVE, op.label
    assert not failures, failures
    assert all(calls[label] >= 20 for label in fuzzed), calls  # the fuzz really ran
