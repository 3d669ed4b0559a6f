"""The jobs API's shared OpenAPI parameters (drf-spectacular). Response shapes are the output
serializers of jobs/serializers.py, which the views render; errors are snapasset.core.openapi's.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

JOB_ID_PARAMETER = OpenApiParameter(
    "job_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="The job's id; an id that is not a UUID is a 404.",
)
IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="The same key from the same user within 24 h returns the first job (200) "
    "instead of creating another. At most 255 characters.",
)
STATUS_LIST_PARAMETER = OpenApiParameter(
    "status",
    {"type": "array", "items": {"$ref": "#/components/schemas/JobStatusEnum"}},
    OpenApiParameter.QUERY,
    style="form",
    explode=False,
    required=False,
    description="Only jobs in these statuses, comma-separated (`status=waiting,active`), as "
    "the old server took them. The parameter repeated (`status=waiting&status=active`, what "
    "most generated clients send for a list) means the same.",
)


class BatchSchema(AutoSchema):
    """POST /api/jobs/generate/batch: its body, a list of JobGenerateInput, is an array of
    1..``view.max_items`` items (drf-spectacular maps a list serializer to an array, without
    the bounds)."""

    def _get_request_for_media_type(self, serializer: Any, direction: str = "request") -> Any:
        schema, required = super()._get_request_for_media_type(serializer, direction)
        view: Any = self.view
        if schema and schema.get("type") == "array":
            schema = {**schema, "minItems": 1, "maxItems": view.max_items}
        return schema, required
