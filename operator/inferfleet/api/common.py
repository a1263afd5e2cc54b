"""Base models and the CEL rule type shared by the spec and status models.

A cross-field rule is written once as a `CelRule`: the CRD carries it as an
`x-kubernetes-validations` entry (the API server enforces it) and the pydantic model
enforces the same condition with the same message (so `inferfleet plan` agrees offline).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
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
    """`message_expression` (CEL) and `template` (str.format) spell the same message naming the
    offending value, for the API server and for pydantic; `message` is the API server's fallback."""

    rule: str
    message: str
    field_path: str | None = None
    reason: Reason | None = None
    message_expression: str | None = None
    template: str | None = None

    def to_schema(self) -> JsonDict:
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.message_expression:
            entry["messageExpression"] = self.message_expression
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def cel_validations(*rules: CelRule) -> JsonDict:
    """The `json_schema_extra` that puts `rules` into the model's CRD schema."""
    return {"x-kubernetes-validations": [rule.to_schema() for rule in rules]}


Check = tuple[CelRule, bool] | tuple[CelRule, bool, Mapping[str, object]]


def enforce(*checks: Check) -> None:
    """Raise one ValueError naming every rule whose check is False (the API server reports all too).

    A check may carry the values that fill its rule's `template` (the message naming the culprit).
    """
    failed = []
    for rule, ok, *values in checks:
        if not ok:
            if values and rule.template is not None:
                failed.append(rule.template.format(**values[0]))
            else:
                failed.append(rule.message)
    if failed:
        raise ValueError("; ".join(failed))


def int_field(*, ge: int = 0, le: int, int64: bool = False, **kwargs: Any) -> Any:
    """A strict integer field (no "70", no 7.0, no true) bounded as the CRD bounds it; int32 unless
    it mirrors an int64 Kubernetes field."""
    fmt: JsonDict = {"format": "int64" if int64 else "int32"}
    return Field(strict=True, ge=ge, le=le, json_schema_extra=fmt, **kwargs)


def float_field(**kwargs: Any) -> Any:
    """A strict, finite number field (an int is fine, "70", true, inf and nan are not)."""
    return Field(strict=True, allow_inf_nan=False, **kwargs)
