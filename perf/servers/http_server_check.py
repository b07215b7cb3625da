#!/usr/bin/env python3
"""perf/servers/http_server_check.py: the test of perf/servers/http_server.cpp
(the mpg server of the http_hello workload): what its top comment promises,
checked byte for byte over TCP against the built binary.

  python3 perf/servers/http_server_check.py BUILD/perf/servers/http_server

Starts the server with --port 0 --procs 2 (the kernel picks a free port, the
server prints it), waits until it accepts, runs every check below on
connections of its own, and stops it by its PID. Every byte a response has is
compared with the expected bytes; only the Date header's value is masked,
after checking that it is an IMF-fixdate (RFC 7231, 7.1.1.1) of a real day
within a minute of this machine's clock. The checks:

  keep_alive          GET / HTTP/1.1 with Host: 200, "Hello, World!", Date,
                      Content-Length: 13, Content-Type, on an open connection
  pipelined           three requests in one send: three responses, in order
  bare_lf             lines ending in a bare LF
  empty_lines         empty lines before a request line are skipped
  http10              HTTP/1.0 closes after the response unless it asked for
                      keep-alive, which the response then confirms
  connection_close    "Connection: close" (also within a token list) is
                      honoured: the response says so and the server closes
  content_length      a body is skipped, not parsed as the next request,
                      also one larger than the server's buffer, sent in parts
  chunked             Transfer-Encoding: chunked gets 501 and a close
  bad_requests        bad request lines (no target, no method, another
                      version), a header line without a colon, a bad
                      Content-Length: 400 and a close
  oversized_head      a head larger than the server's buffer: 431 and a close
                      (one exactly as large is answered)
  incomplete_head     a head whose end comes in a later send is answered once
                      complete, with what the later part says
  byte_by_byte        a head sent one byte at a time
  every_split_point   two requests (a CRLF one with a body, a bare-LF one)
                      split in two sends at every byte

A connection "stays open" when a further request on it gets exactly one 200
(so nothing stray came before it); it "closes" when EOF (or a reset) follows
the last expected byte with nothing in between. A request sent in parts waits
between the parts, polling /proc/net/tcp with a deadline, until the server has
read what was sent (its socket's receive queue is empty), so that each part
reaches the server in a receive of its own.

Exit status 0 when every check passes, 1 otherwise (each failure on stderr),
2 for a bad command line. Standard library only. Run by `meson test`
(http_server_check, suite perf).
"""

from __future__ import annotations

import datetime
import os
import re
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Callable, Optional

from run_servers import stop_process, wait_listening  # the same directory

# kBuf in http_server.cpp: the largest request head the server takes.
SERVER_BUFFER = 8192
# How long a check waits for the server: to answer, to close, to read.
TIMEOUT = 5.0
START_TIMEOUT = 10.0
# Past this many seconds (a server that hangs), no further check starts: the
# failures are reported within meson's timeout (60 s).
BUDGET = 40.0

# Every IMF-fixdate is 29 bytes, as this stand-in for one is.
DATE = b"Ddd, DD Mmm YYYY HH:MM:SS GMT"
IMF_FIXDATE = re.compile(rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) "
                         rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                         rb"(\d{4}) (\d\d):(\d\d):(\d\d) GMT")
DAYS = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"]
MONTHS = [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
          b"Nov", b"Dec"]

# The server's responses (as Go's net/http writes them for the same handler).
OK = (b"HTTP/1.1 200 OK\r\n"
      b"Date: " + DATE + b"\r\n"
      b"Content-Length: 13\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\n"
      b"\r\n"
      b"Hello, World!")
OK_CLOSE = (b"HTTP/1.1 200 OK\r\n"
            b"Date: " + DATE + b"\r\n"
            b"Content-Length: 13\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"Hello, World!")
# To an HTTP/1.0 request that asked for keep-alive.
OK_KEEP_ALIVE = (b"HTTP/1.1 200 OK\r\n"
                 b"Date: " + DATE + b"\r\n"
                 b"Content-Length: 13\r\n"
                 b"Content-Type: text/plain; charset=utf-8\r\n"
                 b"Connection: keep-alive\r\n"
                 b"\r\n"
                 b"Hello, World!")


def error_response(status: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\n"
            b"Date: " + DATE + b"\r\n"
            b"Content-Length: 0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\n"
            b"\r\n")


BAD_REQUEST = error_response(b"400 Bad Request")
TOO_LARGE = error_response(b"431 Request Header Fields Too Large")
NOT_IMPLEMENTED = error_response(b"501 Not Implemented")

GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
GET_HTTP10_KEEP_ALIVE = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"


class CheckFailed(Exception):
    pass


def date_problem(value: bytes) -> Optional[str]:
    """Why `value` is not an IMF-fixdate near now; None when it is one."""
    m = IMF_FIXDATE.fullmatch(value)
    if m is None:
        return f"Date {value!r} is not an IMF-fixdate"
    try:
        when = datetime.datetime(int(m[4]), MONTHS.index(m[3]) + 1, int(m[2]), int(m[5]),
                                 int(m[6]), int(m[7]), tzinfo=datetime.timezone.utc)
    except ValueError:
        return f"Date {value!r} is not a real time"
    if DAYS[when.weekday()] != m[1]:
        return f"Date {value!r}: that day is a {DAYS[when.weekday()].decode()}"
    if abs(when.timestamp() - time.time()) > 60:
        return f"Date {value!r} is more than a minute from this machine's clock"
    return None


def mask_dates(data: bytes) -> tuple[bytes, list[str]]:
    """data with each Date header's value replaced by DATE when it is a good
    one; the problems with the others (which stay, to show in the diff)."""
    problems: list[str] = []

    def mask(m: re.Match) -> bytes:
        problem = date_problem(m[1])
        if problem is not None:
            problems.append(problem)
            return m[0]
        return b"\r\nDate: " + DATE + b"\r\n"

    return re.sub(rb"\r\nDate: ([^\r\n]*)\r\n", mask, data), problems


def settled_length(masked: bytes) -> int:
    """How much of what came so far (its dates masked) is final: all of it
    but a Date header line still coming."""
    at = masked.rfind(b"\r\nDate: ")
    if at >= 0 and masked.find(b"\r\n", at + 2) < 0:
        return at
    return len(masked)


def difference(want: bytes, got: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    lo = max(0, at - 80)
    return (f"{len(got)} bytes came ({len(want)} expected); the first difference is at byte {at}:\n"
            f"    expected ...{want[lo:at + 80]!r}\n"
            f"    got      ...{got[lo:at + 80]!r}")


LOOPBACK_HEX = "%08X" % struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0]


def unread_by_server(server_port: int, client_port: int) -> Optional[int]:
    """The bytes in the receive queue of the server's end of the connection
    from client_port (/proc/net/tcp); None when that end is gone."""
    local = f"{LOOPBACK_HEX}:{server_port:04X}"
    remote = f"{LOOPBACK_HEX}:{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return int(fields[4].split(":")[1], 16)
    return None


class Connection:
    """A client connection to the server under test."""

    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, *parts: bytes) -> None:
        """Sends the parts in turn; after each but the last, waits until the
        server has read it. (On loopback the bytes are in the server's socket
        by the time sendall returns, bar a deferred softirq; then two parts
        may reach the server as one, which every check also allows.)"""
        for i, part in enumerate(parts):
            self.sock.sendall(part)
            if i + 1 < len(parts):
                self.wait_read_by_server()

    def wait_read_by_server(self) -> None:
        client_port = self.sock.getsockname()[1]
        deadline = time.monotonic() + TIMEOUT
        while True:
            unread = unread_by_server(self.port, client_port)
            if not unread:
                return
            if time.monotonic() > deadline:
                raise CheckFailed(f"the server left {unread} bytes unread for {TIMEOUT} s")
            time.sleep(0.001)

    def expect(self, *responses: bytes) -> None:
        """The next bytes from the server are `responses`, one after another.
        Fails as soon as they part from them, at EOF, or after TIMEOUT
        without the rest."""
        want = b"".join(responses)
        got = b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            masked, problems = mask_dates(got)
            if problems:
                raise CheckFailed("; ".join(problems))
            settled = settled_length(masked)
            if masked[:settled] != want[:settled]:
                raise CheckFailed(difference(want, masked))
            if len(masked) == len(want):
                return
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                chunk = self.sock.recv(len(want) - len(got))
            except socket.timeout:
                raise CheckFailed(f"nothing more for {TIMEOUT} s; "
                                  + difference(want, masked)) from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise CheckFailed("the server closed the connection; " + difference(want, masked))
            got += chunk

    def expect_closed(self) -> None:
        """The server closes the connection, sending nothing more."""
        self.sock.settimeout(TIMEOUT)
        try:
            extra = self.sock.recv(4096)
        except socket.timeout:
            raise CheckFailed(f"the server left the connection open for {TIMEOUT} s") from None
        except ConnectionResetError:
            return  # it closed with bytes of ours unread
        if extra:
            raise CheckFailed(f"{len(extra)} bytes after the last response: {extra[:200]!r}")

    def expect_open(self) -> None:
        """The connection is open and in step: a further request gets one 200."""
        self.send(GET)
        self.expect(OK)


def exchange(port: int, parts: list[bytes], responses: list[bytes], then_open: bool) -> None:
    """On a new connection, sends the parts (each received apart), expects
    the responses and then the connection open (or closed)."""
    with Connection(port) as c:
        c.send(*parts)
        c.expect(*responses)
        if then_open:
            c.expect_open()
        else:
            c.expect_closed()


CHECKS: list[tuple[str, Callable[[int], None]]] = []


def check(fn: Callable[[int], None]) -> Callable[[int], None]:
    CHECKS.append((fn.__name__, fn))
    return fn


@check
def keep_alive(port: int) -> None:
    with Connection(port) as c:
        c.send(GET)
        c.expect(OK)
        c.send(GET)  # the same connection
        c.expect(OK)
        c.expect_open()


@check
def pipelined(port: int) -> None:
    exchange(port, [GET + GET + GET], [OK, OK, OK], then_open=True)
    # In order: the response that closes comes last.
    exchange(port, [GET + GET_HTTP10_KEEP_ALIVE + GET_CLOSE], [OK, OK_KEEP_ALIVE, OK_CLOSE],
             then_open=False)


@check
def bare_lf(port: int) -> None:
    exchange(port, [b"GET / HTTP/1.1\nHost: localhost\n\n"], [OK], then_open=True)
    exchange(port, [b"GET / HTTP/1.1\nHost: localhost\nConnection: close\n\n"], [OK_CLOSE],
             then_open=False)
    exchange(port, [b"GET / HTTP/1.1\r\nHost: localhost\n\r\n"], [OK], then_open=True)
    exchange(port, [b"GET / HTTP/1.1\nHost: localhost\n\n" + GET], [OK, OK], then_open=True)


@check
def empty_lines(port: int) -> None:
    exchange(port, [b"\r\n\r\n" + GET], [OK], then_open=True)
    exchange(port, [b"\n\r\n\n" + GET_CLOSE], [OK_CLOSE], then_open=False)
    exchange(port, [GET + b"\r\n\r\n" + GET], [OK, OK], then_open=True)
    # Empty lines received apart from the request, and a CRLF split in two.
    exchange(port, [b"\r\n", b"\r\n", GET], [OK], then_open=True)
    exchange(port, [b"\r", b"\n" + GET], [OK], then_open=True)


@check
def http10(port: int) -> None:
    exchange(port, [b"GET / HTTP/1.0\r\n\r\n"], [OK_CLOSE], then_open=False)
    exchange(port, [b"GET / HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"],
             [OK_CLOSE], then_open=False)
    with Connection(port) as c:
        c.send(GET_HTTP10_KEEP_ALIVE)
        c.expect(OK_KEEP_ALIVE)
        c.send(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        c.expect(OK_KEEP_ALIVE)
        c.expect_open()
    # Close wins.
    exchange(port, [b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"], [OK_CLOSE],
             then_open=False)


@check
def connection_close(port: int) -> None:
    exchange(port, [GET_CLOSE], [OK_CLOSE], then_open=False)
    # Nothing after it is answered.
    exchange(port, [GET_CLOSE + GET], [OK_CLOSE], then_open=False)
    exchange(port, [GET, GET_CLOSE], [OK, OK_CLOSE], then_open=False)
    # A token of a list, in any case.
    exchange(port, [b"GET / HTTP/1.1\r\nHost: localhost\r\nconnection: Keep-Alive, CLOSE\r\n\r\n"],
             [OK_CLOSE], then_open=False)


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@check
def content_length(port: int) -> None:
    # Parsed as a request, this body would be a bad request line.
    small = b"BAD\r\n"
    exchange(port, [post(small) + GET], [OK, OK], then_open=True)
    exchange(port, [post(small)[:-2], post(small)[-2:] + GET], [OK, OK], then_open=True)
    exchange(port, [post(b"") + GET], [OK, OK], then_open=True)
    # Larger than the server's buffer, and made of requests that must not be
    # answered; sent whole, then in parts.
    large = (GET * (3 * SERVER_BUFFER // len(GET)))[:2 * SERVER_BUFFER + 1000]
    request = post(large)
    exchange(port, [request + GET], [OK, OK], then_open=True)
    exchange(port, [request[:3000], request[3000:12000], request[12000:] + GET], [OK, OK],
             then_open=True)


@check
def chunked(port: int) -> None:
    exchange(port, [b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n0\r\n\r\n"], [NOT_IMPLEMENTED], then_open=False)
    exchange(port, [GET + b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"],
             [OK, NOT_IMPLEMENTED], then_open=False)


@check
def bad_requests(port: int) -> None:
    for request in [
        b"NONSENSE\r\nHost: localhost\r\n\r\n",  # no target, no version
        b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n",  # no colon
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n",
        b"GET / HTTP/1.10\r\nHost: localhost\r\n\r\n",  # the version, exactly
        b"GET / XHTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET HTTP/1.1\r\nHost: localhost\r\n\r\n",  # no target
        b" GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # no method
        b"GET\t/ HTTP/1.1\r\nHost: localhost\r\n\r\n",  # one space only
        b"HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ]:
        try:
            exchange(port, [request], [BAD_REQUEST], then_open=False)
        except CheckFailed as e:
            raise CheckFailed(f"for {request!r}: {e}") from None
    # After a good request in the same send.
    exchange(port, [GET + b"GET / HTTP/2.0\r\n\r\n"], [OK, BAD_REQUEST], then_open=False)


def head_of(size: int) -> bytes:
    """A GET whose head (through its empty line) is `size` bytes."""
    start = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Filler: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@check
def oversized_head(port: int) -> None:
    exchange(port, [head_of(SERVER_BUFFER)], [OK], then_open=True)
    # The server holding all but its last byte.
    exchange(port, [head_of(SERVER_BUFFER)[:-1], b"\n"], [OK], then_open=True)
    exchange(port, [head_of(SERVER_BUFFER + 1)], [TOO_LARGE], then_open=False)
    exchange(port, [b"GET / HTTP/1.1\r\nX-Filler: " + b"a" * SERVER_BUFFER], [TOO_LARGE],
             then_open=False)
    exchange(port, [GET + head_of(SERVER_BUFFER + 1)], [OK, TOO_LARGE], then_open=False)


@check
def incomplete_head(port: int) -> None:
    # Answered at the first part, the request would get a keep-alive 200, and
    # the second part, a request line without a version, a 400.
    exchange(port, [b"GET / HTTP/1.1\r\nHost: localhost\r\n", b"Connection: close\r\n\r\n"],
             [OK_CLOSE], then_open=False)
    exchange(port, [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r", b"\n"], [OK], then_open=True)
    exchange(port, [b"GET / HT", b"TP/1.1\r\nHost: localhost\r\n\r\n"], [OK], then_open=True)


@check
def byte_by_byte(port: int) -> None:
    request = b"\r\n" + GET_CLOSE
    exchange(port, [request[i:i + 1] for i in range(len(request))], [OK_CLOSE],
             then_open=False)
    exchange(port, [GET[i:i + 1] for i in range(len(GET))], [OK], then_open=True)


@check
def every_split_point(port: int) -> None:
    stream = b"\r\n" + post(b"BAD\r\n") + b"GET / HTTP/1.1\nHost: localhost\n\n"
    for at in range(1, len(stream)):
        try:
            exchange(port, [stream[:at], stream[at:]], [OK, OK], then_open=True)
        except CheckFailed as e:
            raise CheckFailed(f"split after {stream[:at]!r}: {e}") from None


class Server:
    """The server under test, on 127.0.0.1 at a port the kernel picked."""

    def __init__(self, binary: str):
        self.proc = subprocess.Popen([binary, "--port", "0", "--procs", "2"],
                                     stdout=subprocess.PIPE)
        try:
            self.port = self.announced_port()
            self.wait_accepting()
        except BaseException:
            self.stop()
            raise

    def announced_port(self) -> int:
        """The port of the "listening on 127.0.0.1:PORT" line."""
        line = b""
        deadline = time.monotonic() + START_TIMEOUT
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no 'listening on' line within {START_TIMEOUT} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    raise RuntimeError(f"the server exited at start, status {self.proc.wait()}")
                line += chunk
        m = re.fullmatch(rb"listening on 127\.0\.0\.1:(\d+)\n", line)
        if m is None:
            raise RuntimeError(f"unexpected first line {line!r}")
        return int(m[1])

    def wait_accepting(self) -> None:
        wait_listening(self.proc, self.port, START_TIMEOUT, "the server")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc.stdout.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BUILD/perf/servers/http_server", file=sys.stderr)
        return 2
    server = Server(argv[1])
    failed = 0
    start = time.monotonic()
    try:
        for name, fn in CHECKS:
            if time.monotonic() - start > BUDGET:
                failed += 1
                print(f"FAIL {name}: not run, the checks took over {BUDGET} s", file=sys.stderr)
                continue
            try:
                fn(server.port)
                print(f"ok   {name}", flush=True)
            except (CheckFailed, OSError) as e:
                failed += 1
                print(f"FAIL {name}: {e}", file=sys.stderr, flush=True)
            if server.proc.poll() is not None:
                print(f"FAIL the server exited during {name}, status {server.proc.returncode}",
                      file=sys.stderr)
                return 1
    finally:
        server.stop()
    print(f"{len(CHECKS) - failed} of {len(CHECKS)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
