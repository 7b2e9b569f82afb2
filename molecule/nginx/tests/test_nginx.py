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
        "head -c 4096 /dev/zero | curl -s -o /dev/null -w '%{http_code}' --data-binary @- http://127.0.0.1/")
    assert status == "413"


def test_logs_upstream_timing(host):
    host.check_output("curl -s -o /dev/null http://127.0.0.1/index.html")
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
