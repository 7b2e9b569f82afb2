"""The nginx role refuses TLS settings it cannot serve before it changes a host, saying why, and logs no key.

Its preflight tasks run on the controller alone (asserts and filters), so one ansible-playbook run checks each case
as a host of its own, with connection local and no host touched."""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import ROOT, VENV_BIN


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def _certificate_pem(key: ec.EllipticCurvePrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo.lab")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def preflight(tmp_path_factory) -> tuple[dict[str, str | None], str, list[str]]:
    """Each case's failure message (None: passed), the run's whole output, and the private keys it was given."""
    key, other_key = _key(), _key()
    certificate = _certificate_pem(key)
    cases = {
        "tls_off": {},
        "good": {"nginx_tls_certificate": certificate, "nginx_tls_key": _key_pem(key)},
        "nothing_given": {},
        "paths_given": {"nginx_tls_certificate": "/etc/ssl/demo.pem", "nginx_tls_key": "/etc/ssl/demo.key"},
        "key_missing": {"nginx_tls_certificate": certificate},
        "encrypted_key": {"nginx_tls_certificate": certificate, "nginx_tls_key": _key_pem(key, b"secret")},
        "another_key": {"nginx_tls_certificate": certificate, "nginx_tls_key": _key_pem(other_key)},
        "same_port": {"nginx_tls_certificate": certificate, "nginx_tls_key": _key_pem(key), "nginx_tls_port": 80},
        "files_on_host": {"nginx_tls_certificate_file": "/etc/letsencrypt/live/demo.lab/fullchain.pem",
                          "nginx_tls_key_file": "/etc/letsencrypt/live/demo.lab/privkey.pem"},
        "file_without_key": {"nginx_tls_certificate_file": "/etc/letsencrypt/live/demo.lab/fullchain.pem"},
        "files_and_text": {"nginx_tls_certificate_file": "/etc/letsencrypt/live/demo.lab/fullchain.pem",
                           "nginx_tls_key_file": "/etc/letsencrypt/live/demo.lab/privkey.pem",
                           "nginx_tls_certificate": certificate, "nginx_tls_key": _key_pem(key)},
    }
    hosts = {name: {"nginx_tls": name != "tls_off", **settings} for name, settings in cases.items()}
    work = tmp_path_factory.mktemp("nginx-preflight")
    (work / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts,
                                                                "vars": {"ansible_connection": "local"}}}))
    (work / "play.yml").write_text("- name: Check the nginx role's settings\n  hosts: all\n  gather_facts: false\n"
                                   "  roles:\n    - role: nginx\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
           "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    run = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "inventory.yml", "play.yml",
                          "--tags", "nginx_preflight", "--check"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(run.stdout)
    failures: dict[str, str | None] = dict.fromkeys(cases)
    for task in report["plays"][0]["tasks"]:
        for host, result in task["hosts"].items():
            if result.get("failed"):
                failures[host] = result.get("msg") or result.get("censored")
    keys = [key for settings in cases.values() if "PRIVATE KEY" in (key := settings.get("nginx_tls_key", ""))]
    return failures, run.stdout + run.stderr, keys


def test_accepts_a_certificate_with_its_key_and_checks_nothing_with_tls_off(preflight):
    failures, _, _ = preflight
    assert failures["good"] is None and failures["tls_off"] is None
    assert failures["files_on_host"] is None  # read in place by nginx (certbot's), which nginx -t checks


@pytest.mark.parametrize(("case", "says"), [
    ("nothing_given", "nginx_tls_certificate is empty or is not PEM"),
    ("paths_given", "nginx_tls_certificate is empty or is not PEM"),
    ("key_missing", "nginx_tls_key is empty or is not PEM"),
    ("encrypted_key", "nginx_tls_key is encrypted"),
    ("another_key", "nginx_tls_key is not the private key of nginx_tls_certificate"),
    ("same_port", "HTTPS needs a port of its own"),
    ("file_without_key", "not some of each"),
    ("files_and_text", "not some of each"),
])
def test_refuses_what_nginx_could_not_serve_saying_why(preflight, case, says):
    failures, _, _ = preflight
    assert failures[case] is not None and says in failures[case], failures[case]


def test_logs_no_private_key(preflight):
    _, output, keys = preflight
    for key in keys:
        body = key.splitlines()[1]  # the first line of the key's base64
        assert body not in output
