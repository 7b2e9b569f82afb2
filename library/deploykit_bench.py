#!/usr/bin/python
# Copyright: deploykit contributors; MIT License

from __future__ import annotations

DOCUMENTATION = r"""
---
module: deploykit_bench
short_description: Run a short HTTP benchmark from the host against a server on it
description:
  - Runs a load against an HTTP URL from the host itself and returns requests per second, failed requests
    and latency percentiles.
  - O(engine=wrk) runs wrk (closed loop, as many requests as the connections can carry).
  - O(engine=rate) runs a built-in open-loop client at a fixed O(rate). Each request has a scheduled start,
    and its latency counts from that moment, so a stalled server shows as latency instead of hiding it
    (coordinated omission). Debian's wrk has no fixed-rate mode (that is wrk2).
  - In check mode nothing is sent.
version_added: "0.1.0"
author: deploykit
options:
  url:
    description: The http:// URL to load, e.g. http://127.0.0.1:80/.
    type: str
    required: true
  host_header:
    description: The Host header sent (one of Django's ALLOWED_HOSTS, nginx's server_name).
    type: str
    default: localhost
  engine:
    description: wrk (closed loop) or rate (open loop at O(rate) requests per second).
    type: str
    choices: [wrk, rate]
    default: wrk
  duration:
    description: Seconds of load.
    type: int
    default: 5
  connections:
    description: Connections kept open (wrk), or the most requests in flight at once (rate).
    type: int
    default: 16
  threads:
    description: wrk threads.
    type: int
    default: 2
  rate:
    description: Requests per second, for O(engine=rate).
    type: int
    default: 100
  timeout:
    description: Seconds after which a request counts as failed.
    type: int
    default: 10
  wrk_path:
    description: The wrk program.
    type: path
    default: wrk
  cpus:
    description:
      - The CPUs the client runs on, as taskset takes them (V(0), V(0-1), V(0,2-3)); empty, where the module runs.
      - With the server's cores pinned elsewhere (a lab host started with C(deploy lab up --cpus)), the load
        client then does not take CPU time from the server it measures.
    type: str
    default: ""
"""

EXAMPLES = r"""
- name: Benchmark the site through nginx for 5 seconds
  deploykit_bench:
    url: http://127.0.0.1:80/
    host_header: demo.lab
    connections: 16

- name: Benchmark a host from the controller, the client kept on CPU 0
  deploykit_bench:
    url: http://192.0.2.10:80/
    host_header: demo.lab
    cpus: "0"
  delegate_to: localhost

- name: Measure latency at a fixed 200 requests per second
  deploykit_bench:
    url: http://127.0.0.1:8000/
    host_header: demo.lab
    engine: rate
    rate: 200
"""

RETURN = r"""
requests:
  description: Requests completed or failed.
  type: int
  returned: success
failures:
  description: Failed requests (connection errors, timeouts, answers other than 2xx and 3xx).
  type: int
  returned: success
errors:
  description: Failed requests by cause.
  type: dict
  returned: success
rps:
  description: Requests per second.
  type: float
  returned: success
p50_ms:
  description: Median latency in milliseconds (p90_ms, p99_ms and max_ms are returned too).
  type: float
  returned: success
retried:
  description: Requests sent again once on a new connection because the server closed a kept-alive one as
    they were sent (as browsers do; not failures).
  type: int
  returned: when O(engine=rate)
cpus:
  description: The CPUs the client ran on, as the kernel reported its affinity.
  type: list
  elements: int
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.deploykit_bench import BenchError, bench, validate  # noqa: E402

ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    host_header=dict(type="str", default="localhost"),
    engine=dict(type="str", choices=["wrk", "rate"], default="wrk"),
    duration=dict(type="int", default=5),
    connections=dict(type="int", default=16),
    threads=dict(type="int", default=2),
    rate=dict(type="int", default=100),
    timeout=dict(type="int", default=10),
    wrk_path=dict(type="path", default="wrk"),
    cpus=dict(type="str", default=""),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        validate(module.params)
        if module.check_mode:
            module.exit_json(changed=False, skipped=True, msg="check mode: no load sent")
        result = bench(module.run_command, module.params, module.warn)
    except BenchError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
