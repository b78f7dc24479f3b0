"""Audit events on their own: pairs, failures with traces, daily files and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from servion.audit import FIELDS, Auditor, change_ticket_policy, read_events
from servion.config import Settings
from servion.errors import InvalidInput


def auditor(tmp_path: Path) -> Auditor:
    return Auditor(Settings.load(home=tmp_path / "home"), command="servion test")


def test_an_operation_writes_started_and_success_with_every_field(tmp_path: Path) -> None:
    audit = auditor(tmp_path)
    with audit.operation(
        "deploy",
        user="token:ci",
        change_ticket="CHG-1",
        environment="production",
        model_name="fraud",
        model_version="v1.3.0",
        previous_version="v1.2.0",
        deployment_strategy="canary",
        resources={"replicas": 2},
        rollback_available=True,
    ) as op:
        op.resources_affected = ["endpoint:fraud"]
        op.performance_metrics = {"applied_ms": 12.5}
    audit.close()
    started, done = list(read_events(tmp_path / "home" / "audit"))
    assert list(started) == list(FIELDS) and list(done) == list(FIELDS)
    assert started["operation_id"] == done["operation_id"]
    assert (started["outcome"], done["outcome"]) == ("started", "success")
    assert started["duration_seconds"] is None and done["duration_seconds"] >= 0
    assert done["timestamp"].endswith("Z") and done["timestamp"][10] == "T"
    assert done["user"] == "token:ci" and done["change_ticket"] == "CHG-1"
    assert done["environment"] == "production" and done["previous_version"] == "v1.2.0"
    assert done["resources_affected"] == ["endpoint:fraud"]
    assert done["performance_metrics"] == {"applied_ms": 12.5}
    assert (done["service"], done["team"]) == ("ml-serving", "ml-engineering")
    assert done["command"] == "servion test" and done["error_detail"] is None


def test_a_failure_carries_the_error_and_its_stack_trace(tmp_path: Path) -> None:
    audit = auditor(tmp_path)
    with pytest.raises(InvalidInput), audit.operation("rollback", model_name="fraud"):
        raise InvalidInput("no revision before 1")
    audit.close()
    _, failed = list(read_events(tmp_path / "home" / "audit"))
    assert failed["outcome"] == "failure"
    detail = failed["error_detail"]
    assert detail["type"] == "InvalidInput" and detail["message"] == "no revision before 1"
    assert "Traceback" in detail["stack_trace"] and "test_audit_log.py" in detail["stack_trace"]


def test_daily_files_and_retention(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "audit"
    folder.mkdir(parents=True)
    old = (datetime.now(UTC) - timedelta(days=91)).strftime("%Y-%m-%d")
    recent = (datetime.now(UTC) - timedelta(days=89)).strftime("%Y-%m-%d")
    (folder / f"audit-{old}.jsonl").write_text('{"operation": "old"}\n')
    (folder / f"audit-{recent}.jsonl").write_text('{"operation": "recent"}\n')
    audit = auditor(tmp_path)
    with audit.operation("register"):
        pass
    audit.close()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"audit-{recent}.jsonl", f"audit-{today}.jsonl"]
    )
    assert [e["operation"] for e in read_events(folder)] == ["recent", "register", "register"]


def test_production_needs_a_change_ticket() -> None:
    assert "skipped (environment dev)" in change_ticket_policy("dev", None, "deploy")
    assert "skipped (environment staging)" in change_ticket_policy("staging", None, "rollback")
    assert change_ticket_policy("production", "CHG-7", "deploy").startswith("change ticket CHG-7")
    for ticket in (None, "", "   "):
        with pytest.raises(InvalidInput, match="needs a change ticket"):
            change_ticket_policy("production", ticket, "deploy")
    with pytest.raises(InvalidInput, match="printable"):
        change_ticket_policy("production", "CHG\n1", "deploy")
