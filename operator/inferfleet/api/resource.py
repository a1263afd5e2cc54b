"""The InferenceService resource: its names and the whole-object model."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from inferfleet.api.common import CelRule, KubeModel, cel_validations, enforce
from inferfleet.api.limits import MAX_SERVICE_NAME
from inferfleet.api.spec import InferenceServiceSpec
from inferfleet.api.status import READ_CONTEXT, InferenceServiceStatus

GROUP = "inferfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ("infsvc",)
CATEGORIES = ("inferfleet",)


DNS_1035_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
# The name is the Service's (a DNS-1035 label) and a label value of every child. CEL may read
# metadata.name at the root of the schema; the API server has set it (from generateName too).
NAME_MAKES_VALID_CHILDREN = CelRule(
    rule=f"self.metadata.name.size() <= {MAX_SERVICE_NAME} && self.metadata.name.matches('{DNS_1035_LABEL}')",
    message=f"metadata.name must be a DNS-1035 label of at most {MAX_SERVICE_NAME} characters (lowercase "
    "letters, digits and '-', starting with a letter and ending with a letter or digit) so that its "
    "Services, pods and labels are valid",
    reason="FieldValueInvalid",
)


def is_valid_service_name(name: str) -> bool:
    return len(name) <= MAX_SERVICE_NAME and re.fullmatch(DNS_1035_LABEL, name) is not None


class InferenceService(KubeModel):
    """An LLM served on GPUs by a fleet of engine replicas that inferfleet sizes, places and scales."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=cel_validations(NAME_MAKES_VALID_CHILDREN))

    api_version: Literal["inferfleet.io/v1alpha1"] = Field(
        default="inferfleet.io/v1alpha1", description="inferfleet.io/v1alpha1"
    )
    kind: Literal["InferenceService"] = Field(default="InferenceService", description="InferenceService")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: InferenceServiceSpec = Field(description="Desired state, written by the model owner.")
    status: InferenceServiceStatus | None = Field(
        default=None, description="Observed state, written by inferfleet."
    )

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        name = self.metadata.get("name")
        enforce((NAME_MAKES_VALID_CHILDREN, not isinstance(name, str) or is_valid_service_name(name)))
        return self


def parse_inference_service(obj: Mapping[str, Any]) -> InferenceService:
    """Validate a whole InferenceService (a manifest or a watched object); raises pydantic.ValidationError."""
    return InferenceService.model_validate(dict(obj), context=READ_CONTEXT)
