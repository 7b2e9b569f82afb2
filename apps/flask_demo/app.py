"""A small Flask app: a page, a form that POSTs then redirects, a health endpoint, a slow endpoint, and long-lived
requests (server-sent events, a slow download, an upload) for the swap tests."""

import hashlib
import json
import os
import signal
import threading
import time
from collections import deque

from flask import Flask, Response, redirect, render_template_string, request, url_for

RELEASE = os.environ.get("DEPLOYKIT_RELEASE", "dev")
VARIANT = os.environ.get("DEPLOYKIT_VARIANT", "")
INSTANCE = os.environ.get("DEPLOYKIT_INSTANCE", "")  # which container answered (two share the port in a swap)
DELAY_S = int(os.environ.get("APP_DELAY_MS", "0")) / 1000
# A fault baked into a test release (deploy build --env APP_FAULT=...): "" (none), unhealthy (/health answers
# 503), or crash-after-healthy (the server is stopped 0.8 s after its first health answer). A crash while the old
# container drains is injected from outside, at the swap's step (tests/crash_at_step.py).
FAULT = os.environ.get("APP_FAULT", "")
_crash = threading.Event()

app = Flask(__name__)
_notes: deque[str] = deque(maxlen=20)  # per process: this app has no database
_lock = threading.Lock()

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Notes</title></head><body>
<h1>Notes</h1><p class="release">release {{ release }} {{ variant }}</p>
<form method="post" action="/"><input name="note" maxlength="200"><button type="submit">Add</button></form>
<ol class="entries">{% for note in notes %}<li>{{ note }}</li>{% endfor %}</ol>
</body></html>
"""


def json_response(**fields) -> Response:
    """JSON formatted as Django's JsonResponse does, so health checks read both apps alike."""
    return Response(json.dumps(fields), mimetype="application/json")


@app.route("/", methods=["GET", "POST"])
def index():
    if DELAY_S:
        time.sleep(DELAY_S)
    if request.method == "POST":
        note = request.form.get("note", "").strip()
        if not note:
            return "note is required", 400
        with _lock:
            _notes.appendleft(note[:200])
        return redirect(url_for("index"), code=303)
    with _lock:
        notes = list(_notes)
    return render_template_string(PAGE, notes=notes, release=RELEASE, variant=VARIANT)


@app.get("/health")
def health():
    if FAULT == "unhealthy":
        return json_response(status="unhealthy by build (APP_FAULT)"), 503
    if FAULT == "crash-after-healthy" and not _crash.is_set():
        _crash.set()  # the server (PID 1 of the container) is stopped 0.8 s after its first health answer
        threading.Timer(0.8, os.kill, (1, signal.SIGQUIT)).start()  # quick shutdown
    return json_response(status="ok", app="flask", release=RELEASE, variant=VARIANT, instance=INSTANCE,
                         pid=os.getpid())


@app.get("/slow")
def slow():
    delay = min(int(request.args.get("ms", "1000")), 30000) / 1000
    time.sleep(delay)
    return json_response(slept_ms=int(delay * 1000), release=RELEASE, pid=os.getpid())


def _bounded(name: str, default: int, high: int) -> int:
    try:
        return max(0, min(int(request.args.get(name, default)), high))
    except ValueError:
        return default


@app.get("/events")
def events():
    """Server-sent events: one a second for `seconds`, then an `end` event. Each names the container, so a
    client sees which one served its whole stream."""
    seconds = _bounded("seconds", 10, 600)

    def stream():
        for number in range(seconds):
            yield f"data: {json.dumps({'n': number, 'instance': INSTANCE})}\n\n"
            time.sleep(1)
        yield f"event: end\ndata: {json.dumps({'n': seconds, 'instance': INSTANCE})}\n\n"

    return Response(stream(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # nginx: pass it on at once


@app.get("/download")
def download():
    """`mb` megabytes of a known pattern, sent slowly over `seconds` (its sha256 is in a header, to check it)."""
    size, seconds = _bounded("mb", 10, 200) * 1024 * 1024, _bounded("seconds", 10, 600)
    chunk = bytes(range(256)) * 256  # 64 KiB
    chunks = size // len(chunk)
    digest = hashlib.sha256()
    for _ in range(chunks):
        digest.update(chunk)

    def stream():
        for index in range(chunks):
            yield chunk
            if seconds and index % 16 == 15:  # 1 MiB at a time
                time.sleep(seconds / (chunks / 16))

    return Response(stream(), mimetype="application/octet-stream",
                    headers={"Content-Length": str(chunks * len(chunk)), "X-Content-Sha256": digest.hexdigest(),
                             "X-Accel-Buffering": "no"})


@app.post("/upload")
def upload():
    """The body's size and sha256, read as it comes."""
    digest, size = hashlib.sha256(), 0
    while True:
        block = request.stream.read(65536)
        if not block:
            break
        digest.update(block)
        size += len(block)
    return json_response(bytes=size, sha256=digest.hexdigest(), instance=INSTANCE)


application = app
