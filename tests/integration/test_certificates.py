# -*- test-case-name: tests.integration.test_certificates -*-
"""
Certificate rotation on an HTTPS-proxy listener, end to end: the files are
replaced, C{SIGHUP} makes new connections get the new certificate (as
C{openssl s_client} and Python's TLS client see it) while a tunnel opened
before keeps relaying both ways, and a file that does not load leaves the
certificate in force.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration._output import Event
from tests.integration._pki import TLSFiles, renewTLSFiles
from tests.integration._processes import (
    BIN_DIR,
    OriginFactory,
    ProxyFactory,
    ProxyProcess,
    sourceEnvironment,
)
from tests.integration._sockets import LOCAL, Loopback, bothFamilies, readExactly
from tests.integration.test_tls import openTLSTunnel, run, tlsDial

pytestmark = pytest.mark.integration


def replaceFile(path: Path, content: bytes) -> None:
    """
    Replace a file at once, as deployment tools (certbot's deploy hooks,
    configuration management) do.
    """
    staging = path.with_name(path.name + ".new")
    staging.write_bytes(content)
    os.replace(staging, path)


def serial(files: TLSFiles) -> int:
    """
    The serial number of a server certificate file.
    """
    return x509.load_pem_x509_certificate(files.serverCert.read_bytes()).serial_number


def peerSerial(tls: ssl.SSLSocket) -> int:
    """
    The serial number of the certificate the proxy showed a TLS socket.
    """
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def pythonSees(port: int, ca: TLSFiles, host: str = LOCAL) -> int:
    """
    The serial number of the certificate a new connection from Python's TLS
    client gets (verified against C{ca}).

    @param host: The proxy's address (C{127.0.0.1} or C{::1}).
    """
    with tlsDial(port, ca, ["http/1.1"], host) as tls:
        return peerSerial(tls)


def opensslSees(port: int, ca: TLSFiles) -> int:
    """
    The serial number of the certificate C{openssl s_client} gets (verified
    against C{ca}).
    """
    result = run(
        [
            *("openssl", "s_client", "-connect", f"{LOCAL}:{port}"),
            *("-CAfile", str(ca.caCert), "-verify_return_error", "-alpn", "http/1.1"),
        ]
    )
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
    pem = re.search(
        r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
        result.stdout,
        re.S,
    )
    assert pem is not None, result.stdout
    return x509.load_pem_x509_certificate(pem.group(0).encode()).serial_number


def reload(running: ProxyProcess, outcome: str) -> Event:
    """
    Send C{SIGHUP} and wait for the proxy to say how the reload went.

    @param outcome: C{reloaded} or C{reload_failed}.
    @return: The event.
    """
    names = ("reloaded", "reload_failed")
    before = [e for e in running.events if e.get("event") in names]
    os.kill(running.pid, signal.SIGHUP)
    # With --workers, once every worker has said.
    events = running.waitForEach(
        lambda e: e.get("event") in names and not any(e is b for b in before)
    )
    assert all(e["event"] == outcome for e in events), events
    return events[0]


def roundTrip(tls: ssl.SSLSocket, payload: bytes) -> None:
    """
    Send bytes through a tunnel to an echo origin and read them back.
    """
    tls.sendall(payload)
    assert readExactly(tls, len(payload)) == payload


def test_sslCertificateRotation(
    proxy: ProxyFactory,
    origin: OriginFactory,
    tlsCertificate: TLSFiles,
    scratchDir: Path,
) -> None:
    """
    Replace an C{ssl:} listener's certificate and key and send C{SIGHUP}:
    new connections get the new certificate, the tunnel opened before keeps
    relaying; then a broken certificate file fails the reload (one
    C{reload_failed} naming the file) and the new certificate stays.
    """
    certA = renewTLSFiles(tlsCertificate, scratchDir / "a")
    certB = renewTLSFiles(tlsCertificate, scratchDir / "b")
    live = scratchDir / "live"
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"
    replaceFile(cert, certA.serverCert.read_bytes())
    replaceFile(key, certA.serverKey.read_bytes())
    echo = origin("echo")
    listener = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    running = proxy(listen=[listener])

    first = openTLSTunnel(running.port, tlsCertificate, echo.port)
    with first:
        assert peerSerial(first) == serial(certA)
        roundTrip(first, b"before the rotation")

        replaceFile(cert, certB.serverCert.read_bytes())
        replaceFile(key, certB.serverKey.read_bytes())
        reload(running, "reloaded")
        rotated = running.waitForNamed("tls_certificate_reloaded", listener=listener)
        assert (rotated["serial"], rotated["changed"]) == (
            format(serial(certB), "x"),
            True,
        )

        assert opensslSees(running.port, tlsCertificate) == serial(certB)
        assert pythonSees(running.port, tlsCertificate) == serial(certB)
        roundTrip(first, b"after the rotation" * 1000)

        replaceFile(cert, b"-----BEGIN CERTIFICATE-----\ntruncated\n")
        failed = reload(running, "reload_failed")
        assert f"certKey={cert} holds no PEM certificate" in failed["error"]
        assert pythonSees(running.port, tlsCertificate) == serial(certB)
        roundTrip(first, b"after the failed reload")
    running.stop()
    # One per process (each worker reloads).
    failures = [e for e in running.events if e.get("event") == "reload_failed"]
    assert failed in failures
    assert [e["error"] for e in failures] == [failed["error"]] * len(
        running.servingPids
    )
    closed = [e for e in running.events if e.get("event") == "tunnel_close"]
    assert len(closed) == 1 and closed[0]["bytesUp"] == closed[0]["bytesDown"]


@bothFamilies
def test_tlsDirectoryRotation(
    proxy: ProxyFactory, tlsCertificate: TLSFiles, scratchDir: Path, family: Loopback
) -> None:
    """
    A C{tls:} listener (a directory of PEM files, on 127.0.0.1 or ::1)
    reads its directory again on C{SIGHUP}, which Twisted alone never does.
    """
    certA = renewTLSFiles(tlsCertificate, scratchDir / "a")
    certB = renewTLSFiles(tlsCertificate, scratchDir / "b")
    pems = scratchDir / "pems"
    pems.mkdir()
    pem = pems / "proxy.pem"
    replaceFile(pem, certA.serverCert.read_bytes() + certA.serverKey.read_bytes())
    running = proxy(listen=[f"tls:{pems}:port=0:interface={family.interface}"])
    assert running.host == family.host
    assert pythonSees(running.port, tlsCertificate, family.host) == serial(certA)
    replaceFile(pem, certB.serverCert.read_bytes() + certB.serverKey.read_bytes())
    reload(running, "reloaded")
    assert pythonSees(running.port, tlsCertificate, family.host) == serial(certB)


def test_tlsDirectoryWithCA(
    proxy: ProxyFactory, tlsCertificate: TLSFiles, scratchDir: Path
) -> None:
    """
    A C{tls:} directory holding the self-signed CA next to the server's
    certificate (on which Twisted's own C{tls:} listener never returns) is
    checked by C{--check-config}, served (verified by C{openssl s_client}
    and Python against the CA), and read again on C{SIGHUP}.
    """
    pems = scratchDir / "pems"
    pems.mkdir()
    replaceFile(
        pems / "localhost.pem",
        tlsCertificate.serverCert.read_bytes() + tlsCertificate.serverKey.read_bytes(),
    )
    replaceFile(pems / "ca.pem", tlsCertificate.caCert.read_bytes())
    listener = f"tls:{pems}:port=0:interface=127.0.0.1"
    checked = subprocess.run(
        [str(BIN_DIR / "connectproxy"), "--check-config", "--listen", listener],
        env=sourceEnvironment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "configuration OK" in checked.stdout
    running = proxy(listen=[listener])
    assert opensslSees(running.port, tlsCertificate) == serial(tlsCertificate)
    reload(running, "reloaded")
    assert pythonSees(running.port, tlsCertificate) == serial(tlsCertificate)
