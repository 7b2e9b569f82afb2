#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_probe
short_description: Wait until an app server answers its health check, in the protocol it speaks
description:
  - Sends GET requests to an app server over HTTP, the uwsgi protocol or FastCGI, from the host itself,
    until O(successes) answers in a row have the expected status (and body text), or O(timeout) passes.
  - Read-only, so it also probes in check mode.
version_added: "0.1.0"
author: deploykit
options:
  protocol:
    description:
      - What the server speaks. V(https) is nginx terminating TLS (the Host header's name is sent as SNI; the
        certificate is not verified).
    type: str
    choices: [http, uwsgi, fastcgi, https]
    default: http
  address:
    description: Address to connect to.
    type: str
    default: 127.0.0.1
  port:
    description: Port to connect to.
    type: int
    required: true
  path:
    description: Path (and query) to GET.
    type: str
    default: /health
  host_header:
    description: The Host header (HTTP_HOST), e.g. one of Django's ALLOWED_HOSTS.
    type: str
    default: localhost
  expect_status:
    description: The status an answer must have to count as a success; 0 takes any 2xx.
    type: int
    default: 200
  expect_body:
    description: Text an answer's body must contain to count.
    type: str
  expect_header:
    description: >-
      A header an answer must carry to count, as C(Name: value) (the name in any case), e.g. the release
      being deployed: deploykit's launcher marks every answer with C(X-Deploykit-Release).
    type: str
  successes:
    description: Successes in a row needed.
    type: int
    default: 3
  timeout:
    description: Seconds to keep trying in all.
    type: float
    default: 60
  interval:
    description: Seconds between attempts.
    type: float
    default: 0.5
  request_timeout:
    description: Seconds one request may take.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Wait for the app to answer its health check
  deploykit_probe:
    protocol: uwsgi
    port: 8000
    host_header: demo.lab
    expect_header: "X-Deploykit-Release: 1.4.2"
    successes: 3
    timeout: 60
"""

RETURN = r"""
status:
  description: Status of the last answer.
  returned: success
  type: int
  sample: 200
body:
  description: Body of the last answer (first 2000 characters).
  returned: success
  type: str
attempts:
  description: Requests sent.
  returned: always
  type: int
elapsed:
  description: Seconds from the first request to the verdict.
  returned: always
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.deploykit_probe import PROBE_OPTIONS, PROTOCOLS, ProbeError, probe, until_streak

ARGUMENT_SPEC = dict(
    PROBE_OPTIONS,
    protocol=dict(type="str", choices=list(PROTOCOLS), default="http"),  # https too: nginx's TLS
    expect_status=dict(type="int", default=200),
    expect_body=dict(type="str"),
    expect_header=dict(type="str"),
    successes=dict(type="int", default=3),
    timeout=dict(type="float", default=60.0),
    interval=dict(type="float", default=0.5),
    request_timeout=dict(type="float", default=5.0),
)


class HealthWaiter:
    def __init__(self, params):
        self.params = params

    def attempt(self):
        """(ok, status, body, reason) of one request."""
        p = self.params
        try:
            status, raw, headers = probe(p["protocol"], p["address"], p["port"], p["path"], p["host_header"],
                                         p["request_timeout"])
        except (OSError, ProbeError) as exc:
            return False, None, "", f"{type(exc).__name__}: {exc}"
        body = raw.decode("utf-8", "replace")
        if status != p["expect_status"] and not (p["expect_status"] == 0 and 200 <= status < 300):
            return False, status, body, "status {}, expected {}".format(status, p["expect_status"] or "2xx")
        if p["expect_body"] and p["expect_body"] not in body:
            return False, status, body, "body lacks {!r}".format(p["expect_body"])
        if p["expect_header"]:
            name, _, value = p["expect_header"].partition(":")
            if headers.get(name.strip().lower()) != value.strip():
                found = headers.get(name.strip().lower())
                return False, status, body, f"header {name.strip()} is {found!r}, expected {value.strip()!r}"
        return True, status, body, ""

    def wait(self):
        """Requests until `successes` healthy answers in a row, or until the next would start after `timeout`:
        (healthy, result)."""
        p = self.params
        start = time.monotonic()
        status, body, reason, elapsed = None, "", "no attempt", 0.0

        def attempt():
            nonlocal status, body, reason, elapsed
            ok, status, body, reason = self.attempt()
            elapsed = time.monotonic() - start
            return ok

        healthy, attempts = until_streak(attempt, p["successes"], p["interval"],
                                         after=lambda: elapsed + p["interval"] <= p["timeout"])
        result = dict(status=status, body=body[:2000], attempts=attempts, elapsed=round(elapsed, 3))
        return healthy, result if healthy else dict(result, last_error=reason)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["successes"] < 1 or params["timeout"] <= 0 or params["interval"] < 0:
        module.fail_json(msg="successes must be >= 1, timeout > 0 and interval >= 0")
    healthy, result = HealthWaiter(params).wait()
    if not healthy:
        target = "{}://{}:{}{}".format(params["protocol"], params["address"], params["port"], params["path"])
        module.fail_json(msg=f"no {params['successes']} healthy answers in a row from {target} within "
                             f"{params['timeout']}s; last: {result['last_error']}", **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
