"""Settings from the environment: the image holds no secret and no host name."""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    raise RuntimeError("DJANGO_SECRET_KEY is not set (the app role passes it from the vault)")
DEBUG = False
ALLOWED_HOSTS = [h for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h]
ROOT_URLCONF = "demo.urls"
WSGI_APPLICATION = "demo.wsgi.application"
INSTALLED_APPS = ["django.contrib.contenttypes", "guestbook"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True, "DIRS": []}]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DB_PORT", "5432"),
        "NAME": os.environ.get("DB_NAME", "demo"),
        "USER": os.environ.get("DB_USER", "demo"),
        "PASSWORD": os.environ.get("DB_PASSWORD", ""),
        # Persistent connections (seconds): a new authenticated connection per request costs more than the
        # request. Greenlet workers use a pool per process instead (DB_POOL, demo/pooled_postgresql/base.py):
        # Django's connections are per thread, and each of their requests is a greenlet, a thread to Django.
        "CONN_MAX_AGE": int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"connect_timeout": 5},
    }
}
if os.environ.get("DB_POOL") == "1":  # greenlet workers (deploykit's variants.yml): see demo/pooled_postgresql/base.py
    DATABASES["default"]["ENGINE"] = "demo.pooled_postgresql"
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django's close at each request's end gives the connection back
if os.environ.get("DB_GREEN_WAIT") == "1":
    # gevent and eventlet workers (deploykit's variants.yml): libpq's calls would block the worker's whole event loop,
    # and every request it holds, while one waits for PostgreSQL. With a wait callback psycopg2 waits in
    # select(), which those workers have made cooperative before the app is loaded.
    import psycopg2.extensions
    import psycopg2.extras

    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
if os.environ.get("DB_ENGINE") == "sqlite":  # for running the app without a database server
    DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("DB_NAME", "/tmp/demo.db")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
