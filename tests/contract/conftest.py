"""A certificate authority for the TLS and QUIC versions of the contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from .transports import Certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp: Path = tmp_path_factory.mktemp("contract-certs")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    server.private_key_pem.write_to_path(str(tmp / "key.pem"))
    return Certs(str(tmp / "ca.pem"), str(tmp / "cert.pem"), str(tmp / "key.pem"))
