// perf/servers/echo_server.cpp: the mpg TCP echo server of the tcp_echo
// workload: a task per connection, each a read/write loop over io_uring.
//
//   echo_server --port 9000 [--procs 2] [--host 127.0.0.1] [--deadline]
//       [--receive 1|0] [--stats 1]
//
// --stats N: the runtime's counters every N seconds (stats_sampler.hpp).
//
// --deadline: every read carries a far deadline (an hour ahead), to compare
// reads with and without one.
//
// Buffering. By default (--receive 1) a connection owns no buffer: it
// borrows each received buffer from its P's ring of provided buffers
// (tcp_stream::receive, a multishot recv) and sends the reply straight from
// it, as the io_uring floor server does. --receive 0 reads into a buffer of
// the connection's own, as the threads and Go echo servers do: it starts
// at 512 bytes and switches to 64 KiB the first time a read fills it
// (Netty's adaptive receive buffer, in one step); each read is one recv,
// which the kernel arms a poll for when no bytes are there yet. Measured on
// the shared 2-CPU machine (7 interleaved rounds against the floor), the
// default ran at 0.95x the floor's rate with 1.06x its CPU per message, and
// --receive 0 at 0.91x with 1.10x.
#include <cstdio>
#include <memory>
#include <string>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include "server_args.hpp"
#include "stats_sampler.hpp"

namespace {

constexpr std::size_t kSmall = 512;
constexpr std::size_t kLarge = 64 * 1024;

bool g_deadline = false;
bool g_receive = false;

// The receive, made outside the loop (as next_read below): a result
// initialised from the co_await, not a default-made StatusOr assigned to.
template <bool kDeadline>
auto next_receive(mpg::net::tcp_stream& s) {
  if constexpr (kDeadline) {
    return s.receive(std::chrono::steady_clock::now() + std::chrono::hours(1));
  } else {
    return s.receive();
  }
}

template <bool kDeadline>
mpg::task<void> handle_receive(mpg::net::tcp_stream s) {
  for (;;) {
    const absl::StatusOr<mpg::net::recv_buffer> b = co_await next_receive<kDeadline>(s);
    if (!b.ok() || b->empty()) co_return;
    const absl::Status w = co_await s.write(b->view());
    if (!w.ok()) co_return;
  }
}

// The read loop's state: the small buffer in the frame, and a large one on
// the heap once a read has filled the small one.
struct echo_buffers {
  char small[kSmall];
  std::unique_ptr<char[]> large;
  std::span<char> get() noexcept {
    return large ? std::span<char>(large.get(), kLarge) : std::span<char>(small, kSmall);
  }
};

// The awaitables of the read loop, made outside it. g++ 12 keeps every
// temporary of a co_await's full-expression in the frame, each in a slot of
// its own for the whole loop: a call's by-value arguments (the span, the
// string_view) and a result assigned rather than initialised would add 48
// bytes to every idle connection.
template <bool kDeadline>
auto next_read(mpg::net::tcp_stream& s, echo_buffers& b) {
  if constexpr (kDeadline) {
    return s.read(b.get(), std::chrono::steady_clock::now() + std::chrono::hours(1));
  } else {
    return s.read(b.get());
  }
}
mpg::net::write_op echo_back(mpg::net::tcp_stream& s, echo_buffers& b, std::size_t n) {
  return s.write(std::string_view(b.get().data(), n));
}

// The read loop, once per kind of read: each co_await keeps an awaiter of
// its own in the frame, so a loop that could take either read would hold
// both while it idles.
template <bool kDeadline>
mpg::task<void> handle(mpg::net::tcp_stream s) {
  echo_buffers b;
  for (;;) {
    const absl::StatusOr<std::size_t> n = co_await next_read<kDeadline>(s, b);
    if (!n.ok() || *n == 0) co_return;
    const absl::Status w = co_await echo_back(s, b, *n);
    if (!w.ok()) co_return;
    if (*n == kSmall && !b.large) b.large.reset(new char[kLarge]);
  }
}

mpg::task<int> serve(std::string addr) {
  auto ln = mpg::net::listen(addr, {.reuse_port = false, .backlog = 4096});
  if (!ln.ok()) {
    std::fprintf(stderr, "echo_server: %s\n", std::string(ln.status().message()).c_str());
    co_return 1;
  }
  std::printf("listening on %s\n", ln->address().c_str());
  std::fflush(stdout);
  for (;;) {
    auto c = co_await ln->accept();
    if (!c.ok()) {
      std::fprintf(stderr, "echo_server: accept: %s\n", std::string(c.status().message()).c_str());
      continue;
    }
    if (g_receive && g_deadline) {
      mpg::go(handle_receive<true>(std::move(*c)), "echo.conn");
    } else if (g_receive) {
      mpg::go(handle_receive<false>(std::move(*c)), "echo.conn");
    } else if (g_deadline) {
      mpg::go(handle<true>(std::move(*c)), "echo.conn");
    } else {
      mpg::go(handle<false>(std::move(*c)), "echo.conn");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  g_deadline = a.num("deadline", 0) != 0;
  g_receive = a.num("receive", 1) != 0;
  mpg::runtime rt({.procs = static_cast<unsigned>(a.num("procs", 0))});
  const perf::stats_sampler sampler(rt, a.num("stats", 0));
  std::string addr = a.str("host", "127.0.0.1") + ":" + a.str("port", "9000");
  return rt.block_on(serve(addr));
}
