"""The rendezvous store (csrc/dist/store_*.c): our SHA-256/HMAC against hashlib, the
protocol, the secret, and a bounded fuzz run of malformed traffic from Python sockets."""
import hashlib
import hmac
import os
import random
import socket
import struct
import threading
import time

import pytest

from codext import _C
from testing_module import testing

SECRET = b"s" * 16 + os.urandom(16)


@pytest.fixture
def server():
    s = _C.StoreServer("127.0.0.1", 0, SECRET)
    yield s
    s.close()


def test_sha256_and_hmac_match_hashlib():
    rng = random.Random(1)
    for n in [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, 4096]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert _C.sha256(data) == hashlib.sha256(data).digest(), n
        for key in [b"k" * 16, os.urandom(64), os.urandom(65), os.urandom(200)]:
            assert testing.hmac_sha256(key, data) == hmac.new(key, data, "sha256").digest()


def test_set_get_add_and_waiting_get(server):
    c = _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=5)
    c.set("shm", b"/codext-abc")
    assert c.get("shm") == b"/codext-abc"
    c.set("shm", b"")
    assert c.get("shm") == b""
    assert c.add("ranks", 1) == 1 and c.add("ranks", 5) == 6 and c.add("ranks", -7) == -1

    def late_set():
        time.sleep(0.3)
        _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=5).set("late", b"x" * 65536)

    threading.Thread(target=late_set).start()
    assert c.get("late", 10.0) == b"x" * 65536
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="'never' was not set within 0.3 s"):
        c.get("never", 0.3)
    assert time.monotonic() - t0 < 3
    with pytest.raises(RuntimeError, match="not a counter"):
        c.add("shm", 1)
    with pytest.raises(ValueError, match="at most 65536 bytes"):
        c.set("big", b"x" * 65537)
    with pytest.raises(ValueError, match="1 to 256 bytes"):
        c.set("k" * 257, b"")
    assert server.stats()["refused"] == 0


def test_wrong_secret_is_refused_and_the_server_goes_on(server):
    with pytest.raises(RuntimeError, match="refused this process's proof"):
        _C.StoreClient("127.0.0.1", server.port, b"w" * 32, timeout=3)
    assert server.stats()["refused"] == 1
    c = _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=3)
    c.set("a", b"1")
    assert c.get("a") == b"1"


def test_client_checks_the_server_knows_the_secret():
    """A server with another secret cannot feed this run a segment name."""
    other = _C.StoreServer("127.0.0.1", 0, b"o" * 32)
    try:
        with pytest.raises(RuntimeError):
            _C.StoreClient("127.0.0.1", other.port, SECRET, timeout=3)
    finally:
        other.close()


def test_bad_arguments_and_taken_port(server):
    with pytest.raises(ValueError, match="16 to 256 bytes"):
        _C.StoreServer("127.0.0.1", 0, b"short")
    with pytest.raises(ValueError, match="not a numeric IPv4"):
        _C.StoreServer("localhost", 0, SECRET)
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{server.port}.*port is taken"):
        _C.StoreServer("127.0.0.1", server.port, SECRET)
    with pytest.raises(RuntimeError, match="cannot reach the store"):
        _C.StoreClient("127.0.0.1", 1, SECRET, timeout=0.2)


# ---- fuzz ----------------------------------------------------------------------------------

def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def authenticate(sock):
    hello = recv_exact(sock, 40)
    assert hello[:8] == b"CXSTORE1"
    nonce = os.urandom(32)
    sock.sendall(nonce + hmac.new(SECRET, b"codext-store-client" + hello[8:], "sha256").digest())
    proof = recv_exact(sock, 32)
    assert proof == hmac.new(SECRET, b"codext-store-server" + nonce, "sha256").digest()


def random_frame(rng):
    kind = rng.randrange(8)
    key = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
    body = bytes([rng.randrange(0, 6)]) + struct.pack("<H", rng.choice([len(key), rng.randrange(65536)])) + key
    body += bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 8, rng.randrange(64)])))
    if kind == 0:   # a length that lies (too big, zero, or huge)
        return struct.pack("<I", rng.choice([0, 1, 2, 70000, 0xFFFFFFFF, len(body) + 5])) + body
    if kind == 1:   # truncated mid-frame
        frame = struct.pack("<I", len(body)) + body
        return frame[:rng.randrange(len(frame))]
    if kind == 2:   # pure noise
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
    return struct.pack("<I", len(body)) + body  # well framed, random content


def test_fuzz_malformed_traffic_never_takes_the_server_down(server):
    rng = random.Random(1234)
    deadline = time.monotonic() + 15
    cases = 0
    while cases < 400 and time.monotonic() < deadline:
        cases += 1
        s = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        try:
            mode = rng.randrange(4)
            if mode == 0:    # noise instead of the handshake
                recv_exact(s, 40)
                s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 100))))
            elif mode == 1:  # half a handshake, then gone
                recv_exact(s, rng.randrange(0, 41))
                s.sendall(os.urandom(rng.randrange(0, 64)))
            else:            # authenticated, then malformed frames
                authenticate(s)
                for _ in range(rng.randrange(1, 4)):
                    s.sendall(random_frame(rng))
                    s.settimeout(0.05)
                    try:
                        s.recv(70000)
                    except (socket.timeout, ConnectionError, OSError):
                        pass
        except (ConnectionError, OSError):
            pass
        finally:
            s.close()
        if cases % 50 == 0:
            c = _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=5)
            c.set(f"alive{cases}", b"yes")
            assert c.get(f"alive{cases}") == b"yes"
            c.close()
    assert cases >= 100, "the fuzz loop ran too few cases to mean anything"
    stats = server.stats()
    assert stats["refused"] > 0 and stats["authenticated"] > 0
    c = _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=5)
    c.set("end", b"ok")
    assert c.get("end") == b"ok"


def test_silent_connections_do_not_lock_out_the_run(server):
    """Connections that never speak hold a slot for at most the 5 s handshake limit; a
    real client retries until one frees."""
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(260)]
    try:
        t0 = time.monotonic()
        c = _C.StoreClient("127.0.0.1", server.port, SECRET, timeout=20)
        c.set("k", b"v")
        assert c.get("k") == b"v"
        assert time.monotonic() - t0 < 15
    finally:
        for s in idle:
            s.close()
