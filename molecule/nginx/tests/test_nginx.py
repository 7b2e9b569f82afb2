"""nginx proxies to the app, with the production defaults and a validated configuration."""

import time


def test_configuration_is_valid(host):
    assert host.run("nginx -t").rc == 0


def test_proxies_to_the_upstream(host):
    out = host.check_output("curl -s -H 'Host: demo.lab' http://127.0.0.1/index.html")
    assert out.strip() == "stand-in app"


def test_hides_its_version(host):
    headers = host.check_output("curl -sI http://127.0.0.1/nginx-health")
    assert "Server: nginx\r" in headers
    assert "nginx/" not in headers


def test_refuses_bodies_over_the_limit(host):
    status = host.check_output(
        "head -c 4096 /dev/zero | curl -s -o /dev/null -w '%{http_code}' -H 'Host: demo.lab' --data-binary @- "
        "http://127.0.0.1/")
    assert status == "413"


def test_answers_each_of_the_apps_names_and_closes_the_connection_of_any_other(host):
    assert host.check_output("curl -s -H 'Host: www.demo.lab' http://127.0.0.1/index.html").strip() == "stand-in app"
    for name in ("127.0.0.1", "other.example", "demo.lab.evil"):
        unknown = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {name}' http://127.0.0.1/index.html")
        assert unknown.rc == 52 and unknown.stdout == "000", (name, unknown)  # 52: an empty reply (444)
    assert host.check_output("curl -s -H 'Host: any.name' http://127.0.0.1/nginx-health").strip() == "ok"


def test_adds_security_headers_the_app_did_not_set(host):
    headers = host.check_output("curl -s -D - -o /dev/null -H 'Host: demo.lab' http://127.0.0.1/index.html").lower()
    assert "x-content-type-options: nosniff" in headers
    assert "x-frame-options: sameorigin" in headers
    assert "referrer-policy: strict-origin-when-cross-origin" in headers


def test_limits_the_request_rate_of_one_client_when_asked(host):
    # 5 r/s with a burst of 5 (converge.yml): of 40 requests at once, a few pass (4 to 6), the others get 429
    out = host.check_output("curl -s --parallel --parallel-max 40 -H 'Host: demo.lab' -w '%{http_code} ' "
                            "-o '/tmp/rate-limit-#1' 'http://127.0.0.1/index.html?[1-40]'").split()
    assert len(out) == 40 and set(out) <= {"200", "429"}, out
    assert out.count("200") >= 1 and out.count("429") >= 25, out  # the first few (earlier tests took some burst)


def test_logs_upstream_timing(host):
    time.sleep(2.0)  # the rate limit's bucket of the test before drains
    host.check_output("curl -s -o /dev/null -H 'Host: demo.lab' http://127.0.0.1/index.html")
    time.sleep(1.5)  # the access log is buffered, flushed every second
    last = host.check_output("tail -n 1 /var/log/nginx/access.log")
    assert "urt=" in last and "ua=127.0.0.1:8000" in last


def test_upstream_keepalive_and_limits_configured(host):
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert "keepalive 32;" in conf
    assert "server_tokens off;" in conf
    assert "limit_conn per_ip 50;" in conf


def test_default_site_removed(host):
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_nginx_running_and_enabled(host):
    assert host.process.filter(comm="nginx")
    assert host.file("/etc/rc2.d/S01nginx").exists


def test_maintenance_mode_answers_503_with_its_page_and_lets_health_probes_through(host):
    """What tasks/maintenance.yml switches (its page, then its flag file): no reload between."""
    folder = "/etc/nginx/deploykit-maintenance"
    time.sleep(1.5)  # the rate limit's burst (5 r/s, 5) refilled after the tests before
    host.check_output(f"mkdir -p {folder} && echo '<p>back soon</p>' > {folder}/page.html && touch {folder}/on")
    try:
        answer = host.check_output("curl -s -i -H 'Host: demo.lab' http://127.0.0.1/index.html")
        assert answer.startswith("HTTP/1.1 503") and "Retry-After: 300" in answer and "back soon" in answer
        # the app's health path reaches the app (the stand-in has none: its own 404), nginx's own answers
        assert host.check_output("curl -s -o /dev/null -w '%{http_code}' -H 'Host: demo.lab' "
                                 "http://127.0.0.1/health") == "404"
        assert host.check_output("curl -s -H 'Host: demo.lab' http://127.0.0.1/nginx-health").strip() == "ok"
    finally:
        host.check_output(f"rm -f {folder}/on")
    assert host.check_output("curl -s -H 'Host: demo.lab' http://127.0.0.1/index.html").strip() == "stand-in app"
