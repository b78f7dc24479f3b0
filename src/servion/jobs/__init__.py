"""Batch prediction: a registered model over Parquet, CSV and JSON Lines files, in
partitions run by parallel worker processes, resumable after any interruption, with
bad rows set aside in dead-letter files and a summary at the end. Jobs and their
partitions live in the registry's database.

Planning (``find_inputs``, ``plan_job``) refuses bad input before a job exists;
``JobStore`` creates, claims, reads and cancels jobs; ``runner_for`` gives the runner of
a job's engine (``JobRunner`` here, ``ray_engine.RayRunner`` on Ray).
"""

from servion.jobs.plan import PartitionPlan, Planned, find_inputs, plan_job
from servion.jobs.records import FINAL, Job, PartitionRecord
from servion.jobs.runner import JobRunner, runner_for
from servion.jobs.spec import ENGINES, OUTPUT_FORMATS, Budget, JobOptions
from servion.jobs.store import JobNotFound, JobStore
from servion.jobs.summary import MANIFEST, JobSummary, Progress

__all__ = [
    "ENGINES",
    "FINAL",
    "MANIFEST",
    "OUTPUT_FORMATS",
    "Budget",
    "Job",
    "JobNotFound",
    "JobOptions",
    "JobRunner",
    "JobStore",
    "JobSummary",
    "PartitionPlan",
    "PartitionRecord",
    "Planned",
    "Progress",
    "find_inputs",
    "plan_job",
    "runner_for",
]
