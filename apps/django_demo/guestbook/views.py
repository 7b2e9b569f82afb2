"""The classic browse-and-write workload: a form, the latest 20 rows, POST then redirect."""

import os
import time

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from guestbook.forms import EntryForm
from guestbook.models import Entry

RELEASE = os.environ.get("DEPLOYKIT_RELEASE", "dev")
VARIANT = os.environ.get("DEPLOYKIT_VARIANT", "")
# Which container answered: during a reuse-port swap two containers share the port.
INSTANCE = os.environ.get("DEPLOYKIT_INSTANCE", "")
# A per-request delay (ms), baked into a deliberately slow test release (deploy build --env APP_DELAY_MS=2000).
DELAY_S = int(os.environ.get("APP_DELAY_MS", "0")) / 1000


def index(request: HttpRequest) -> HttpResponse:
    if DELAY_S:
        time.sleep(DELAY_S)
    if request.method == "POST":
        form = EntryForm(request.POST)
        if form.is_valid():
            form.save()
            return redirect("index")
    else:
        form = EntryForm()
    entries = Entry.objects.all()[:20]
    return render(request, "guestbook/index.html",
                  {"form": form, "entries": entries, "release": RELEASE, "variant": VARIANT})


def health(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "app": "django", "release": RELEASE, "variant": VARIANT,
                         "instance": INSTANCE, "pid": os.getpid()})


def slow(request: HttpRequest) -> JsonResponse:
    """Sleeps ?ms= milliseconds (at most 30 s): a request in flight for graceful-stop tests."""
    delay = min(int(request.GET.get("ms", "1000")), 30000) / 1000
    time.sleep(delay)
    return JsonResponse({"slept_ms": int(delay * 1000), "release": RELEASE, "pid": os.getpid()})
