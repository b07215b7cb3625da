// examples/udp_echo.cpp: a UDP echo server and its client.
//
// Shows: a bound socket answering every datagram to its sender
// (recv_from/send_to), a connected client socket (dial_udp, send, recv) that
// gives up on a lost reply after a deadline and retries, a truncated
// datagram reported as such, and shutdown on SIGINT/SIGTERM: the signal
// task closes the socket, which ends the blocked recv_from.
//
// Run:  ./build/examples/udp_echo [--port 9999] [--procs N]
//       echo hi | nc -u -w1 127.0.0.1 9999
//       ./build/examples/udp_echo --smoke   (server and client in one
//       process: 1,000 numbered datagrams echoed and checked, then exit 0)
#include <signal.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

#include "mpg/mpg.hpp"
#include "mpg/signal.hpp"
#include "server_args.hpp"

using namespace std::chrono_literals;

namespace {

// serve(): echoes until the socket is closed.
mpg::task<> serve(mpg::net::udp_socket* sock) {
  char buf[1500];  // one Ethernet MTU: larger datagrams arrive truncated
  for (;;) {
    absl::StatusOr<mpg::net::datagram> d = co_await sock->recv_from(std::span<char>(buf));
    if (!d.ok()) {
      // Shutdown: close() ends the receive in flight (kCancelled), and any
      // later one is a use of a closed socket.
      if (mpg::net::is_closed(d.status()) || absl::IsCancelled(d.status())) co_return;
      std::fprintf(stderr, "recv_from: %s\n", d.status().ToString().c_str());
      continue;
    }
    if (d->truncated)
      std::fprintf(stderr, "a datagram from %s was cut to %zu bytes\n", d->from.c_str(), d->size);
    absl::Status s = co_await sock->send_to(std::string_view(buf, d->size), d->from);
    if (!s.ok() && !mpg::net::is_closed(s))
      std::fprintf(stderr, "send_to %s: %s\n", d->from.c_str(), s.ToString().c_str());
  }
}

// round_trip(): sends msg and waits for its echo, retrying a lost datagram
// (UDP may drop) up to 5 times with a 200 ms deadline each.
mpg::task<bool> round_trip(mpg::net::udp_socket& c, std::string_view msg) {
  char buf[1500];
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (!(co_await c.send(msg)).ok()) co_return false;
    c.set_read_deadline(std::chrono::steady_clock::now() + 200ms);
    absl::StatusOr<std::size_t> n = co_await c.recv(std::span<char>(buf));
    c.set_read_deadline(std::nullopt);
    if (n.ok() && std::string_view(buf, *n) == msg) co_return true;
    if (!n.ok() && n.status().code() != absl::StatusCode::kDeadlineExceeded) co_return false;
  }
  co_return false;
}

mpg::task<bool> smoke_client(std::uint16_t port) {
  absl::StatusOr<mpg::net::udp_socket> c =
      co_await mpg::net::dial_udp("127.0.0.1:" + std::to_string(port));
  if (!c.ok()) co_return false;
  for (int i = 0; i < 1000; ++i)
    if (!co_await round_trip(*c, "datagram " + std::to_string(i))) {
      std::fprintf(stderr, "smoke: datagram %d was not echoed\n", i);
      co_return false;
    }
  co_return true;
}

mpg::task<int> run(std::string address, bool smoke) {
  absl::StatusOr<mpg::net::udp_socket> sock = mpg::net::listen_udp(address);
  if (!sock.ok()) {
    std::fprintf(stderr, "listen_udp %s: %s\n", address.c_str(), sock.status().ToString().c_str());
    co_return 1;
  }
  mpg::join_handle<void> server = mpg::spawn(serve(&*sock), "udp echo");
  int status = 0;
  if (smoke) {
    status = co_await smoke_client(sock->port()) ? 0 : 1;
    std::printf("smoke test %s\n", status == 0 ? "passed" : "FAILED");
  } else {
    mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
    std::printf("echoing UDP on %s (port %u)\n", address.c_str(), sock->port());
    std::fflush(stdout);
    co_await sigs.recv();
    mpg::signal::stop(sigs);
  }
  sock->close();  // the server's recv_from returns
  co_await std::move(server);
  co_return status;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<example::server_args> args =
      example::parse_server_args(argc, argv, 9999, {.connections = false});
  if (!args) return 2;
  mpg::runtime rt({.procs = static_cast<unsigned>(args->procs)});
  return rt.block_on(run(args->address(), args->smoke));
}
