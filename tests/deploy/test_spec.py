"""The deployment spec: every refusal names its field; the published schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servion.deploy import DeploymentSpec, json_schema, parse_spec, policy_of
from servion.deploy.spec import spec_from_dict
from servion.errors import InvalidInput
from servion.routing import PayloadLogPolicy

GOOD = """
endpoint: fraud
environment: production
models:
  - {model: fraud, version: v1.2.0, weight: 90}
  - {model: fraud, version: v1.3.0, weight: 10}
sticky: {header: X-User-Id}
"""


def test_a_good_spec_round_trips() -> None:
    spec = parse_spec(GOOD)
    assert spec.endpoint == "fraud" and spec.environment == "production"
    assert [a.label for a in spec.models] == ["fraud:v1.2.0", "fraud:v1.3.0"]
    assert spec.sticky is not None and spec.sticky.header == "x-user-id"
    assert parse_spec(spec.to_yaml()) == spec
    assert parse_spec(json.dumps(spec.to_dict())) == spec


def test_one_arm_defaults_to_all_traffic() -> None:
    spec = parse_spec("endpoint: solo\nmodels: [{model: demo, version: v1.0.0}]")
    assert spec.models[0].weight == 100 and spec.environment == "dev"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("endpoint: [", "(line 1, column 12)"),
        ("- a list", "a deployment spec is a mapping"),
        ("models: [{model: demo, version: v1.0.0}]", "endpoint: Field required"),
        ("endpoint: x\nmodels: [{model: demo, version: v1.0.0}]", "endpoint: must be 3-64"),
        ("endpoint: e_1\nmodels: []", "models: List should have at least 1 item"),
        ("endpoint: e_1", "models: List should have at least 1 item"),
        ("endpoint: e_1\nmodels: [{model: demo, version: '1.0'}]", "models[0].version: must be"),
        ("endpoint: e_1\nmodels: [{model: d, version: v1.0.0}]", "models[0].model: must be"),
        (
            "endpoint: e_1\nmodels: [{model: demo, version: v1.0.0, weight: -1}]",
            "models[0].weight: Input should be greater than or equal to 0",
        ),
        (
            "endpoint: e_1\nmodels: [{model: demo, version: v1.0.0, weight: 60}]",
            "the weights sum to 60, not 100",
        ),
        (
            "endpoint: e_1\nmodels: [{model: demo, version: v1.0.0, weight: 50},"
            " {model: demo, version: v1.0.0, weight: 50}]",
            "demo:v1.0.0 appears more than once",
        ),
        (
            "endpoint: e_1\nmodels: [{model: demo, version: v1.0.0, wieght: 50}]",
            "models[0].wieght: unknown field",
        ),
        ("endpoint: e_1\nmodels: [{model: demo, version: v1.0.0}]\nshadow: 1", "shadow: unknown"),
        (
            "endpoint: e_1\nenvironment: prod\nmodels: [{model: demo, version: v1.0.0}]",
            "environment: Input should be 'dev', 'staging' or 'production'",
        ),
        (
            "endpoint: e_1\nmodels: [{model: demo, version: v1.0.0}]\nsticky: {header: 'a b'}",
            "sticky.header: must be an HTTP header name",
        ),
    ],
)
def test_refusals_name_the_field(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_spec(text, "spec.yaml")
    assert info.value.message.startswith("spec.yaml: ")
    assert message in info.value.message


def test_every_problem_is_listed_at_once() -> None:
    text = "endpoint: x\nmodels: [{model: d, version: v1, weight: 500}]\nextra: 1"
    with pytest.raises(InvalidInput) as info:
        parse_spec(text)
    for part in ("endpoint:", "models[0].model:", "models[0].version:", "models[0].weight:"):
        assert part in info.value.message
    assert "extra: unknown field" in info.value.message


def test_the_published_schema_is_current() -> None:
    published = Path(__file__).parents[2] / "docs" / "deployment-spec.schema.json"
    assert published.read_text() == json_schema(), "run: servion deploy --schema > " + str(
        published
    )
    schema = json.loads(json_schema())
    assert set(schema["required"]) == {"endpoint"}
    assert "weight" in schema["$defs"]["Arm"]["properties"]
    assert DeploymentSpec.model_json_schema()["title"] == "DeploymentSpec"


@pytest.mark.parametrize(
    ("extra", "hint"),
    [
        ("shadow: []", "shadow: unknown field (did you mean 'shadows'?)"),
        ("cache: {ttl: 3}", "cache.ttl: unknown field (did you mean 'ttl_s'?)"),
        ("routing: {sticky: {header: x}}", "routing: unknown field (did you mean 'sticky', at"),
        ("zebra: 1", "zebra: unknown field"),
    ],
)
def test_an_unknown_field_gets_a_hint(extra: str, hint: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_spec(f"endpoint: abc\nmodels: [{{model: m1m, version: v1.0.0}}]\n{extra}\n")
    assert hint in info.value.message
    if extra.startswith("zebra"):
        assert "did you mean" not in info.value.message


def test_a_blue_green_rollout_takes_no_canary_settings() -> None:
    plain = parse_spec(
        "endpoint: abc\nmodels: [{model: m1m, version: v1.0.0}]\nrollout: {strategy: blue_green}"
    )
    # As stored with a revision (every default written out), it reads back.
    assert spec_from_dict(plain.to_dict()) == plain
    with pytest.raises(InvalidInput) as info:
        parse_spec(
            "endpoint: abc\nmodels: [{model: m1m, version: v1.0.0}]\n"
            "rollout: {strategy: blue_green, steps: [50, 100], interval_s: 5}\n"
        )
    assert "rollout: interval_s, steps: canary settings; a blue_green rollout switches at once" in (
        info.value.message
    )


def test_a_payload_log_becomes_the_policy_routing_reads() -> None:
    spec = parse_spec(GOOD + "payload_log: {sample: 0.25, sink: 'https://collector:8443/e'}")
    assert spec.payload_log is not None and parse_spec(spec.to_yaml()) == spec
    policy = policy_of(spec).payload_log
    assert policy == PayloadLogPolicy(0.25, "https://collector:8443/e", 1024, 1000)
    assert policy_of(parse_spec(GOOD)).payload_log is None  # off unless asked for
    local = parse_spec(GOOD + "payload_log: {sink: 'file://localhost/var/log/x.jsonl'}")
    assert local.payload_log is not None and local.payload_log.sample == 1.0
