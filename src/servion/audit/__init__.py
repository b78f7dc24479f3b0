"""Audit trail: a structured JSON event before and after every operation."""

from servion.audit.log import FIELDS, Auditor, Operation, os_user, read_events
from servion.audit.policy import change_ticket_policy

__all__ = ["FIELDS", "Auditor", "Operation", "change_ticket_policy", "os_user", "read_events"]
