"""Keep secrets out of logs: a logging filter that redacts credentials and truncates prompts.

Installed on the console handler (settings.LOGGING), so it sees every record the process
writes, whichever logger made it. It rewrites the formatted message, a formatted traceback
and string ``extra`` fields: Authorization header values, DRF token keys, JWTs, OpenAI-style
keys, ``password=`` / ``token=`` / ``api_key=`` pairs, and the configured secrets verbatim.
A ``prompt`` passed as an extra field is cut to PROMPT_LOG_CHARS characters.

Django's error pages and reports (DEBUG's technical 500 page, the text of an error e-mail)
are redacted the same way: :class:`RedactingExceptionReporterFilter` (settings, request
headers, cookies) and :class:`RedactingExceptionReporter` (the exception, the frames' local
variables, the query string), named in settings.DEFAULT_EXCEPTION_REPORTER[_FILTER].
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

REDACTED = "[redacted]"
PROMPT_LOG_CHARS = 80
# Settings whose values must never appear in a log line or an error, whatever the context.
SECRET_SETTINGS = (
    "SECRET_KEY",
    "OPENAI_API_KEY",
    "SUPABASE_SERVICE_KEY",
    "SUPABASE_JWT_SECRET",
    "METRICS_TOKEN",
    "FLOWER_BASIC_AUTH",
)
SENSITIVE_FIELD = re.compile(r"authorization|token|ticket|secret|password|api_?key|cookie", re.I)
_PATTERNS = [
    # "Authorization: Token abc", "'HTTP_AUTHORIZATION': 'Bearer abc'", "Bearer abc"
    (
        re.compile(r"((?:authorization|cookie)['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n,}]+", re.I),
        r"\1" + REDACTED,
    ),
    # 20+ characters: a credential, not a word ("Token authentication failed").
    (re.compile(r"\b(Bearer|Token|Basic)\s+[A-Za-z0-9._~+/=-]{20,}", re.I), r"\1 " + REDACTED),
    # JWTs anywhere (header.payload.signature, base64url, header starts with {" = eyJ).
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Passwords in URLs: redis://:secret@host, postgres://user:secret@host.
    (re.compile(r"(\w+://[^:/@\s]*:)[^@/\s]+@"), r"\1" + REDACTED + "@"),
    # OpenAI / Stripe style keys: sk-..., sk-proj-...
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), REDACTED),
    # key=value pairs in query strings, form bodies, reprs and JSON.
    (
        re.compile(
            # ticket: the stream tickets in SSE URLs (jobs/live/tickets.py), single-use but
            # live for seconds after they are logged.
            r"((?:password|passwd|secret|token|access_token|refresh_token|api_?key|apikey|key"
            r"|ticket)"
            r"['\"]?\s*[:=]\s*['\"]?)[^'\"&\s,}]+",
            re.I,
        ),
        r"\1" + REDACTED,
    ),
]


def _configured_secrets() -> list[str]:
    try:
        from django.conf import settings

        values = [getattr(settings, name, "") for name in SECRET_SETTINGS]
    except Exception:  # settings not configured (a bare script): patterns only
        return []
    # Short values would redact ordinary words; real secrets are long.
    return [value for value in values if isinstance(value, str) and len(value) >= 8]


def redact_secrets(text: str) -> str:
    """The text with credentials and configured secrets replaced by ``[redacted]``."""
    for secret in _configured_secrets():
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def truncate_prompt(prompt: str, limit: int = PROMPT_LOG_CHARS) -> str:
    return prompt if len(prompt) <= limit else f"{prompt[:limit]}... ({len(prompt)} chars)"


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        record.msg, record.args = redact_secrets(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters print exc_text when exc_info is gone (the JSON one would otherwise
            # format the traceback again, unredacted).
            record.exc_text, record.exc_info = redact_secrets(record.exc_text), None
        for name, value in list(vars(record).items()):
            if name in _RECORD_FIELDS:
                continue
            if name == "prompt" and isinstance(value, str):
                setattr(record, name, truncate_prompt(value))
            elif SENSITIVE_FIELD.search(name) and value:
                setattr(record, name, REDACTED)
            elif isinstance(value, str):
                setattr(record, name, redact_secrets(value))
            elif name == "request":
                # django.request passes the request; its repr carries the query string.
                setattr(record, name, redact_secrets(repr(value)))
        return True


class RedactingExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter hides settings by name (KEY, TOKEN, PASS...); this one also redacts
    values whatever their name: DATABASE_URL, CELERY_BROKER_URL, CACHES' LOCATION and
    request headers carry passwords in URLs."""

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        return redact_secrets(cleansed) if isinstance(cleansed, str) else cleansed


class RedactingExceptionReporter(ExceptionReporter):
    """What the filter leaves as text: the exception's message and notes, its causes, every
    frame's local variables (already formatted), the query string and the URI."""

    def get_traceback_data(self) -> dict[str, Any]:
        data = super().get_traceback_data()
        for key in ("exception_value", "exception_notes", "request_insecure_uri", "user_str"):
            if isinstance(data.get(key), str):
                data[key] = redact_secrets(data[key])
        if "request_GET_items" in data:
            data["request_GET_items"] = [
                (name, REDACTED if SENSITIVE_FIELD.search(name) else redact_secrets(str(value)))
                for name, value in data["request_GET_items"]
            ]
        for frame in data.get("frames", []):
            frame["vars"] = [(name, redact_secrets(value)) for name, value in frame.get("vars", [])]
            if frame.get("exc_cause") is not None:
                frame["exc_cause"] = redact_secrets(str(frame["exc_cause"]))
        return data
