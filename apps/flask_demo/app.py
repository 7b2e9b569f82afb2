"""A small Flask app: a page, a form that POSTs then redirects, a health endpoint and a slow endpoint."""

import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque

from flask import Flask, Response, redirect, render_template_string, request, url_for

RELEASE = os.environ.get("DEPLOYKIT_RELEASE", "dev")
VARIANT = os.environ.get("DEPLOYKIT_VARIANT", "")
INSTANCE = os.environ.get("DEPLOYKIT_INSTANCE", "")  # which container answered (two share the port in a swap)
DELAY_S = int(os.environ.get("DEPLOYKIT_APP_DELAY_MS", "0")) / 1000
FAULT = os.environ.get("DEPLOYKIT_APP_FAULT", "")  # test releases only: see apps/Dockerfile
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


def _listeners(port: int) -> set[int]:
    """Inodes of the sockets listening on TCP `port` in this network namespace (the host's: app containers use
    host networking), asked of the kernel as ss does (sock_diag netlink, listening sockets only: cheap, unlike
    reading /proc/net/tcp with its thousands of closing connections)."""
    inodes = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4) as diag:  # NETLINK_SOCK_DIAG
            # inet_diag_req_v2: family, protocol, ext, pad, states (1 << TCP_LISTEN), then a zero socket id
            request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
            # nlmsghdr: length, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, port id
            diag.send(struct.pack("=IHHII", 16 + len(request), 20, 0x301, 1, 0) + request)
            done = False
            while not done:
                data = diag.recv(65536)
                offset = 0
                while offset + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, offset)
                    if kind in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                        done = True
                        break
                    # inet_diag_msg: family, state, timer, retrans, the id (48 bytes, source port first,
                    # big-endian), expires, rqueue, wqueue, uid, inode
                    if struct.unpack_from("!H", data, offset + 16 + 4)[0] == port:
                        inodes.add(struct.unpack_from("=I", data, offset + 16 + 68)[0])
                    offset += (length + 3) & ~3
    return inodes


def _crash_when_a_listener_leaves() -> None:
    """The crash-during-drain fault: stop the server (PID 1) as soon as a listener of the port closes (the old
    container's, or the drain guard's at its first turn: either is there only once the old one is stopped).
    By inode, not by count: a close and an open between two looks would leave the count as it was. One
    watcher per container (the first worker to get here), polling every 50 ms; it says when it fires."""
    try:
        os.close(os.open("/tmp/deploykit-fault-watcher", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    port = int(os.environ.get("DEPLOYKIT_PORT", "8000"))
    seen: set[int] = set()
    while True:
        try:
            now = _listeners(port)
        except OSError:  # a failed netlink dump must not end the watcher (the fault would then never fire)
            time.sleep(0.05)
            continue
        if len(seen) >= 2 and seen - now:
            print(f"deploykit fault crash-during-drain: listener(s) {sorted(seen - now)} of port {port} closed; "
                  "stopping the server", file=sys.stderr, flush=True)
            os.kill(1, signal.SIGQUIT)  # quick shutdown
            return
        seen |= now
        time.sleep(0.05)


@app.get("/health")
def health():
    if FAULT == "unhealthy":
        return json_response(status="unhealthy by build (DEPLOYKIT_APP_FAULT)"), 503
    if FAULT == "crash-after-healthy" and not _crash.is_set():
        _crash.set()  # the server (PID 1 of the container) is stopped 0.8 s after its first health answer
        threading.Timer(0.8, os.kill, (1, signal.SIGQUIT)).start()  # quick shutdown
    # in a worker, not in the launcher's check before it binds (PID 1, which is about to exec the server)
    if FAULT == "crash-during-drain" and not _crash.is_set() and os.getpid() != 1:
        _crash.set()
        threading.Thread(target=_crash_when_a_listener_leaves, daemon=True).start()
    return json_response(status="ok", app="flask", release=RELEASE, variant=VARIANT, instance=INSTANCE,
                         pid=os.getpid())


@app.get("/slow")
def slow():
    delay = min(int(request.args.get("ms", "1000")), 30000) / 1000
    time.sleep(delay)
    return json_response(slept_ms=int(delay * 1000), release=RELEASE, pid=os.getpid())


application = app
