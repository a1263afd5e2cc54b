"""The InferenceService resource: its names and the whole-object model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field

from inferfleet.api.common import KubeModel
from inferfleet.api.spec import InferenceServiceSpec
from inferfleet.api.status import InferenceServiceStatus

GROUP = "inferfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ("infsvc",)
CATEGORIES = ("inferfleet",)


class InferenceService(KubeModel):
    """An LLM served on GPUs by a fleet of engine replicas that inferfleet sizes, places and scales."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["inferfleet.io/v1alpha1"] = Field(
        default="inferfleet.io/v1alpha1", description="inferfleet.io/v1alpha1"
    )
    kind: Literal["InferenceService"] = Field(default="InferenceService", description="InferenceService")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: InferenceServiceSpec = Field(description="Desired state, written by the model owner.")
    status: InferenceServiceStatus | None = Field(
        default=None, description="Observed state, written by inferfleet."
    )


def parse_inference_service(obj: Mapping[str, Any]) -> InferenceService:
    """Validate a whole InferenceService (a manifest or a watched object); raises pydantic.ValidationError."""
    return InferenceService.model_validate(dict(obj))
