"""The kubelet API's TLS: one live SSLContext whose serving certificate can change under it.

Sources, in order of precedence:

* files (``--tls-cert-file``/``--tls-key-file``), re-read when their mtime/size/inode change;
* a ``kubernetes.io/tls`` Secret (``--tls-secret NAMESPACE/NAME``), re-read every reload interval;
* a ``kubernetes.io/kubelet-serving`` CSR (``--serving-cert-csr``): we serve a self-signed
  certificate until the CSR is approved (by an admin, or by ourselves with
  ``--serving-cert-self-approve``) and signed, then switch, and renew at 80 % of its lifetime;
* else a self-signed certificate: CN ``system:node:NODE``, O ``system:nodes``, SAN the node IP.

A new pair is validated on a scratch context first and only then loaded into the live one
(``SSLContext.load_cert_chain`` on a live context affects the connections accepted afterwards),
so a half-written rotation never breaks the listener. Client certificates are verified against
``--client-ca-file`` when given (optional: a request without one can still use a token).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import pathlib
import ssl
import tempfile
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vk_operator import pki
from vk_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"


class TLSConfigError(Exception):
    """The serving certificate or client CA cannot be used; the message says which and why."""


def _file_stamp(path: pathlib.Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def fingerprint(cert_pem: bytes) -> str:
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


class ServingCertificate:
    def __init__(
        self,
        *,
        node_name: str,
        node_ip: str,
        cert_file: str | None = None,
        key_file: str | None = None,
        secret: str | None = None,
        client_ca_file: str | None = None,
        reload_interval: float = 10.0,
    ) -> None:
        if bool(cert_file) != bool(key_file):
            raise TLSConfigError("--tls-cert-file and --tls-key-file go together")
        if secret is not None and secret.count("/") != 1:
            raise TLSConfigError(f"--tls-secret {secret!r}: expected NAMESPACE/NAME")
        self.node_name = node_name
        self.node_ip = node_ip
        self.cert_file = pathlib.Path(cert_file) if cert_file else None
        self.key_file = pathlib.Path(key_file) if key_file else None
        self.secret = secret
        self.client_ca_file = pathlib.Path(client_ca_file) if client_ca_file else None
        self.reload_interval = reload_interval
        self.cert_pem = b""
        self.source = "none"
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._file_stamps: tuple[Any, ...] = ()
        self._ca_stamp: Any = None
        self.reloads = 0

    # -- loading -----------------------------------------------------------------------------------
    def load_pair(self, cert_pem: bytes, key_pem: bytes, source: str) -> bool:
        """Switch to this pair if it is valid and new; False (and the old pair kept) otherwise."""
        if cert_pem == self.cert_pem:
            return False
        # ssl loads a pair only from files: they exist while it reads them, then go (a private key
        # left in /tmp by every process that ever ran, kill -9 included, is one too many).
        with tempfile.TemporaryDirectory(prefix="vk-tls-") as scratch:
            cert_path, key_path = (
                _private_file(scratch, "tls.crt", cert_pem),
                _private_file(scratch, "tls.key", key_pem),
            )
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
            except (ssl.SSLError, OSError) as exc:
                raise TLSConfigError(f"{source}: not a usable certificate and key: {exc}") from exc
            self.context.load_cert_chain(cert_path, key_path)
        first = not self.cert_pem
        self.cert_pem, self.source = cert_pem, source
        if not first:
            self.reloads += 1
        cert = x509.load_pem_x509_certificate(cert_pem)
        log.info(
            "kubelet API serving certificate %s from %s (subject %s, expires %s)",
            "loaded" if first else "rotated",
            source,
            cert.subject.rfc4514_string(),
            cert.not_valid_after_utc.isoformat(),
        )
        return True

    def _load_files(self) -> bool:
        assert self.cert_file is not None and self.key_file is not None
        stamps = (_file_stamp(self.cert_file), _file_stamp(self.key_file))
        if stamps == self._file_stamps:
            return False
        try:
            cert_pem, key_pem = self.cert_file.read_bytes(), self.key_file.read_bytes()
        except OSError as exc:
            raise TLSConfigError(f"--tls-cert-file/--tls-key-file: {exc}") from exc
        changed = self.load_pair(cert_pem, key_pem, f"{self.cert_file}")
        self._file_stamps = stamps  # only once loaded: a failed half-rotation is retried
        return changed

    async def _load_secret(self, kube: Kube) -> bool:
        assert self.secret is not None
        namespace, name = self.secret.split("/")
        try:
            secret = await kube.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except ApiError as exc:
            raise TLSConfigError(f"--tls-secret {self.secret}: {exc.status} {exc.message}") from exc
        data = secret.get("data") or {}
        if "tls.crt" not in data or "tls.key" not in data:
            raise TLSConfigError(f"--tls-secret {self.secret}: needs tls.crt and tls.key")
        return self.load_pair(
            base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]), f"secret {self.secret}"
        )

    def self_signed(self) -> None:
        pair = pki.issue(
            None,
            f"system:node:{self.node_name}",
            organizations=["system:nodes"],
            hosts=[self.node_ip, self.node_name],
            server=True,
        )
        self.load_pair(pair.cert_pem, pair.key_pem, "self-signed")

    def _load_client_ca(self) -> bool:
        if self.client_ca_file is None:
            return False
        stamp = _file_stamp(self.client_ca_file)
        if stamp == self._ca_stamp:
            return False
        try:
            self.context.load_verify_locations(cafile=str(self.client_ca_file))
        except (ssl.SSLError, OSError) as exc:
            raise TLSConfigError(f"--client-ca-file {self.client_ca_file}: {exc}") from exc
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self._ca_stamp = stamp
        return True

    async def initial(self, kube: Kube) -> None:
        """Load what the configuration names; raise TLSConfigError when it is unusable."""
        self._load_client_ca()
        if self.cert_file is not None:
            self._load_files()
        elif self.secret is not None:
            await self._load_secret(kube)
        else:
            self.self_signed()

    async def watch(self, kube: Kube) -> None:
        """Pick up rotated files (or Secret data) and client CA changes; runs until cancelled."""
        while True:
            await asyncio.sleep(self.reload_interval)
            try:
                self._load_client_ca()
                if self.cert_file is not None:
                    self._load_files()
                elif self.secret is not None:
                    await self._load_secret(kube)
            except TLSConfigError as exc:
                log.warning("keeping the current serving certificate: %s", exc)

    def close(self) -> None:
        """Nothing to release: no file outlives the load that needed it."""


def _private_file(directory: str, name: str, data: bytes) -> pathlib.Path:
    path = pathlib.Path(directory) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


# -- kubernetes.io/kubelet-serving CSR ------------------------------------------------------------------
def serving_csr(node_name: str, hosts: list[str]) -> tuple[bytes, bytes]:
    """A PEM CSR acceptable to the kubelet-serving signer, and its private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}"),
                ]
            )
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


class CSRRequester:
    """Obtains (and renews) the serving certificate through a kubelet-serving CSR."""

    def __init__(
        self,
        kube: Kube,
        serving: ServingCertificate,
        *,
        self_approve: bool = False,
        poll_max: float = 5.0,
    ) -> None:
        self.kube = kube
        self.serving = serving
        self.self_approve = self_approve
        self.poll_max = poll_max
        self.csr_name: str | None = None

    async def run(self) -> None:
        """Request, wait for the signed certificate, switch to it, renew at 80 % of its lifetime."""
        while True:
            try:
                cert_pem = await self._obtain()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("serving certificate CSR failed, retrying in 30 s: %s", exc)
                await asyncio.sleep(30)
                continue
            cert = x509.load_pem_x509_certificate(cert_pem)
            start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            renew_at = start + (end - start) * 0.8
            delay = (renew_at - datetime.datetime.now(datetime.UTC)).total_seconds()
            await asyncio.sleep(max(delay, 60.0))

    async def _obtain(self) -> bytes:
        csr_pem, key_pem = serving_csr(self.serving.node_name, [self.serving.node_ip, self.serving.node_name])
        body = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"generateName": f"csr-{self.serving.node_name}-"},
            "spec": {
                "request": base64.b64encode(csr_pem).decode(),
                "signerName": KUBELET_SERVING_SIGNER,
                "usages": ["digital signature", "server auth"],
            },
        }
        created = await self.kube.create(CSR_PATH, body)
        name = created["metadata"]["name"]
        self.csr_name = name
        log.info("requested a serving certificate: CSR %s (signer %s)", name, KUBELET_SERVING_SIGNER)
        if self.self_approve:
            await self._approve(created)
        else:
            log.info("CSR %s waits for approval: kubectl certificate approve %s", name, name)
        delay = 0.5
        while True:
            csr = await self.kube.get(f"{CSR_PATH}/{name}")
            status = csr.get("status") or {}
            for condition in status.get("conditions") or []:
                if condition.get("type") in ("Denied", "Failed") and condition.get("status") == "True":
                    raise RuntimeError(
                        f"CSR {name} {condition['type'].lower()}: {condition.get('message', '')}"
                    )
            if status.get("certificate"):
                cert_pem = base64.b64decode(status["certificate"])
                self.serving.load_pair(cert_pem, key_pem, f"CSR {name}")
                return cert_pem
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    async def _approve(self, csr: dict[str, Any]) -> None:
        name = csr["metadata"]["name"]
        csr = dict(csr)
        csr["status"] = {
            "conditions": [
                {
                    "type": "Approved",
                    "status": "True",
                    "reason": "SelfApproved",
                    "message": "approved by the virtual kubelet (--serving-cert-self-approve)",
                }
            ]
        }
        try:
            await self.kube.request("PUT", f"{CSR_PATH}/{name}/approval", body=csr)
        except ApiError as exc:
            log.warning(
                "cannot self-approve CSR %s (%s): grant update on certificatesigningrequests/approval and "
                "approve on signers %s to this identity, or approve it as an admin",
                name,
                exc,
                KUBELET_SERVING_SIGNER,
            )
            return
        log.info("CSR %s self-approved", name)
