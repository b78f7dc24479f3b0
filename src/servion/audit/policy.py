"""Environment policy: what an environment demands of an operation before it runs."""

from __future__ import annotations

from servion.errors import InvalidInput


def change_ticket_policy(environment: str, change_ticket: str | None, operation: str) -> str:
    """Refuse a production ``operation`` without a change ticket; say what was checked.

    >>> change_ticket_policy("dev", None, "deploy")
    'change ticket check skipped (environment dev)'
    """
    if environment != "production":
        return f"change ticket check skipped (environment {environment})"
    ticket = (change_ticket or "").strip()
    if not ticket:
        raise InvalidInput(
            f"{operation} in production needs a change ticket: pass --change-ticket TICKET"
            " (header X-Servion-Change-Ticket)"
        )
    if len(ticket) > 128 or not ticket.isprintable():
        raise InvalidInput("the change ticket must be at most 128 printable characters")
    return f"change ticket {ticket} recorded (environment production)"
