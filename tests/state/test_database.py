"""The metadata database: one schema track per subsystem, brought forward in place, and
the generation and heartbeats every worker shares."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from servion.config import Settings
from servion.deploy import Deployments
from servion.deploy.rollout import Rollouts
from servion.registry import ModelRegistry
from servion.registry.tables import REGISTRY
from servion.server.tokens import TOKENS, list_tokens
from servion.state import Database
from servion.state.database import STATE

# The schema an earlier servion wrote: one global list of migrations, no rollout lease.
OLD_SCHEMA = """
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at VARCHAR(32) NOT NULL);
INSERT INTO schema_migrations VALUES (1, 'x'), (2, 'x'), (3, 'x'), (4, 'x'), (5, 'x');
CREATE TABLE models (name VARCHAR(64) PRIMARY KEY, created_at VARCHAR(32) NOT NULL,
  version_policy VARCHAR(256) DEFAULT 'latest:1' NOT NULL, loaded BOOLEAN DEFAULT 1 NOT NULL,
  batching JSON);
CREATE TABLE model_versions (id INTEGER PRIMARY KEY, name VARCHAR(64) NOT NULL REFERENCES
  models(name), version VARCHAR(64) NOT NULL, major INTEGER NOT NULL, minor INTEGER NOT NULL,
  patch INTEGER NOT NULL, format VARCHAR(32) NOT NULL, sha256 VARCHAR(64) NOT NULL,
  size_bytes BIGINT NOT NULL, artifact VARCHAR(512) NOT NULL, signature JSON NOT NULL,
  environment JSON NOT NULL, options JSON NOT NULL, large_reason TEXT,
  source_name VARCHAR(512) NOT NULL, registered_at VARCHAR(32) NOT NULL,
  registered_by VARCHAR(128) NOT NULL, CONSTRAINT uq_model_version UNIQUE (name, version));
CREATE TABLE serving_state (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
INSERT INTO serving_state VALUES (1, 41);
CREATE TABLE worker_state (worker_id VARCHAR(64) PRIMARY KEY, generation INTEGER NOT NULL,
  heartbeat FLOAT NOT NULL, stats JSON NOT NULL);
CREATE TABLE endpoints (name VARCHAR(64) PRIMARY KEY, revision INTEGER NOT NULL,
  created_at VARCHAR(32) NOT NULL);
CREATE TABLE endpoint_revisions (endpoint VARCHAR(64) NOT NULL, revision INTEGER NOT NULL,
  spec JSON NOT NULL, action VARCHAR(16) NOT NULL, source_revision INTEGER,
  created_at VARCHAR(32) NOT NULL, created_by VARCHAR(128) NOT NULL,
  PRIMARY KEY (endpoint, revision));
CREATE TABLE tokens (id VARCHAR(16) PRIMARY KEY, name VARCHAR(64) NOT NULL,
  role VARCHAR(16) NOT NULL, sha256 VARCHAR(64) NOT NULL UNIQUE,
  created_at VARCHAR(32) NOT NULL, revoked_at VARCHAR(32));
INSERT INTO tokens VALUES ('ab12cd34', 'ci-bot', 'deployer', 'f00d', '2026-11-01', NULL);
CREATE TABLE rollouts (endpoint VARCHAR(64) PRIMARY KEY, state VARCHAR(16) NOT NULL,
  spec JSON NOT NULL, base_revision INTEGER NOT NULL, step INTEGER NOT NULL,
  step_started_at FLOAT NOT NULL, reason TEXT DEFAULT '' NOT NULL,
  updated_at VARCHAR(32) NOT NULL, created_by VARCHAR(128) NOT NULL);
"""


def test_each_subsystem_records_its_own_track(tmp_path: Path) -> None:
    registry = ModelRegistry(Settings.load(home=tmp_path / "home"))
    try:
        assert registry.database.versions() == {"state": 1, "registry": len(REGISTRY.steps)}
        Deployments(registry)
        list_tokens(registry)
        versions = registry.database.versions()
        assert versions["deploy"] == 3 and versions["tokens"] == len(TOKENS.steps)
        assert registry.database.migrate(STATE) == 1  # nothing left to do: a no-op
    finally:
        registry.close()


def test_an_older_database_is_brought_forward_in_place(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with sqlite3.connect(home / "registry.db") as conn:
        conn.executescript(OLD_SCHEMA)
    registry = ModelRegistry(Settings.load(home=home))
    try:
        assert registry.database.generation() == 41  # the counter survives
        assert [t.name for t in list_tokens(registry)] == ["ci-bot"]
        rollouts = Rollouts(registry)  # adds the lease columns
        with registry.engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("rollouts")}
        assert {"driver", "lease_until"} <= columns
        assert rollouts.orphans() == []
        assert set(registry.database.versions()) == {"state", "registry", "tokens", "deploy"}
    finally:
        registry.close()


def test_generation_and_heartbeats(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with database.engine.begin() as conn:
            Database.bump(conn)
            Database.bump(conn)
        assert database.generation() == 2
        database.report_worker("w1", 2, {"models": {}})
        database.report_worker("w1", 3, {"models": {"a": 1}})
        assert database.worker_reports(60) == [("w1", 3, {"models": {"a": 1}})]
        assert database.worker_reports(-1) == []  # heard from longer ago than asked
        database.remove_worker("w1")
        assert database.worker_reports(60) == []
    finally:
        database.close()
