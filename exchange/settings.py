"""Settings, read from the environment (see the README's settings table).

With DATABASE_URL / REDIS_URL unset, the embedded servers of `exchange.embedded`
are started on first need and used instead.
"""

import decimal
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# Money is numeric(38, 18): a product of two such amounts has up to 76 digits.
# With 80 digits of precision, Decimal arithmetic here never rounds.
decimal.DefaultContext.prec = 80
decimal.getcontext().prec = 80

env = environ.Env()

DEV_SECRET_KEY = "dev-insecure-secret-key-do-not-use-in-production"
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default=DEV_SECRET_KEY)
if SECRET_KEY == DEV_SECRET_KEY and not DEBUG:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off (production).")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])

# Which HTTP surface this process serves: the exchange, or the reference wallet service.
ROLE = env("EXCHANGE_ROLE", default="exchange")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "exchange",
    "marketdata",
    "orders",
    "matching",
    "settlement",
    "wallet",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "exchange.api.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

if ROLE == "wallet":
    # A JSON service behind a bearer token: no sessions, CSRF, messages or static files
    # to handle, so none of their middleware runs on its hot path (holds, settlements).
    MIDDLEWARE = [
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "exchange.api.middleware.RequestIdMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ]
    # The admin is installed (shared models) but never routed in this role.
    SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]

ROOT_URLCONF = "wallet.urls" if ROLE == "wallet" else "exchange.urls"
WSGI_APPLICATION = "exchange.wsgi.application"

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

if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db_url("DATABASE_URL")}
else:
    from exchange.embedded import postgres_settings

    DATABASES = {"default": postgres_settings()}
DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
# A health check is a SELECT 1 before every request: off by default (one round trip
# less on the order path); turn on where the database drops idle connections.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)

if env("REDIS_URL", default=""):
    REDIS_URL = env("REDIS_URL")
else:
    from exchange.embedded import redis_url

    REDIS_URL = redis_url()

# Shared by every web worker: throttles count per user across the whole deployment.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "cache",
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise expects it; collectstatic fills it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- API ---------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["exchange.api.renderers.EnvelopeRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "exchange.api.authentication.SqlUserJWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": [
        "exchange.api.throttling.AnonIpThrottle",
        "exchange.api.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env("THROTTLE_ANON", default="600/min"),
        "user": env("THROTTLE_USER", default="6000/min"),
        "orders": env("THROTTLE_ORDERS", default="3000/min"),
    },
    "EXCEPTION_HANDLER": "exchange.api.exceptions.envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "COERCE_DECIMAL_TO_STRING": True,
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env.int("JWT_ACCESS_SECONDS", default=15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": env("JWT_SIGNING_KEY", default=SECRET_KEY),
    "ALGORITHM": "HS256",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Trade engine API",
    "DESCRIPTION": "Orders, order book, trades and tickers of the exchange. "
    "Every /api/v1/ response is wrapped in the success/error envelope.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "exchange.api.schema.wrap_in_envelope",
    ],
}

# --- Exchange ----------------------------------------------------------------

WALLET_URL = env("WALLET_URL", default="http://127.0.0.1:8100")
WALLET_TOKEN = env("WALLET_TOKEN", default="dev-wallet-token" if DEBUG or SECRET_KEY == DEV_SECRET_KEY else None)
if not WALLET_TOKEN:
    WALLET_TOKEN = env("WALLET_TOKEN")  # production: no default, fail at boot
WALLET_TIMEOUT_SECONDS = env.float("WALLET_TIMEOUT_SECONDS", default=5.0)
# The account that collects trading fees at the wallet.
FEE_ACCOUNT = env("FEE_ACCOUNT", default="exchange-fees")

DEFAULT_MARKETS = env.list("DEFAULT_MARKETS", default=["BTC-USDT", "ETH-USDT"])
MAX_OPEN_ORDERS_PER_MARKET = env.int("MAX_OPEN_ORDERS_PER_MARKET", default=200)
ENGINE_REPLY_TIMEOUT_SECONDS = env.float("ENGINE_REPLY_TIMEOUT_SECONDS", default=2.0)
ENGINE_HEARTBEAT_TIMEOUT_SECONDS = env.float("ENGINE_HEARTBEAT_TIMEOUT_SECONDS", default=10.0)
ENGINE_METRICS_PORT = env.int("ENGINE_METRICS_PORT", default=9108)
MARKET_ORDER_COLLAR = Decimal(env("MARKET_ORDER_COLLAR", default="0.05"))

# --- Celery ------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TIMEZONE = "UTC"
# Keep the worker's DB connection across tasks (Celery's Django fixup closes it after each by default).
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Beat drives the sweeps that make the outbox eventually complete: settlements and
# releases whose message was lost or whose worker died, holds whose order never appeared.
CELERY_BEAT_SCHEDULE = {
    "sweep-outbox": {"task": "settlement.tasks.sweep_outbox", "schedule": 15.0},
    "sweep-orphan-holds": {"task": "orders.tasks.sweep_orphan_holds", "schedule": 60.0},
}

# --- Settlement ----------------------------------------------------------------

SETTLEMENT_SWEEP_GRACE_SECONDS = env.float("SETTLEMENT_SWEEP_GRACE_SECONDS", default=10.0)
SETTLEMENT_BATCH_SIZE = env.int("SETTLEMENT_BATCH_SIZE", default=200)
# The engine sends a settlement message at most this often; later batches' trades ride the next one.
SETTLEMENT_DISPATCH_INTERVAL_SECONDS = env.float("SETTLEMENT_DISPATCH_INTERVAL_SECONDS", default=0.1)
SETTLEMENT_MAX_ATTEMPTS = env.int("SETTLEMENT_MAX_ATTEMPTS", default=8)
SETTLEMENT_BACKOFF_BASE_SECONDS = env.float("SETTLEMENT_BACKOFF_BASE_SECONDS", default=2.0)
SETTLEMENT_BACKOFF_MAX_SECONDS = env.float("SETTLEMENT_BACKOFF_MAX_SECONDS", default=300.0)
SETTLEMENT_LEASE_SECONDS = env.float("SETTLEMENT_LEASE_SECONDS", default=60.0)
SETTLEMENT_MAX_COUNTDOWN_SECONDS = 600.0  # must stay below the broker's visibility_timeout (3600)
SETTLEMENT_SWEEP_LIMIT = env.int("SETTLEMENT_SWEEP_LIMIT", default=5000)
SETTLEMENT_METRICS_PORT = env.int("SETTLEMENT_METRICS_PORT", default=9109)
SETTLEMENT_QUEUE = env("SETTLEMENT_QUEUE", default="") or None
SETTLEMENT_RESOLVE_MIN_AGE_SECONDS = 2 * WALLET_TIMEOUT_SECONDS

# --- Logging -----------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "exchange.api.middleware.RequestIdLogFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.server": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}
