"""Batch jobs' tables: one row per job (what to run and how far it got) and one per
partition (a row range of one input file, its output and its attempts).

The plan is stored whole when the job is created, so a resumed job redoes exactly
the partitions an interrupted one left, with the same boundaries and options.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from servion.state import Track

metadata = sa.MetaData()

batch_jobs = sa.Table(
    "batch_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    # The --input as given and the files it named; the plan holds what each one was.
    sa.Column("inputs", sa.JSON, nullable=False),
    sa.Column("output_dir", sa.Text, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("plan", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("rows_total", sa.BigInteger, nullable=False),
    sa.Column("partitions_total", sa.Integer, nullable=False),
    sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
    # Seconds spent running over every run, and the same times the workers of each
    # run: what throughput and cost are computed from once a job was resumed.
    sa.Column("active_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("worker_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("workers", sa.Integer, nullable=False),
    sa.Column("runner_pid", sa.Integer, nullable=True),
    sa.Column("runner_host", sa.String(255), nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("started_at", sa.String(32), nullable=True),
    sa.Column("finished_at", sa.String(32), nullable=True),
)

batch_partitions = sa.Table(
    "batch_partitions",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("batch_jobs.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("input", sa.Integer, nullable=False),
    sa.Column("start_row", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    # Text inputs are read from byte offsets found when the job was planned; Parquet
    # partitions leave them empty (row groups locate their rows).
    sa.Column("byte_start", sa.BigInteger, nullable=True),
    sa.Column("byte_end", sa.BigInteger, nullable=True),
    # A Parquet partition inside a row group: the rows before it there, read and dropped
    # when it does not follow its predecessor in the same reader.
    sa.Column("skip_rows", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("rows_out", sa.BigInteger, nullable=True),
    sa.Column("failed_rows", sa.BigInteger, nullable=True),
    sa.Column("sha256", sa.String(64), nullable=True),
    sa.Column("dead_letter_sha256", sa.String(64), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("worker_pid", sa.Integer, nullable=True),
    sa.Column("rss_start_bytes", sa.BigInteger, nullable=True),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=True),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("started_at", sa.String(32), nullable=True),
    sa.Column("finished_at", sa.String(32), nullable=True),
)


def _create_jobs_v1(conn: Connection) -> None:
    for table in (batch_jobs, batch_partitions):
        table.create(conn, checkfirst=True)


JOBS = Track("jobs", (_create_jobs_v1,))
