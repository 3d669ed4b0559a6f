"""HTTP request metrics: django-prometheus's middleware (MIDDLEWARE), with one defect mended.

django-prometheus counts requests by view (the URL pattern's name), method and status in
prometheus_client metrics, so they work in multiprocess mode beside ours on /metrics
(docs/operations.md#metrics). Its "after" middleware reads ``int(Content-Length)`` to observe
the body size, so a request with a malformed Content-Length answered 500 there instead of
Django's JSON 400. Under uvicorn the ASGI body limit refuses such a request before Django
(snapasset/core/body_limit.py); this covers every other way in.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django_prometheus.middleware import (
    PrometheusAfterMiddleware as _PrometheusAfterMiddleware,
)
from django_prometheus.middleware import (
    PrometheusBeforeMiddleware,
)
from django_prometheus.utils import Time

__all__ = ["PrometheusAfterMiddleware", "PrometheusBeforeMiddleware"]


class PrometheusAfterMiddleware(_PrometheusAfterMiddleware):
    def process_request(self, request: HttpRequest) -> Any:
        try:
            return super().process_request(request)
        except ValueError:  # a malformed Content-Length: no body size, the rest as usual
            request.prometheus_after_middleware_event = Time()  # type: ignore[attr-defined]
            return None
