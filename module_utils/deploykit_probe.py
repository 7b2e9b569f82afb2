"""One GET request to an app server, in the protocol it speaks: HTTP, uwsgi or FastCGI (or to nginx over HTTPS); and
the loop of a health check, until a streak of successes (until_streak).

Used by deploykit's modules on the hosts (health gates) and by its tests on the controller.
Standard library only: it runs on the hosts' python3.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable

APP_PROTOCOLS = ("http", "uwsgi", "fastcgi")  # what an app container speaks
PROTOCOLS = APP_PROTOCOLS + ("https",)  # and nginx, when it terminates TLS

# Argument spec of "where and how to probe", shared by the modules that probe (deploykit_probe, deploykit_swap).
PROBE_OPTIONS = dict(
    protocol=dict(type="str", choices=list(APP_PROTOCOLS), default="http"),
    address=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", required=True),
    path=dict(type="str", default="/health"),
    host_header=dict(type="str", default="localhost"),
)


class ProbeError(Exception):
    pass


def _recv_all(sock):
    chunks: list[bytes] = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _cgi_params(path, host, port):
    path_only, _, query = path.partition("?")
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path_only, "REQUEST_URI": path,
        "QUERY_STRING": query, "SERVER_NAME": host, "SERVER_PORT": str(port), "HTTP_HOST": host,
        "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": "", "CONTENT_TYPE": "",
        "wsgi.url_scheme": "http",
    }


def _parse_http(raw, cgi_style=False):
    """(status, body, headers) of a raw answer; header names in lower case."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if cgi_style:  # FastCGI responders answer with CGI headers: "Status: 200 OK"
        status, fields = 200, lines
    elif not lines or not lines[0].startswith("HTTP/"):
        raise ProbeError(f"not an HTTP response: {raw[:80]!r}")
    else:
        status, fields = int(lines[0].split()[1]), lines[1:]
    headers = {}
    for line in fields:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if cgi_style and "status" in headers:
        status = int(headers["status"].split()[0])
    return status, body, headers


def http_get(address, port, path, host, timeout):
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: deploykit-probe\r\n\r\n"
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(request.encode("latin-1"))
        return _parse_http(_recv_all(sock))


def https_get(address, port, path, host, timeout):
    """HTTP over TLS, the Host header's name sent as SNI. The certificate is not verified: this asks whether the
    host's own nginx answers over TLS (clients verify it; the lab's tests do with its CA)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: deploykit-probe\r\n\r\n"
    chunks: list[bytes] = []
    with socket.create_connection((address, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=host) as sock:
        sock.sendall(request.encode("latin-1"))
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ssl.SSLEOFError:  # closed without TLS's close_notify: the answer is what came
            pass
    return _parse_http(b"".join(chunks))


def uwsgi_get(address, port, path, host, timeout):
    payload = b""
    for key, value in _cgi_params(path, host, port).items():
        k, v = key.encode("latin-1"), value.encode("latin-1")
        payload += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("<BHB", 0, len(payload), 0) + payload)
        return _parse_http(_recv_all(sock))


def _fcgi_record(kind, request_id, content):
    return struct.pack("!BBHHBx", 1, kind, request_id, len(content), 0) + content


def _fcgi_length(n):
    return struct.pack("!B", n) if n < 128 else struct.pack("!I", n | 0x80000000)


def fastcgi_get(address, port, path, host, timeout):
    params = b""
    for key, value in _cgi_params(path, host, port).items():
        k, v = key.encode("latin-1"), value.encode("latin-1")
        params += _fcgi_length(len(k)) + _fcgi_length(len(v)) + k + v
    begin = struct.pack("!HB5x", 1, 0)  # role RESPONDER, no keep-alive
    message = (_fcgi_record(1, 1, begin) + _fcgi_record(4, 1, params) + _fcgi_record(4, 1, b"")
               + _fcgi_record(5, 1, b""))
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(message)
        raw = _recv_all(sock)
    stdout, offset = b"", 0
    while offset + 8 <= len(raw):
        _, kind, _, length, padding = struct.unpack("!BBHHB", raw[offset:offset + 7])
        content = raw[offset + 8:offset + 8 + length]
        offset += 8 + length + padding
        if kind == 6:
            stdout += content
        elif kind == 3:
            return _parse_http(stdout, cgi_style=True)
    raise ProbeError("FastCGI response ended without END_REQUEST")


def probe(protocol, address, port, path="/health", host="localhost", timeout=5.0):
    """(status, body, headers) of one GET, header names in lower case; raises OSError when the connection
    fails, ProbeError on a garbled answer."""
    getters = {"http": http_get, "uwsgi": uwsgi_get, "fastcgi": fastcgi_get, "https": https_get}
    if protocol not in getters:
        raise ProbeError("unknown protocol {!r} (one of {})".format(protocol, ", ".join(PROTOCOLS)))
    return getters[protocol](address, port, path, host, timeout)


def until_streak(attempt: Callable[[], bool | None], successes: int, interval: float,
                 before: Callable[[], bool] = lambda: True,
                 after: Callable[[], bool] = lambda: True) -> tuple[bool, int]:
    """Call attempt() every `interval` seconds until `successes` of its answers in a row were True: (True,
    attempts made). An answer False (a failure) starts the streak again; None (neither, e.g. an answer from
    another server on the port) leaves it as it is. Before each attempt before() says whether to make it, after
    each one that did not end the streak after() says whether to go on (either may raise): when one says no,
    (False, attempts made)."""
    attempts = streak = 0
    while before():
        ok = attempt()
        attempts += 1
        streak = 0 if ok is False else streak + (ok is True)
        if ok and streak >= successes:
            return True, attempts
        if not after():
            break
        time.sleep(interval)
    return False, attempts
