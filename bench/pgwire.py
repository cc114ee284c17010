"""A minimal PostgreSQL protocol v3 client: startup + authentication (SCRAM-SHA-256, md5,
cleartext, trust), then optionally one simple query. Used by the capacity measurements, which
need thousands of logins and idle connections without libpq.

Two front ends share the protocol logic:
  login_sync()   blocking socket, for the sequential login-rate measurement;
  login_async()  asyncio streams, for opening thousands of idle clients concurrently.

The SCRAM client does what libpq does: a fresh nonce and a PBKDF2 of the password for every
login (no cached SaltedPassword), unless a `ScramCache` is passed (the idle-client
measurement uses one to spend less client CPU; it only hits when the server reuses a salt).
"""
import asyncio
import base64
import hashlib
import hmac
import os
import socket
import struct

PROTOCOL_V3 = 196608


class PgError(Exception):
    pass


def startup_message(user, database, extra=None):
    body = struct.pack("!I", PROTOCOL_V3)
    params = {"user": user, "database": database}
    params.update(extra or {})
    for k, v in params.items():
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(mtype, body):
    return mtype + struct.pack("!I", len(body) + 4) + body


def error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '?????')}: {fields.get('M', '')}"


class ScramCache:
    """SaltedPassword by (password, salt, iterations)."""

    def __init__(self):
        self.map = {}

    def get(self, password, salt, iterations):
        key = (password, salt, iterations)
        value = self.map.get(key)
        if value is None:
            value = self.map[key] = salted_password(password, salt, iterations)
        return value


def salted_password(password, salt, iterations):
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


class Scram:
    """Client side of one SCRAM-SHA-256 exchange (RFC 5802/7677, no channel binding)."""

    def __init__(self, password):
        self.password = password
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n=,r={self.nonce}"
        self.server_signature = None

    def initial_response(self):
        first = ("n,," + self.client_first_bare).encode()
        return message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)

    def parse_server_first(self, server_first):
        server_first = server_first.decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise PgError("SCRAM: server nonce does not extend ours")
        return server_first, attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])

    def final_response(self, server_first, combined_nonce, salted):
        without_proof = f"c=biws,r={combined_nonce}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        final = f"{without_proof},p={base64.b64encode(proof).decode()}".encode()
        return message(b"p", final)

    def check_server_final(self, data):
        attrs = dict(part.split("=", 1) for part in data.decode().split(","))
        if "e" in attrs:
            raise PgError(f"SCRAM: server error {attrs['e']}")
        if base64.b64decode(attrs["v"]) != self.server_signature:
            raise PgError("SCRAM: wrong server signature")


def md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return message(b"p", b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0")


# ---- blocking front end ---------------------------------------------------------------------

class SyncConn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def read_message(self):
        while True:
            if len(self.buf) >= 5:
                length = struct.unpack_from("!I", self.buf, 1)[0]
                if len(self.buf) >= 1 + length:
                    mtype = bytes(self.buf[0:1])
                    body = bytes(self.buf[5:1 + length])
                    del self.buf[:1 + length]
                    return mtype, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PgError("connection closed by server")
            self.buf += chunk

    def send(self, data):
        self.sock.sendall(data)

    def query(self, sql):
        """Runs a simple query; returns the first column of the first row (bytes) or None."""
        self.send(message(b"Q", sql.encode() + b"\0"))
        value = None
        error = None
        while True:
            mtype, body = self.read_message()
            if mtype == b"D" and value is None:
                n = struct.unpack_from("!H", body, 0)[0]
                if n:
                    length = struct.unpack_from("!i", body, 2)[0]
                    value = body[6:6 + length] if length >= 0 else None
            elif mtype == b"E":
                error = error_text(body)
            elif mtype == b"Z":
                if error:
                    raise PgError(error)
                return value

    def close(self, terminate=True):
        try:
            if terminate:
                self.send(message(b"X", b""))
        except OSError:
            pass
        self.sock.close()


def login_sync(host, port, user, password, database, timeout=30.0, cache=None):
    """Connects and authenticates; returns a SyncConn at ReadyForQuery."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = SyncConn(sock)
    try:
        conn.send(startup_message(user, database))
        scram = None
        while True:
            mtype, body = conn.read_message()
            if mtype == b"R":
                code = struct.unpack_from("!I", body, 0)[0]
                if code == 0:
                    continue
                if code == 3:
                    conn.send(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    conn.send(md5_response(user, password, body[4:8]))
                elif code == 10:
                    if b"SCRAM-SHA-256\0" not in body[4:]:
                        raise PgError(f"unsupported SASL mechanisms {body[4:]!r}")
                    scram = Scram(password)
                    conn.send(scram.initial_response())
                elif code == 11:
                    server_first, nonce, salt, iterations = scram.parse_server_first(body[4:])
                    salted = (cache.get(password, salt, iterations) if cache
                              else salted_password(password, salt, iterations))
                    conn.send(scram.final_response(server_first, nonce, salted))
                elif code == 12:
                    scram.check_server_final(body[4:])
                else:
                    raise PgError(f"unsupported authentication request {code}")
            elif mtype == b"E":
                raise PgError(error_text(body))
            elif mtype == b"Z":
                return conn
            # S (ParameterStatus), K (BackendKeyData), N (notice): ignored
    except BaseException:
        sock.close()
        raise


# ---- asyncio front end ----------------------------------------------------------------------

class AsyncConn:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    async def read_message(self):
        header = await self.reader.readexactly(5)
        length = struct.unpack_from("!I", header, 1)[0]
        body = await self.reader.readexactly(length - 4) if length > 4 else b""
        return header[0:1], body

    async def query(self, sql):
        self.writer.write(message(b"Q", sql.encode() + b"\0"))
        value = None
        error = None
        while True:
            mtype, body = await self.read_message()
            if mtype == b"D" and value is None:
                n = struct.unpack_from("!H", body, 0)[0]
                if n:
                    length = struct.unpack_from("!i", body, 2)[0]
                    value = body[6:6 + length] if length >= 0 else None
            elif mtype == b"E":
                error = error_text(body)
            elif mtype == b"Z":
                if error:
                    raise PgError(error)
                return value

    def is_open(self):
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self):
        try:
            self.writer.write(message(b"X", b""))
        except Exception:
            pass
        self.writer.close()


async def login_async(host, port, user, password, database, cache=None, pbkdf2_in_thread=True):
    reader, writer = await asyncio.open_connection(host, port, limit=65536)
    conn = AsyncConn(reader, writer)
    try:
        writer.write(startup_message(user, database))
        scram = None
        while True:
            mtype, body = await conn.read_message()
            if mtype == b"R":
                code = struct.unpack_from("!I", body, 0)[0]
                if code == 0:
                    continue
                if code == 3:
                    writer.write(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    writer.write(md5_response(user, password, body[4:8]))
                elif code == 10:
                    scram = Scram(password)
                    writer.write(scram.initial_response())
                elif code == 11:
                    server_first, nonce, salt, iterations = scram.parse_server_first(body[4:])
                    key = (password, salt, iterations)
                    salted = cache.map.get(key) if cache else None
                    if salted is None:
                        if pbkdf2_in_thread:  # hashlib releases the GIL
                            salted = await asyncio.to_thread(salted_password, password, salt,
                                                             iterations)
                        else:
                            salted = salted_password(password, salt, iterations)
                        if cache:
                            cache.map[key] = salted
                    writer.write(scram.final_response(server_first, nonce, salted))
                elif code == 12:
                    scram.check_server_final(body[4:])
                else:
                    raise PgError(f"unsupported authentication request {code}")
            elif mtype == b"E":
                raise PgError(error_text(body))
            elif mtype == b"Z":
                return conn
    except BaseException:
        writer.close()
        raise
