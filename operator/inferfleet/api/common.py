"""Base models and the CEL rule type shared by the spec and status models.

A cross-field rule is written once as a `CelRule`: the CRD carries it as an
`x-kubernetes-validations` entry (the API server enforces it) and the pydantic model
enforces the same condition with the same message (so `inferfleet plan` agrees offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

Reason = Literal["FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden"]


class KubeModel(BaseModel):
    """camelCase on the wire, snake_case in Python; dumps use the camelCase names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class SpecModel(KubeModel):
    """User-written objects: unknown fields are errors, as with `kubectl apply` (strict field validation)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # As the API server does: `field: null` means unset, so the field's default applies.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


@dataclass(frozen=True)
class CelRule:
    rule: str
    message: str
    field_path: str | None = None
    reason: Reason | None = None

    def to_schema(self) -> JsonDict:
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def cel_validations(*rules: CelRule) -> JsonDict:
    """The `json_schema_extra` that puts `rules` into the model's CRD schema."""
    return {"x-kubernetes-validations": [rule.to_schema() for rule in rules]}


def enforce(*checks: tuple[CelRule, bool]) -> None:
    """Raise one ValueError naming every rule whose check is False (the API server reports all too)."""
    failed = [rule.message for rule, ok in checks if not ok]
    if failed:
        raise ValueError("; ".join(failed))
