"""The base role leaves the kernel settings reuse-port swaps rely on, applied and persisted."""

import pytest


@pytest.mark.parametrize("name, value", [
    ("net.ipv4.tcp_migrate_req", 1),
    ("net.core.somaxconn", 4096),
    ("net.ipv4.tcp_max_syn_backlog", 4096),
])
def test_kernel_setting_is_live(host, name, value):
    assert host.sysctl(name) == value


def test_the_host_runs_the_debian_release_its_platform_names(host):
    # platforms mol-base-12 and mol-base-13 (molecule.yml): `deploy lab up --debian` started each on its release
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.split(".")[0] == host.backend.get_hostname().rsplit("-", 1)[1]


def test_kernel_settings_persist_in_sysctl_d(host):
    conf = host.file("/etc/sysctl.d/60-deploykit.conf")
    assert conf.exists
    assert "net.ipv4.tcp_migrate_req=1" in conf.content_string.replace(" ", "")


@pytest.mark.parametrize("package", ["ca-certificates", "curl", "iproute2", "procps"])
def test_base_package_installed(host, package):
    assert host.package(package).is_installed
