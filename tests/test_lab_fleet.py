"""The lab fleet: real hosts over real SSH, provisioned by site.yml (CLI and plain ansible-playbook)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import CHECKOUT_TAG, LAB_HOSTS, ROOT, ansible_playbook, deploy

DOWN_FLEET = f"citest-down-{CHECKOUT_TAG}"  # a fleet of its own, up and down in one test

pytestmark = pytest.mark.lab


def recap(output: str) -> dict[str, dict[str, int]]:
    rows = re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.MULTILINE)
    return {host: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)} for host, counts in rows}


def test_hosts_are_distinct_machines_reached_over_ssh(lab_fleet):
    assert len(lab_fleet.hosts) == LAB_HOSTS
    assert len({h["address"] for h in lab_fleet.hosts}) == LAB_HOSTS
    for host in lab_fleet.hosts:
        assert host["state"] == "running"
        assert lab_fleet.ssh(host, "hostname").strip() == host["name"]
        assert lab_fleet.ssh(host, "sudo -n id -u").strip() == "0"


def test_lab_up_again_keeps_the_same_hosts(lab_fleet, docker_client):
    label = {"label": f"io.deploykit.fleet={lab_fleet.name}"}
    before = {c.name: c.id for c in docker_client.containers.list(filters=label)}
    deploy("lab", "up", "--fleet", lab_fleet.name, "--hosts", str(LAB_HOSTS))
    after = {c.name: c.id for c in docker_client.containers.list(filters=label)}
    assert before == after and len(after) == LAB_HOSTS


@pytest.fixture(scope="module")
def provisioned(provisioned_fleet):
    return provisioned_fleet


def test_provision_through_the_cli_reports_each_host(provisioned):
    fleet, first = provisioned
    for host in fleet.hosts:
        assert re.search(rf"^\s+{host['name']}\s+ok=\d+ changed=[1-9]\d* failed=0 unreachable=0",
                         first.stdout, re.MULTILINE), first.stdout[-2000:]


def test_second_provision_with_plain_ansible_playbook_changes_nothing(provisioned):
    fleet, _ = provisioned
    result = ansible_playbook("-i", str(fleet.inventory), "playbooks/site.yml")
    assert result.returncode == 0, result.stdout[-3000:]
    counts = recap(result.stdout)
    assert sorted(counts) == sorted(h["name"] for h in fleet.hosts)
    for host, row in counts.items():
        assert row["changed"] == 0, f"{host}: {row}"
        assert row["failed"] == 0 and row["unreachable"] == 0


def test_every_host_has_tcp_migrate_req_on(provisioned):
    fleet, _ = provisioned
    for host in fleet.hosts:
        assert fleet.ssh(host, "cat /proc/sys/net/ipv4/tcp_migrate_req").strip() == "1", host["name"]
        assert fleet.ssh(host, "/usr/sbin/sysctl -n net.core.somaxconn").strip() == "4096", host["name"]


def test_the_database_takes_the_app_user_over_tls_only_from_the_web_hosts(provisioned):
    fleet, _ = provisioned
    db = fleet.hosts[0]  # the lab's db host is its first host
    secrets = yaml.safe_load((ROOT / "inventories" / "lab" / "group_vars" / "all" / "secrets.yml").read_text())
    def login(sslmode: str) -> str:
        return (f"PGPASSWORD={secrets['postgres_app_password']} psql -X -At "
                f"'host={db['address']} user=demo dbname=demo sslmode={sslmode}'")

    tls = fleet.ssh(db, f"{login('require')} -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' "
                        "2>&1 || true")
    assert tls.strip() == "t", tls
    plain = fleet.ssh(db, f"{login('disable')} -c 'SELECT 1' 2>&1 || true")
    assert "no pg_hba.conf entry" in plain and "no encryption" in plain, plain
    hba = fleet.ssh(db, "sudo sed -n '/BEGIN deploykit/,/END deploykit/p' /etc/postgresql/15/main/pg_hba.conf")
    entries = [line.split() for line in hba.splitlines() if line.startswith("host")]
    assert sorted(entry[3] for entry in entries) == sorted(f"{h['address']}/32" for h in fleet.hosts), hba
    assert {entry[0] for entry in entries} == {"hostssl"}


def test_every_host_runs_its_own_docker_engine(provisioned):
    fleet, _ = provisioned
    ids = {fleet.ssh(host, "sudo docker info --format '{{.ID}}'").strip() for host in fleet.hosts}
    assert len(ids) == len(fleet.hosts)
    for host in fleet.hosts:
        assert fleet.ssh(host, "sudo docker info --format '{{.Driver}}'").strip() == "overlay2"


def test_an_apps_nginx_file_that_nginx_refuses_is_put_back_and_nginx_keeps_serving(provisioned):
    fleet, _ = provisioned
    host = fleet.hosts[0]
    path = "/etc/nginx/deploykit.d/citest-refused.conf"
    good = "server {\n    listen 127.0.0.1:8099;\n    return 204;\n}\n"
    try:
        first = fleet.run_module(host, "deploykit_nginx_app", {"path": path, "content": good})
        assert (first["changed"], first["checked"]) == (True, True), first
        refused = fleet.run_module(host, "deploykit_nginx_app",
                                {"path": path, "content": good.replace("return 204;", "bogus_directive on;")})
        assert refused.get("failed") and 'unknown directive "bogus_directive"' in refused["msg"], refused
        assert fleet.ssh(host, f"sudo cat {path}") == good
        fleet.ssh(host, "sudo nginx -t -q")  # the whole configuration is good again
        # and live: reloaded, nginx serves the file put back (new workers take a moment to listen)
        fleet.ssh(host, "sudo nginx -s reload")
        answer = fleet.ssh(host, "for i in $(seq 50); do c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "
                                 "http://127.0.0.1:8099/); [ \"$c\" = 204 ] && break; sleep 0.1; done; echo $c")
        assert answer.strip() == "204"
        assert fleet.ssh(host, "sudo ls /etc/nginx/deploykit.d").split().count("citest-refused.conf") == 1
        assert "citest-refused.conf." not in fleet.ssh(host, "sudo ls -a /etc/nginx/deploykit.d")  # nothing aside
    finally:
        fleet.ssh(host, f"sudo rm -f {path} && sudo nginx -s reload")


def test_lab_down_removes_hosts_network_and_volumes(docker_client):
    up = json.loads(deploy("lab", "up", "--fleet", DOWN_FLEET, "--hosts", "1", "--json").stdout)
    container = docker_client.containers.get(up["hosts"][0]["container"])
    volumes = [m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"]
    assert volumes, "the host's /var/lib/docker must be on a volume"
    deploy("lab", "down", "--fleet", DOWN_FLEET)
    assert not docker_client.containers.list(all=True, filters={"label": f"io.deploykit.fleet={DOWN_FLEET}"})
    assert not docker_client.networks.list(names=[f"deploykit-{DOWN_FLEET}"])
    names = {v.name for v in docker_client.volumes.list()}
    assert not names & set(volumes)
    assert not Path(up["inventory"]).exists()
    status = deploy("lab", "status", "--fleet", DOWN_FLEET)
    assert "no hosts" in status.stdout
