"""nginx proxies to the app over HTTPS (converge.yml turns TLS on), with the production defaults and a validated
configuration; plain HTTP redirects the app's names there, but for the health paths and ACME's challenges."""

import time

CA = "/usr/local/share/molecule-ca.pem"  # prepare.yml's throwaway CA, which signed the certificate for both names
# curl for the app's names on this host over HTTPS, verifying the chain against the CA
HTTPS = f"curl -s --cacert {CA} --resolve demo.lab:443:127.0.0.1 --resolve www.demo.lab:443:127.0.0.1"
TLS_DIR = "/etc/nginx/deploykit-tls/deploykit-app"


def app(host, args):
    """A request that reaches the app: paced at the rate limit of converge.yml (5 r/s), so that no test but the
    rate limit's own meets a 429."""
    time.sleep(0.2)
    return host.run(f"{HTTPS} {args}")


def test_configuration_is_valid_without_warnings(host):
    checked = host.run("nginx -t")
    assert checked.rc == 0 and "[warn]" not in checked.stderr, checked.stderr  # e.g. a deprecated http2 form


def test_proxies_to_the_upstream_over_https(host):
    assert app(host, "https://demo.lab/index.html").stdout.strip() == "stand-in app"


def test_tells_the_app_the_request_came_over_https(host):
    assert app(host, "https://demo.lab/scheme").stdout.strip() == "https"  # X-Forwarded-Proto


def test_negotiates_http2(host):
    assert app(host, "--http2 -o /dev/null -w '%{http_version}' https://demo.lab/index.html").stdout == "2"


def test_speaks_tls_1_2_and_1_3(host):
    for version in ("--tlsv1.3", "--tlsv1.2 --tls-max 1.2"):
        answer = app(host, f"{version} -o /dev/null -w '%{{http_code}}' https://demo.lab/index.html")
        assert answer.stdout == "200", (version, answer)


def test_refuses_tls_1_1(host):
    # the client allows TLS 1.1 (SECLEVEL=0: OpenSSL 3 refuses it itself otherwise): the server's alert refuses it
    hello = host.run("openssl s_client -connect 127.0.0.1:443 -servername demo.lab -tls1_1 "
                     "-cipher 'DEFAULT:@SECLEVEL=0' </dev/null")
    assert hello.rc != 0 and "alert protocol version" in hello.stderr, hello


def test_redirects_plain_http_for_the_apps_names_to_https(host):
    for name in ("demo.lab", "www.demo.lab"):
        answer = host.check_output(f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Host: {name}' "
                                   "'http://127.0.0.1/index.html?a=1'")
        assert answer == f"301 https://{name}/index.html?a=1"


def test_health_paths_answer_over_plain_http(host):
    assert host.check_output("curl -s -H 'Host: demo.lab' http://127.0.0.1/nginx-health").strip() == "ok"
    time.sleep(0.2)  # the app's health path counts in the rate limit
    health = host.check_output("curl -s -w ' %{http_code}' -H 'Host: demo.lab' http://127.0.0.1/health")
    assert health == "stand-in health\n 200"  # proxied to the app, not redirected


def test_serves_acme_challenges_over_plain_http(host):
    webroot = host.file("/var/www/deploykit-acme")
    assert webroot.is_directory and webroot.user == "root" and webroot.mode == 0o755
    host.check_output("mkdir -p /var/www/deploykit-acme/.well-known/acme-challenge && "
                      "echo token-123.thumbprint > /var/www/deploykit-acme/.well-known/acme-challenge/token-123")
    answer = host.check_output("curl -s -w ' %{http_code}' -H 'Host: demo.lab' "
                               "http://127.0.0.1/.well-known/acme-challenge/token-123")
    assert answer == "token-123.thumbprint\n 200"
    missing = host.check_output("curl -s -o /dev/null -w '%{http_code}' -H 'Host: demo.lab' "
                                "http://127.0.0.1/.well-known/acme-challenge/nothing")
    assert missing == "404"


def test_keeps_the_key_readable_by_root_only(host):
    folder, key, chain = (host.file(f"{TLS_DIR}{name}") for name in ("", "/privkey.pem", "/fullchain.pem"))
    assert folder.is_directory and folder.user == "root" and folder.mode == 0o700
    assert key.user == "root" and key.group == "root" and key.mode == 0o600
    assert chain.user == "root" and chain.mode == 0o644
    assert chain.content_string.count("-----BEGIN CERTIFICATE-----") == 2  # the server's, then the CA's


def test_sends_hsts_over_https_only(host):
    headers = app(host, "-D - -o /dev/null https://demo.lab/index.html").stdout.lower()
    assert "strict-transport-security: max-age=300; includesubdomains" in headers
    plain = host.check_output("curl -s -D - -o /dev/null -H 'Host: demo.lab' http://127.0.0.1/nginx-health").lower()
    assert "strict-transport-security" not in plain


def test_hides_its_version(host):
    headers = host.check_output("curl -sI http://127.0.0.1/nginx-health")
    assert "Server: nginx\r" in headers
    assert "nginx/" not in headers


def test_refuses_bodies_over_the_limit(host):
    status = host.check_output(f"head -c 4096 /dev/zero | {HTTPS} -o /dev/null -w '%{{http_code}}' --data-binary @- "
                               "https://demo.lab/")
    assert status == "413"


def test_answers_each_of_the_apps_names_and_closes_the_connection_of_any_other(host):
    assert app(host, "https://www.demo.lab/index.html").stdout.strip() == "stand-in app"
    for name in ("127.0.0.1", "other.example", "demo.lab.evil"):
        unknown = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {name}' http://127.0.0.1/index.html")
        assert unknown.rc == 52 and unknown.stdout == "000", (name, unknown)  # 52: an empty reply (444)
    assert host.check_output("curl -s -H 'Host: any.name' http://127.0.0.1/nginx-health").strip() == "ok"


def test_refuses_the_tls_handshake_for_any_other_name(host):
    # from outside (the host's own address, not its loopback): another name (SNI), or none (curl sends none to an
    # address)
    address = host.check_output("hostname -I").split()[0]
    for url in (f"--resolve other.example:443:{address} https://other.example/", f"https://{address}/"):
        refused = host.run(f"curl -s -o /dev/null -w '%{{http_code}}' --cacert {CA} {url}")
        assert refused.rc == 35 and refused.stdout == "000", (url, refused)  # 35: the handshake failed
    # on the loopback the app's block takes any name (the deploy's own check and benchmark ask from there): the
    # handshake is made with the app's certificate, which is not other.example's
    local = host.run(f"curl -s -o /dev/null --cacert {CA} --resolve other.example:443:127.0.0.1 https://other.example/")
    assert local.rc == 60, local  # 60: the peer's certificate does not match the name
    asked = host.check_output("curl -sk -o /dev/null -w '%{http_code}' -H 'Host: demo.lab' https://127.0.0.1/")
    assert asked == "200"


def test_adds_security_headers_the_app_did_not_set(host):
    headers = app(host, "-D - -o /dev/null https://demo.lab/index.html").stdout.lower()
    assert "x-content-type-options: nosniff" in headers
    assert "x-frame-options: sameorigin" in headers
    assert "referrer-policy: strict-origin-when-cross-origin" in headers


def test_limits_the_request_rate_of_one_client_when_asked(host):
    # 5 r/s with a burst of 5 (converge.yml): of 40 requests at once, a few pass (4 to 6), the others get 429
    out = host.check_output(f"{HTTPS} --parallel --parallel-max 40 -w '%{{http_code}} ' "
                            "-o '/tmp/rate-limit-#1' 'https://demo.lab/index.html?[1-40]'").split()
    assert len(out) == 40 and set(out) <= {"200", "429"}, out
    assert out.count("200") >= 1 and out.count("429") >= 25, out  # the first few (earlier tests took some burst)


def test_logs_upstream_timing(host):
    time.sleep(2.0)  # the rate limit's bucket of the test before drains
    host.check_output(f"{HTTPS} -o /dev/null https://demo.lab/index.html")
    time.sleep(1.5)  # the access log is buffered, flushed every second
    last = host.check_output("tail -n 1 /var/log/nginx/access.log")
    assert "urt=" in last and "ua=127.0.0.1:8000" in last


def test_upstream_keepalive_and_limits_configured(host):
    shared = host.file("/etc/nginx/nginx.conf").content_string  # what the apps of the host share
    assert "server_tokens off;" in shared and "include /etc/nginx/deploykit.d/*.conf;" in shared
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in shared and "ssl_session_tickets off;" in shared
    conf = host.file("/etc/nginx/deploykit.d/deploykit-app.conf").content_string  # the app's own
    assert "upstream deploykit_app {" in conf and "keepalive 32;" in conf
    assert "limit_conn per_ip_deploykit_app 50;" in conf


def test_the_benchmark_tool_is_installed(host):
    assert host.package("wrk").is_installed  # the bench role, after nginx (converge.yml)


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
        answer = app(host, "-i https://demo.lab/index.html").stdout
        head = answer.lower()
        assert answer.startswith("HTTP/2 503") and "retry-after: 300" in head and "back soon" in answer
        assert "strict-transport-security: max-age=300" in head
        # the app's health path reaches the app, over HTTPS and plain HTTP; nginx's own answers
        assert app(host, "https://demo.lab/health").stdout == "stand-in health\n"
        time.sleep(0.2)
        assert host.check_output("curl -s -H 'Host: demo.lab' http://127.0.0.1/health") == "stand-in health"
        assert app(host, "https://demo.lab/nginx-health").stdout.strip() == "ok"
    finally:
        host.check_output(f"rm -f {folder}/on")
    assert app(host, "https://demo.lab/index.html").stdout.strip() == "stand-in app"
    # the app's own flag (deploy maintenance --project): that app only, with its own page
    own = f"{folder}/deploykit-app"
    host.check_output(f"mkdir -p {own} && echo '<p>this app only</p>' > {own}/page.html && touch {own}/on")
    try:
        time.sleep(0.4)
        answer = app(host, "-i https://demo.lab/index.html").stdout
        assert answer.startswith("HTTP/2 503") and "this app only" in answer
    finally:
        host.check_output(f"rm -f {own}/on")
    assert app(host, "https://demo.lab/index.html").stdout.strip() == "stand-in app"
