"""HTTPS for an app (deploykit.yml `tls`): the files a deploy hands to the nginx role, checked before any host is
touched; and, for the lab (`tls.source: self-signed`), a certificate authority of this controller's own that
signs a certificate for the app's names, its CA file written for clients (curl --cacert, a browser's import).

- none: plain HTTP.
- files: `tls.certificate`, the PEM chain, and `tls.key`, its private key encrypted with ansible-vault (the
  deploy decrypts it in memory with the vault password; it is never in an argument list or a log).
- host: `tls.certificate` and `tls.key` are files on every host (certbot's /etc/letsencrypt/live/NAME/...).
- self-signed: .deploykit/tls/ca.pem signs .deploykit/tls/APP/fullchain.pem (made again when the names change or
  it has less than 30 days left).
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

from deploy_tool.appspec import AppSpec
from deploy_tool.errors import DeployError
from deploy_tool.project import Project

SOURCES = ("none", "files", "host", "self-signed")
HOST_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]+$")
VAULT_HEADER = "$ANSIBLE_VAULT;"
LAB_DAYS = 825  # what browsers accept of a certificate's life


def controller_file(spec: AppSpec, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else spec.directory / path


def check(spec: AppSpec, password: Path | None = None) -> None:
    """The app's tls settings make sense, and their files are there (on the controller), before any host: with
    tls.source files, the key is decrypted in memory with the vault password and must be the certificate's."""
    source, certificate, key = spec["tls.source"], spec["tls.certificate"], spec["tls.key"]
    where = f"{spec.directory}/deploykit.yml"
    if source in ("none", "self-signed"):
        if certificate or key:
            raise DeployError(f"{where}: tls.certificate and tls.key are for tls.source files or host, not {source}")
        return
    if not certificate or not key:
        raise DeployError(f"{where}: tls.source {source} needs tls.certificate and tls.key")
    if source == "host":
        for name, value in (("certificate", certificate), ("key", key)):
            if not HOST_PATH.fullmatch(value):
                raise DeployError(f"{where}: tls.{name} {value!r} must be an absolute path on the hosts",
                                  hint="e.g. /etc/letsencrypt/live/example.com/fullchain.pem and privkey.pem")
        return
    chain, secret = controller_file(spec, certificate), controller_file(spec, key)
    for name, path in (("certificate", chain), ("key", secret)):
        if not path.is_file():
            raise DeployError(f"{where}: tls.{name} names {path}, which is not a file")
    if "-----BEGIN CERTIFICATE-----" not in chain.read_text(encoding="utf-8", errors="replace"):
        raise DeployError(f"{where}: tls.certificate {chain} is not a PEM certificate chain",
                          hint="the server's certificate first, then the intermediates, each "
                               "-----BEGIN CERTIFICATE-----")
    with secret.open("r", encoding="utf-8", errors="replace") as handle:
        first = handle.readline()
    if not first.startswith(VAULT_HEADER):
        raise DeployError(f"{where}: tls.key {secret} is not encrypted: a private key is kept in the vault",
                          hint=f"ansible-vault encrypt {secret} (with the app's vault password)")
    if password is None:
        raise DeployError(f"{secret} (tls.key) is encrypted: its vault password is needed",
                          hint="give --vault-password-file FILE (or answer the prompt on a terminal)")
    matching(chain, secret, password)


def matching(chain: Path, secret: Path, password: Path) -> None:
    """The vault-encrypted key decrypts, is an unencrypted PEM private key, and is the chain's first certificate's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from deploy_tool.secrets import decrypt_bytes

    plain = decrypt_bytes(secret, password, hint="check the vault password: tls.key and the app's secrets share it")
    try:
        key = serialization.load_pem_private_key(plain, password=None)
        certificate = x509.load_pem_x509_certificate(chain.read_bytes())
    except (ValueError, TypeError) as exc:
        raise DeployError(f"{secret} (tls.key) or {chain} is not usable PEM: {exc}",
                          hint="the key unencrypted inside the vault (openssl pkey -in KEY), the chain's server "
                               "certificate first") from exc
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != certificate.public_key().public_bytes(*raw):
        raise DeployError(f"{secret} (tls.key) is not the private key of {chain}'s first certificate",
                          hint="give the key the certificate was issued for, the server's certificate first")


def lab_certificate(project: Project, spec: AppSpec) -> tuple[Path, Path, Path]:
    """(the chain, its key, the CA file) of the app's lab certificate, made or made again when needed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = project.state_dir / "tls"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    ca_file, ca_key_file = folder / "ca.pem", folder / "ca-key.pem"
    now = datetime.datetime.now(datetime.UTC)

    def write(path: Path, data: bytes, mode: int) -> None:
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)

    def key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    if not ca_file.exists() or not ca_key_file.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"deploykit lab CA ({project.root.name})")])
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=3650))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(
                  digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                  key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                  decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        write(ca_key_file, key_bytes(ca_key), 0o600)
        write(ca_file, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    ca_key = loaded

    app = folder / spec.name
    app.mkdir(exist_ok=True)
    os.chmod(app, 0o700)
    chain_file, key_file = app / "fullchain.pem", app / "privkey.pem"
    names = spec.server_names
    if chain_file.exists() and key_file.exists():
        current = x509.load_pem_x509_certificate(chain_file.read_bytes())
        sans = current.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        listed = [str(v) for v in sans.get_values_for_type(x509.DNSName)] + [
            str(v) for v in sans.get_values_for_type(x509.IPAddress)]
        if (sorted(listed) == sorted(names) and current.issuer == ca.subject
                and current.not_valid_after_utc - now > datetime.timedelta(days=30)):
            return chain_file, key_file, ca_file
    import ipaddress

    alternatives: list[x509.GeneralName] = []
    for value in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            alternatives.append(x509.DNSName(value))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=LAB_DAYS))
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write(key_file, key_bytes(key), 0o600)
    write(chain_file, leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM),
          0o644)
    return chain_file, key_file, ca_file


def extravars(project: Project, spec: AppSpec) -> dict[str, object]:
    """The deploy playbook's tls variables (playbooks/deploy.yml hands them to the nginx role)."""
    source = spec["tls.source"]
    values: dict[str, object] = {"app_tls_source": source, "app_tls_hsts_max_age": spec["tls.hsts_max_age"],
                                 "app_tls_certificate": "", "app_tls_key": ""}
    if source == "self-signed":
        chain, key, _ = lab_certificate(project, spec)
        values.update(app_tls_certificate=str(chain), app_tls_key=str(key))
    elif source == "files":
        values.update(app_tls_certificate=str(controller_file(spec, spec["tls.certificate"])),
                      app_tls_key=str(controller_file(spec, spec["tls.key"])))
    elif source == "host":
        values.update(app_tls_certificate=spec["tls.certificate"], app_tls_key=spec["tls.key"])
    return values
