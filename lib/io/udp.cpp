// lib/io/udp.cpp: UDP sockets over the per-P io_uring reactor (mpg/udp.hpp).
//
// Every send is one IORING_OP_SENDMSG and every receive one IORING_OP_RECVMSG
// awaited through detail::io_awaiter, with the stream's cancellation and
// close protocol (mpg/detail/io/io_op.hpp): a slot per direction, and close()
// closes both slots (cancelling and submitting what is in flight) before it
// releases the fd number. The msghdr, iovec and sockaddr of an operation live
// in the coroutine frame, which stays put until the final completion.
//
// Truncation: receives pass MSG_TRUNC, so the result is the datagram's full
// length even when the buffer was shorter (udp(7)); truncated is that length
// exceeding the buffer, or MSG_TRUNC in the msg_flags the kernel wrote back.
//
// Sockets stay in blocking mode (io_uring waits for readiness itself); a
// socket someone made non-blocking gets -EAGAIN answered with a POLL_ADD and
// a retry, as in net.cpp. -EINTR is retried.
#include "mpg/udp.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "io/address.hpp"
#include "io/fd_close.hpp"
#include "io/io_status.hpp"
#include "io/net_op.hpp"
#include "io/reactor.hpp"
#include "mpg/blocking.hpp"

namespace mpg::net {

namespace {

using clock = udp_socket::clock;
using op::deadline_ns;
using op::make_op;
using op::op_bounds;
using op::wait_ready;
using detail::io_awaiter;
using detail::io_context_binding;
using detail::io_opcode;
using detail::io_request;
using detail::name_lookup;
using detail::prep_request;
using detail::sock_addr;

// Debian's abseil has its own string_view type (not std::string_view's alias).
absl::string_view av(std::string_view s) noexcept { return {s.data(), s.size()}; }

constexpr const char* kClosedObject = "network connection";

bool is_unix(std::string_view address) noexcept { return address.substr(0, 5) == "unix:"; }

// resolve_udp(): address to IP socket addresses; a host name is looked up
// under mpg::blocking.
task<absl::StatusOr<std::vector<sock_addr>>> resolve_udp(std::string address) {
  if (is_unix(address)) {
    co_return detail::bad_address(address, "Unix datagram sockets are not supported");
  }
  auto addrs = detail::resolve(address, /*passive=*/false, name_lookup::refused);
  if (!addrs.ok() && detail::lookup_needed(addrs.status())) {
    addrs = co_await mpg::blocking(
        [&] { return detail::resolve(address, /*passive=*/false, name_lookup::allowed); });
  }
  co_return addrs;
}

// pick(): the first of addrs a socket of `family` can send to; an IPv4
// address becomes v4-mapped for an IPv6 socket.
absl::StatusOr<sock_addr> pick(const std::vector<sock_addr>& addrs, int family,
                               std::string_view address) {
  for (const sock_addr& a : addrs) {
    if (a.ss.ss_family == family) return a;
  }
  if (family == AF_INET6) {
    for (const sock_addr& a : addrs) {
      if (a.ss.ss_family != AF_INET) continue;
      const auto* in = reinterpret_cast<const sockaddr_in*>(&a.ss);
      sock_addr m;
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&m.ss);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = in->sin_port;
      in6->sin6_addr.s6_addr[10] = 0xff;
      in6->sin6_addr.s6_addr[11] = 0xff;
      std::memcpy(&in6->sin6_addr.s6_addr[12], &in->sin_addr, 4);
      m.len = sizeof(sockaddr_in6);
      return m;
    }
  }
  return detail::errno_status(EAFNOSUPPORT,
                              absl::StrCat("send_to ", detail::quoted(av(address)),
                                           ": no address of the socket's family"));
}

task<absl::StatusOr<udp_socket>> dial_udp_addr(std::string address) {
  auto addrs = co_await resolve_udp(address);
  if (!addrs.ok()) co_return addrs.status();
  detail::dial_errors errors;  // which address's error to report
  for (sock_addr& a : *addrs) {
    int fd = ::socket(a.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int err = errno;  // before shown_addr, which may set errno
      errors.add(
          detail::errno_status(err, absl::StrCat("dial_udp ", detail::shown_addr(a), ": socket")));
      continue;
    }
    // A UDP connect only records the peer: it never waits.
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) {
      const int err = errno;  // before shown_addr, which may set errno
      errors.add(detail::errno_status(err, absl::StrCat("dial_udp ", detail::shown_addr(a))));
      ::close(fd);
      continue;
    }
    co_return udp_socket(fd);
  }
  co_return errors.result(absl::UnavailableError("dial_udp: no addresses"));
}

}  // namespace

udp_socket::udp_socket(int fd) noexcept : fd_(fd < 0 ? -1 : fd) {
  if (fd < 0) return;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    family_ = ss.ss_family;
    port_ = detail::port_of(ss);
  }
}

udp_socket::udp_socket(udp_socket&& o) noexcept
    : fd_(detail::take_fd(o.fd_)),
      port_(o.port_),
      family_(o.family_),
      read_deadline_(o.read_deadline_),
      write_deadline_(o.write_deadline_) {}

udp_socket& udp_socket::operator=(udp_socket&& o) noexcept {
  if (this != &o) {
    close();
    fd_.store(detail::take_fd(o.fd_), std::memory_order_relaxed);
    port_ = o.port_;
    family_ = o.family_;
    read_deadline_ = o.read_deadline_;
    write_deadline_ = o.write_deadline_;
    read_slot_.closed.store(false, std::memory_order_relaxed);  // no op in flight (precondition)
    write_slot_.closed.store(false, std::memory_order_relaxed);
  }
  return *this;
}

absl::StatusOr<std::string> udp_socket::local_address() const {
  return detail::socket_name(fd_, write_slot_, false);
}
absl::StatusOr<std::string> udp_socket::remote_address() const {
  return detail::socket_name(fd_, write_slot_, true);
}

// The address and the data's view are copied into the lazy task's frame
// (the caller's string may be gone when the task runs; data must not be).
task<absl::Status> udp_socket::send_to(std::string_view data, std::string_view address) {
  return do_send(data, std::string(address), nullptr);
}
task<absl::Status> udp_socket::send_to(std::string_view data, std::string_view address,
                                       const context& ctx) {
  return do_send(data, std::string(address), ctx.node_for_internal_use());
}
task<absl::Status> udp_socket::send(std::string_view data) {
  return do_send(data, std::nullopt, nullptr);
}
task<absl::Status> udp_socket::send(std::string_view data, const context& ctx) {
  return do_send(data, std::nullopt, ctx.node_for_internal_use());
}

task<absl::StatusOr<datagram>> udp_socket::recv_from(std::span<char> buf) {
  return do_recv(buf, /*want_from=*/true, nullptr);
}
task<absl::StatusOr<datagram>> udp_socket::recv_from(std::span<char> buf, const context& ctx) {
  return do_recv(buf, /*want_from=*/true, ctx.node_for_internal_use());
}

namespace {
// recv_size(): a receive's size. The receive is made (its context node
// taken) by the caller, not here: a lazy coroutine holding `const
// context&` would read it when first awaited, after a temporary or a local
// passed as ctx may be gone.
task<absl::StatusOr<std::size_t>> recv_size(task<absl::StatusOr<datagram>> r) {
  auto d = co_await std::move(r);
  if (!d.ok()) co_return d.status();
  co_return d->size;
}
}  // namespace

task<absl::StatusOr<std::size_t>> udp_socket::recv(std::span<char> buf) {
  return recv_size(do_recv(buf, /*want_from=*/false, nullptr));
}
task<absl::StatusOr<std::size_t>> udp_socket::recv(std::span<char> buf, const context& ctx) {
  return recv_size(do_recv(buf, /*want_from=*/false, ctx.node_for_internal_use()));
}

void udp_socket::set_deadline(std::optional<clock::time_point> t) noexcept {
  set_read_deadline(t);
  set_write_deadline(t);
}
void udp_socket::set_read_deadline(std::optional<clock::time_point> t) noexcept {
  read_deadline_.set(deadline_ns(t), &read_slot_);
}
void udp_socket::set_write_deadline(std::optional<clock::time_point> t) noexcept {
  write_deadline_.set(deadline_ns(t), &write_slot_);
}

task<absl::Status> udp_socket::do_send(std::string_view data, std::optional<std::string> to,
                                       std::shared_ptr<detail::context_node> ctx) {
  const char* what = to ? "send_to" : "send";
  const detail::io_claim claim(&write_slot_);
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  bind.bind(&write_slot_);
  const op_bounds b{.live = &write_deadline_, .bind = &bind};
  sock_addr dest;
  if (to) {
    if (fd_.load(std::memory_order_relaxed) < 0)
      co_return detail::closed_status(what, kClosedObject);
    auto addrs = co_await resolve_udp(*to);
    if (!addrs.ok()) co_return addrs.status();
    auto picked = pick(*addrs, family_, *to);
    if (!picked.ok()) co_return picked.status();
    dest = *picked;
  }
  iovec iov{.iov_base = const_cast<char*>(data.data()), .iov_len = data.size()};
  msghdr msg{};
  if (to) {
    msg.msg_name = &dest.ss;
    msg.msg_namelen = dest.len;
  }
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  for (;;) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return detail::closed_status(what, kClosedObject);
    io_request rq{.op = io_opcode::sendmsg, .fd = fd, .addr = &msg, .flags = MSG_NOSIGNAL};
    io_awaiter op = make_op(&rq, &write_slot_, "net.udp.send", b);
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res >= 0) co_return absl::OkStatus();  // a datagram goes whole or not at all
    if (res == -EINTR || (res == -ETIME && !b.expired())) continue;
    if (res == -EAGAIN) {
      res = co_await wait_ready(fd, POLLOUT, &write_slot_, b);
      if (res >= 0 || res == -EINTR || (res == -ETIME && !b.expired())) continue;
    }
    co_return detail::io_result_status(
        res, to ? absl::StrCat(what, " ", detail::shown_addr(dest)) : std::string(what));
  }
}

task<absl::StatusOr<datagram>> udp_socket::do_recv(std::span<char> buf, bool want_from,
                                                   std::shared_ptr<detail::context_node> ctx) {
  const char* what = want_from ? "recv_from" : "recv";
  const detail::io_claim claim(&read_slot_);
  io_context_binding bind(ctx.get());  // ctx, a parameter, keeps the node alive
  bind.bind(&read_slot_);
  const op_bounds b{.live = &read_deadline_, .bind = &bind};
  for (;;) {
    int fd = fd_.load(std::memory_order_relaxed);
    if (fd < 0) co_return detail::closed_status(what, kClosedObject);
    sockaddr_storage from{};
    iovec iov{.iov_base = buf.data(), .iov_len = buf.size()};
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    io_request rq{.op = io_opcode::recvmsg, .fd = fd, .addr = &msg, .flags = MSG_TRUNC};
    io_awaiter op = make_op(&rq, &read_slot_, "net.udp.recv", b);
    int res = co_await op;
    res = bind.result(res, op.op);
    if (res >= 0) {
      const auto full = static_cast<std::size_t>(res);
      datagram d;
      d.size = std::min(full, buf.size());
      d.truncated = full > buf.size() || (msg.msg_flags & MSG_TRUNC) != 0;
      if (want_from) d.from = detail::format_addr(from, msg.msg_namelen);
      co_return d;
    }
    if (res == -EINTR || (res == -ETIME && !b.expired())) continue;
    if (res == -EAGAIN) {
      res = co_await wait_ready(fd, POLLIN, &read_slot_, b);
      if (res >= 0 || res == -EINTR || (res == -ETIME && !b.expired())) continue;
    }
    co_return detail::io_result_status(res, what);
  }
}

void udp_socket::cancel() noexcept {
  detail::io_cancel(&read_slot_, false);
  detail::io_cancel(&write_slot_, false);
}

void udp_socket::close() noexcept {
  // The close protocol (fd_close.hpp): a task woken here may destroy the
  // socket as soon as it runs.
  const int fd = detail::claim_close(fd_);
  if (fd < 0) return;
  // Close the slots first: an op in flight is cancelled and its SQE is in
  // the kernel before the fd number is released.
  detail::io_cancel(&read_slot_, true);
  detail::run_close_hook(this);
  detail::io_cancel(&write_slot_, true);
  ::close(fd);
  detail::finish_close(fd_);
}

absl::StatusOr<udp_socket> listen_udp(std::string_view address) {
  if (is_unix(address))
    return detail::bad_address(address, "Unix datagram sockets are not supported");
  auto addrs = detail::resolve(address, /*passive=*/true,
                               detail::holds_p() ? name_lookup::refused : name_lookup::allowed);
  if (!addrs.ok() && detail::lookup_needed(addrs.status())) {
    return detail::bad_address(
        address, "listen_udp inside a task takes an IP address or \"localhost\": a host name "
                 "needs a lookup that would block this P (look it up under mpg::blocking first)");
  }
  if (!addrs.ok()) return addrs.status();
  // Which address's error to report: the first, as listen's (listen_dial.cpp).
  detail::dial_errors errors;
  for (sock_addr& a : *addrs) {
    int fd = ::socket(a.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int err = errno;
      absl::Status s =
          detail::errno_status(err, absl::StrCat("listen_udp ", detail::quoted(av(address)),
                                                 ": socket"));
      if (err != EAFNOSUPPORT) return s;
      errors.add(std::move(s));
      continue;
    }
    if (a.ss.ss_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
      if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
        int zero = 0;
        ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);  // dual-stack
      }
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a.ss), a.len) != 0) {
      const int err = errno;
      ::close(fd);
      absl::Status s =
          detail::errno_status(err, absl::StrCat("listen_udp ", detail::shown_addr(a)));
      if (err != EADDRNOTAVAIL && err != EAFNOSUPPORT) return s;  // else e.g. no IPv6 here
      errors.add(std::move(s));
      continue;
    }
    return udp_socket(fd);
  }
  return errors.result(
      absl::UnavailableError(
          absl::StrCat("listen_udp ", detail::quoted(av(address)), ": no addresses")));
}

task<absl::StatusOr<udp_socket>> dial_udp(std::string_view address) {
  return dial_udp_addr(std::string(address));
}

}  // namespace mpg::net
