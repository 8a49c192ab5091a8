"""The fast tier's promise, no network: under `--fast` conftest.refuse_the_network() holds for the
whole session. Here it is switched on for one test (and put back after), so it is checked in
either tier."""

import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.support.harness import refuse_the_network

PROXY_VARIABLES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture
def no_network(monkeypatch):
    """refuse_the_network(), undone after the test."""
    monkeypatch.setattr(socket, "getaddrinfo", socket.getaddrinfo)
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, getattr(socket.socket, name))
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, os.environ.get(name, ""))
    refuse_the_network()


def test_only_this_machine_answers(no_network, http_server):
    with pytest.raises(ConnectionRefusedError, match=r"example\.com: the fast tier has no network"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(ConnectionRefusedError, match=r"192\.0\.2\.1: the fast tier has no network"):
        socket.create_connection(("192.0.2.1", 80), timeout=5)  # an address, so no name to resolve
    with pytest.raises(ConnectionRefusedError, match="2001:db8::1: the fast tier has no network"):
        socket.socket(socket.AF_INET6).connect_ex(("2001:db8::1", 80, 0, 0))
    folder, url = http_server
    (folder / "here.txt").write_text("local")
    with urllib.request.urlopen(url + "here.txt", timeout=5) as response:
        assert response.read() == b"local"


def test_subprocesses_http_clients_get_a_closed_proxy(no_network):
    probe = (
        "import urllib.request\n"
        "try: urllib.request.urlopen('http://example.com/', timeout=5)\n"
        "except OSError as e: print(e)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    # Refused by the proxy on 127.0.0.1:9: no name lookup, nothing sent beyond this machine.
    assert "Connection refused" in done.stdout, done.stdout + done.stderr
