"""The ``payload_log`` spec field: sampled requests and answers, written off the request path."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from servion.deploy._fields import _Strict


class PayloadLog(_Strict):
    """Copies of a share of the endpoint's requests and answers, as CloudEvents, to a JSON
    lines file or an HTTP collector. Events wait in a bounded buffer: when the sink falls
    behind they are dropped and counted, never waited for."""

    sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of requests logged, chosen by a hash of the request id (1 = all).",
    )
    sink: str = Field(
        max_length=2048,
        description="file:///ABSOLUTE/PATH (JSON lines, appended) or http(s)://HOST/PATH"
        " (batches POSTed as application/cloudevents-batch+json).",
    )
    max_elements: int = Field(
        default=1024,
        ge=0,
        le=1_000_000,
        description="Tensors with more elements are logged as summary statistics.",
    )
    buffer: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Events waiting for the sink per worker, at most; more are dropped.",
    )

    @field_validator("sink")
    @classmethod
    def _sink(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "file":
            # file://relative/x parses "relative" as a host: say what was meant.
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError("a file sink needs an absolute path: file:///var/log/x.jsonl")
            if parts.path.endswith("/") or parts.query or parts.fragment:
                raise ValueError("a file sink names a file: file:///var/log/x.jsonl")
            return value
        if parts.scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError("an HTTP sink needs a host: http://collector:8080/events")
            return value
        raise ValueError(
            f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not a sink:"
            " use file:///ABSOLUTE/PATH or http(s)://HOST/PATH"
        )
