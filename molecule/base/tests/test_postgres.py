"""The postgres role, converged in this scenario after base: the PostgreSQL of the host's Debian release, its own
cluster configured, the app's user let in with its password over TLS only."""

VERSIONS = {"12": 15, "13": 17}  # the PostgreSQL major version each Debian release ships
PASSWORD = "molecule-test-password"  # converge.yml's


def version(host):
    return VERSIONS[host.system_info.release.split(".")[0]]


def psql_as_app(host, sslmode):
    address = host.check_output("hostname -I").split()[0]  # a host of postgres_allowed_group, by its address
    return host.run(f"PGPASSWORD={PASSWORD} psql 'host={address} dbname=demo user=demo sslmode={sslmode}' -tAc "
                    "'select ssl from pg_stat_ssl where pid = pg_backend_pid()'")


def test_the_release_s_own_cluster_runs(host):
    assert host.check_output("pg_lsclusters --no-header").split()[:4] == [str(version(host)), "main", "5432",
                                                                          "online"]


def test_the_settings_are_in_that_cluster_and_live(host):
    conf = host.file(f"/etc/postgresql/{version(host)}/main/conf.d/60-deploykit.conf")
    assert "max_connections = 300" in conf.content_string
    assert host.check_output("runuser -u postgres -- psql -tAc 'show max_connections'") == "300"
    assert host.check_output("runuser -u postgres -- psql -tAc 'show server_version_num'")[:2] == str(version(host))


def test_the_app_user_connects_over_tls_with_its_password(host):
    connected = psql_as_app(host, "require")
    assert connected.rc == 0 and connected.stdout.strip() == "t", connected


def test_the_app_user_without_tls_is_refused(host):
    refused = psql_as_app(host, "disable")
    assert refused.rc != 0 and "no pg_hba.conf entry" in refused.stderr, refused
