"""The OpenAPI schema and the Swagger UI page, with their assets served locally (no CDN)."""

from __future__ import annotations

from typing import Any

import yaml


def test_the_openapi_schema_lists_the_job_endpoints(staff_client: Any) -> None:
    response = staff_client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "SnapAsset API"
    assert "/api/jobs/generate" in schema["paths"]
    assert "post" in schema["paths"]["/api/jobs/generate"]


def test_the_swagger_page_uses_bundled_assets(staff_client: Any, client: Any) -> None:
    response = staff_client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn" not in page.lower()
    assert "/api/schema/" in page
    asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert asset.status_code == 200


def test_the_schema_needs_credentials_like_every_api_endpoint(anon_client: Any) -> None:
    assert anon_client.get("/api/schema/").status_code in (401, 403)
