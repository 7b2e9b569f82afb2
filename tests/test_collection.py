"""deploykit as an Ansible collection (scripts/collection): built, installed offline into an Ansible project of a
user's own, and used from that project's playbook against a lab host, by the modules' full names."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import FLASK, NO_CHECKS, ROOT, VENV_BIN, deploy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def serving_fleet(provisioned_fleet, test_release):
    """The test fleet with an example app answering through nginx: as another module left it, or deployed."""
    fleet = provisioned_fleet[0]
    answers = subprocess.run(fleet.ssh_argv(fleet.hosts[0], "curl -s -o /dev/null -w '%{http_code}' "
                                                           "-H 'Host: demo.lab' http://127.0.0.1/health"),
                             capture_output=True, text=True, timeout=60).stdout.strip()
    if answers != "200":
        deploy(*NO_CHECKS, "-i", str(fleet.inventory), "--version", test_release, *FLASK, "--strategy", "recreate")
    return fleet


def test_the_collection_installs_offline_and_its_modules_run_on_a_lab_host(serving_fleet, tmp_path: Path):
    built = subprocess.run([str(ROOT / "scripts" / "collection")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    tarball = Path(built.stdout.strip().splitlines()[-1])
    assert tarball.name.startswith("deploykit-deploykit-") and tarball.exists()

    project = tmp_path / "user-project"  # an Ansible project of the user's own: nothing of this checkout
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = f"{VENV_BIN}:{env['PATH']}"
    install = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "--offline", "--no-deps",
                              str(tarball), "-p", str(project / "collections")], cwd=project, env=env,
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    (project / "ansible.cfg").write_text("[defaults]\ncollections_path = ./collections\nstdout_callback = json\n"
                                         "interpreter_python = /usr/bin/python3\n")
    (project / "site.yml").write_text(textwrap.dedent("""\
        - name: Use deploykit's modules from a playbook of one's own
          hosts: web
          gather_facts: false
          tasks:
            - name: Probe the app through nginx
              deploykit.deploykit.deploykit_probe:
                protocol: http
                port: 80
                path: /health
                host_header: demo.lab
                expect_status: 200
              register: probed

            - name: Send a short open-loop load through nginx
              deploykit.deploykit.deploykit_bench:
                url: http://127.0.0.1:80/health
                host_header: demo.lab
                engine: rate
                rate: 20
                duration: 1
                connections: 2
              register: benched
        """))
    first = serving_fleet.hosts[0]["name"]
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(serving_fleet.inventory), "--limit", first,
                          "site.yml"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    tasks = {task["task"]["name"]: task["hosts"][first] for play in json.loads(run.stdout)["plays"]
             for task in play["tasks"]}
    assert tasks["Probe the app through nginx"]["status"] == 200
    bench = tasks["Send a short open-loop load through nginx"]
    assert bench["requests"] == 20 and bench["failures"] == 0, bench

    # the collection's playbooks and roles resolve by their full names in the user's project
    for playbook in ("deploykit.deploykit.site", "deploykit.deploykit.deploy", "deploykit.deploykit.bench"):
        check = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(serving_fleet.inventory),
                                "--syntax-check", playbook], cwd=project, env=env, capture_output=True, text=True,
                               timeout=120)
        assert check.returncode == 0, playbook + ": " + check.stdout[-1500:] + check.stderr[-1500:]
