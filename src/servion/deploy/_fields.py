"""The spec's building blocks: strict models, model references and traffic fields."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servion.registry.naming import NAME_RE, VERSION_RE

_HEADER_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Ref(_Strict):
    model: str = Field(description="A registered model name.")
    version: str = Field(description="One of its registered versions, vMAJOR.MINOR.PATCH.")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError("must be 3-64 letters, digits, '_' or '-'")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not VERSION_RE.fullmatch(value):
            raise ValueError("must be vMAJOR.MINOR.PATCH, e.g. v1.0.0")
        return value

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


class Arm(_Ref):
    """One model version behind the endpoint and its share of the traffic."""

    weight: float = Field(
        default=100.0,
        ge=0,
        le=100,
        description="Percent of requests this arm answers; the weights sum to 100.",
    )


class Shadow(_Ref):
    """A model version that receives a copy of live traffic; its answers are only compared."""

    sample: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Share of requests copied to this shadow (1 = all).",
    )


class Sticky(_Strict):
    """Route each value of a request header to the same arm (consistent hashing)."""

    header: str = Field(description="Header whose value keeps a caller on one arm.")

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _HEADER_RE.fullmatch(value):
            raise ValueError("must be an HTTP header name (letters, digits, '-')")
        return value.lower()
