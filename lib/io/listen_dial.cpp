// lib/io/listen_dial.cpp: where TCP (and Unix stream) connections come from
// (mpg/net.hpp): listen() and its listener (accept(), with Go's back-off when
// the process is out of descriptors or memory, close()), and dial(). The
// streams themselves, and the rules every operation here follows (one
// io_uring request per blocking step, deadlines, contexts, -EINTR), are in
// net.cpp.
//
// Names. dial() is a coroutine: an address that needs getaddrinfo is looked
// up under mpg::blocking, with the P handed off. listen() is not: called on
// a thread that holds a P (a task's), it takes only addresses that need no
// lookup (address.cpp parses them), and a host name is an error that says
// to look it up first; elsewhere it looks names up itself.
#include "mpg/net.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "io/address.hpp"
#include "io/fd_awaiter.hpp"
#include "io/fd_close.hpp"
#include "io/io_status.hpp"
#include "io/net_op.hpp"
#include "mpg/blocking.hpp"
#include "mpg/detail/io/io_context.hpp"
#include "mpg/detail/sched/clock.hpp"

namespace mpg::net {

namespace {

using op::await_op;
using op::make_op;
using op::op_bounds;
using op::wait_ready;
using detail::io_context_binding;
using detail::io_opcode;
using detail::io_request;
using detail::io_result_status;
using detail::name_lookup;
using detail::quoted;
using detail::resolve;
using detail::shown_addr;
using detail::sock_addr;

// Debian's abseil has its own string_view type (not std::string_view's alias).
absl::string_view av(std::string_view s) noexcept { return {s.data(), s.size()}; }

void set_nodelay(int fd) noexcept {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// connect_fd(): connect(2) on a blocking socket, retried the ways the
// kernel allows. -EINTR: the connection goes on in the background, so the
// retry may read -EALREADY (wait until writable, then read SO_ERROR) or
// -EISCONN (connected). -EAGAIN (no local port free yet; a Unix socket's
// backlog full): a few retries.
task<int> connect_fd(int fd, sock_addr& a, detail::io_slot* slot, const op_bounds& b) {
  io_request rq{.op = io_opcode::connect, .fd = fd, .addr = &a.ss, .len = a.len};
  bool retried = false;
  int eagains = 0;
  for (;;) {
    int res = co_await await_op(&rq, slot, "net.dial", b);
    if (res == -EINTR || (res == -EAGAIN && ++eagains <= 8)) {
      retried = true;
      continue;
    }
    if (!retried) co_return res;
    if (res == -EISCONN) co_return 0;
    if (res != -EALREADY) co_return res;
    res = co_await wait_ready(fd, POLLOUT, slot, b);
    if (res == -EINTR) continue;  // connect again: -EALREADY, -EISCONN or the error
    if (res < 0) co_return res;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) co_return -errno;
    co_return -err;
  }
}

task<absl::StatusOr<tcp_stream>> dial_addr(std::string address,
                                           std::optional<clock::time_point> deadline,
                                           std::shared_ptr<detail::context_node> ctx) {
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  detail::io_slot* slot = bind.bind(nullptr);
  const op_bounds b{.deadline = deadline, .bind = &bind};
  auto addrs = resolve(address, /*passive=*/false, name_lookup::refused);
  if (!addrs.ok() && detail::lookup_needed(addrs.status())) {
    // A host name: getaddrinfo blocks, so it runs with the P handed off.
    addrs = co_await mpg::blocking(
        [&] { return resolve(address, /*passive=*/false, name_lookup::allowed); });
  }
  if (!addrs.ok()) co_return addrs.status();
  detail::dial_errors errors;  // which address's error to report
  for (sock_addr& a : *addrs) {
    int fd = ::socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int err = errno;  // before shown_addr, which may set errno
      errors.add(detail::errno_status(err, absl::StrCat("dial ", shown_addr(a), ": socket")));
      continue;
    }
    // Owned by a stream from the start: its destructor closes the socket
    // when the connect fails, and when the frame is destroyed with the
    // connect in flight or its result unread (a task killed at shutdown:
    // lib/sched/shutdown.cpp, step 6).
    tcp_stream conn(fd);
    int res = co_await connect_fd(fd, a, slot, b);
    if (res == 0) {
      if (a.ss.ss_family != AF_UNIX) set_nodelay(fd);
      co_return std::move(conn);
    }
    absl::Status err = io_result_status(res, absl::StrCat("dial ", shown_addr(a)));
    // The deadline or the context ended the dial: that is what it reports.
    if (res == -ETIME || res == -ECANCELED) co_return err;
    errors.add(std::move(err));
  }
  co_return errors.result(absl::UnavailableError("dial: no addresses"));
}

}  // namespace

listener::listener(listener&& o) noexcept
    : fd_(detail::take_fd(o.fd_)),
      port_(o.port_),
      unix_path_(std::move(o.unix_path_)),
      backoffs_(o.backoffs_.load(std::memory_order_relaxed)) {}

listener& listener::operator=(listener&& o) noexcept {
  if (this != &o) {
    close();
    fd_.store(detail::take_fd(o.fd_), std::memory_order_relaxed);
    port_ = o.port_;
    unix_path_ = std::move(o.unix_path_);
    backoffs_.store(o.backoffs_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    slot_.closed.store(false, std::memory_order_relaxed);
  }
  return *this;
}

std::string listener::address() const {
  auto a = detail::socket_name(fd_, slot_, false);
  return a.ok() ? *a : std::string();
}

task<absl::StatusOr<tcp_stream>> listener::accept() { return do_accept(std::nullopt, nullptr); }
task<absl::StatusOr<tcp_stream>> listener::accept(clock::time_point deadline) {
  return do_accept(deadline, nullptr);
}
task<absl::StatusOr<tcp_stream>> listener::accept(const context& ctx) {
  return do_accept(std::nullopt, ctx.node_for_internal_use());
}

task<absl::StatusOr<tcp_stream>> listener::do_accept(std::optional<clock::time_point> deadline,
                                                     std::shared_ptr<detail::context_node> ctx) {
  const detail::io_claim claim(&slot_);
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  bind.bind(&slot_);
  // A listener has no deadline of its own: without a deadline argument an
  // accept is unbounded (expired() is then never asked: no -ETIME).
  const op_bounds b{.deadline = deadline, .bind = &bind};
  std::chrono::milliseconds delay{0};
  for (;;) {
    // A closed listener is kCancelled however the accept meets the close:
    // here (close() finished), in io_start (the slot closed, the fd not yet
    // released: -ECANCELED), or in flight (cancelled by close()).
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return detail::closed_cancelled_status("accept", "listener");
    io_request rq{.op = io_opcode::accept, .fd = fd, .flags = SOCK_CLOEXEC};
    // The new fd is the awaiter's until it is read (fd_awaiter.hpp).
    detail::io_fd_awaiter op(make_op(&rq, &slot_, "net.accept", b));
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res >= 0) {
      set_nodelay(res);
      co_return tcp_stream(res);
    }
    switch (-res) {
      case EINTR:
      case EAGAIN:
      case ECONNABORTED:
      // accept(2): errors of the new connection that ask for a retry.
      case EPROTO:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case ENETUNREACH:
        continue;
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM: {
        // Go's net/http: sleep 5 ms, doubling to 1 s, and try again.
        using namespace std::chrono_literals;
        delay = delay.count() == 0 ? 5ms : std::min<std::chrono::milliseconds>(delay * 2, 1s);
        backoffs_.fetch_add(1, std::memory_order_relaxed);
        detail::io_timespec ts{.tv_sec = 0, .tv_nsec = delay.count() * 1'000'000};
        if (delay >= 1s) ts = {.tv_sec = delay.count() / 1000, .tv_nsec = 0};
        io_request sleep{.op = io_opcode::timeout, .addr = &ts};
        // The timeout completes with -ETIME when it fires; a deadline or
        // context that ends the sleep is told apart by looking at them.
        int r = co_await await_op(&sleep, &slot_, "net.accept.backoff", b);
        if (r == -ECANCELED) co_return io_result_status(r, "accept");
        if (bind.cancelled()) {
          const bool late = bind.err().code() == absl::StatusCode::kDeadlineExceeded;
          co_return io_result_status(late ? -ETIME : -ECANCELED, "accept");
        }
        if (deadline && clock::now() >= *deadline) co_return io_result_status(-ETIME, "accept");
        continue;
      }
      default:
        co_return io_result_status(res, "accept");
    }
  }
}

void listener::close() noexcept {
  // The close protocol (fd_close.hpp): an accept woken here may destroy
  // the listener as soon as it runs.
  const int fd = detail::claim_close(fd_);
  if (fd < 0) return;
  detail::io_cancel(&slot_, true);
  detail::run_close_hook(this);
  ::close(fd);
  // The closer removes the socket file, as Go does.
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  detail::finish_close(fd_);
}

absl::StatusOr<listener> listen(std::string_view address, listen_options opts) {
  // Not a coroutine, so a name lookup would block the caller's P: on a P
  // only addresses that need no getaddrinfo are accepted.
  auto addrs = resolve(address, /*passive=*/true,
                       detail::holds_p() ? name_lookup::refused : name_lookup::allowed);
  if (!addrs.ok() && detail::lookup_needed(addrs.status())) {
    return detail::bad_address(
        address, "listen inside a task takes an IP address, \"localhost\" or a Unix path: "
                 "a host name needs a lookup that would block this P (look it up under "
                 "mpg::blocking first)");
  }
  if (!addrs.ok()) return addrs.status();
  // Which address's error to report: the first, as dial's (address.hpp).
  // Only an error that says this host cannot use the address's family goes
  // on to the next address; any other is reported at once.
  detail::dial_errors errors;
  for (sock_addr& a : *addrs) {
    const bool is_unix = a.ss.ss_family == AF_UNIX;
    int fd = ::socket(a.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int err = errno;
      absl::Status s =
          detail::errno_status(err, absl::StrCat("listen ", quoted(av(address)), ": socket"));
      if (err != EAFNOSUPPORT) return s;
      errors.add(std::move(s));
      continue;
    }
    int one = 1, zero = 0;
    if (!is_unix) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (opts.reuse_port && ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      const int err = errno;
      ::close(fd);
      return detail::errno_status(err,
                                  absl::StrCat("listen ", quoted(av(address)), ": SO_REUSEPORT"));
    }
    if (a.ss.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
      if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      }
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
      const int err = errno;
      ::close(fd);
      absl::Status s = detail::errno_status(err, absl::StrCat("listen ", shown_addr(a)));
      if (err != EADDRNOTAVAIL && err != EAFNOSUPPORT) return s;  // else e.g. no IPv6 here
      errors.add(std::move(s));
      continue;
    }
    listener ln;
    ln.fd_.store(fd, std::memory_order_relaxed);
    ln.unix_path_ = detail::unix_path(a);  // bound: ln's close() removes the file
    if (::listen(fd, opts.backlog > 0 ? opts.backlog : SOMAXCONN) != 0) {
      const int err = errno;  // before shown_addr, which may set errno
      return detail::errno_status(err, absl::StrCat("listen ", shown_addr(a)));
    }
    sockaddr_storage bound{};
    socklen_t len = sizeof bound;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    ln.port_ = detail::port_of(bound);
    return ln;
  }
  return errors.result(
      absl::UnavailableError(absl::StrCat("listen ", quoted(av(address)), ": no addresses")));
}

// The address is copied into the lazy task's frame: the caller's string may
// be gone when the task runs.
task<absl::StatusOr<tcp_stream>> dial(std::string_view address) {
  return dial_addr(std::string(address), std::nullopt, nullptr);
}
task<absl::StatusOr<tcp_stream>> dial(std::string_view address, clock::time_point deadline) {
  return dial_addr(std::string(address), deadline, nullptr);
}
task<absl::StatusOr<tcp_stream>> dial(std::string_view address, const context& ctx) {
  return dial_addr(std::string(address), std::nullopt, ctx.node_for_internal_use());
}

}  // namespace mpg::net
