// mpg/udp.hpp: UDP sockets over io_uring (included by mpg/net.hpp).
//
//   absl::StatusOr<mpg::net::udp_socket> u = mpg::net::listen_udp("127.0.0.1:0");  // bound
//   absl::Status s = co_await u->send_to(std::string_view("ping"), "127.0.0.1:9999");
//   absl::StatusOr<mpg::net::datagram> g = co_await u->recv_from(std::span<char>(buf));
//   absl::StatusOr<mpg::net::udp_socket> d = co_await mpg::net::dial_udp("[::1]:9999");
//   absl::Status s2 = co_await d->send(std::string_view("ping"));       // connected
//   absl::StatusOr<std::size_t> n = co_await d->recv(std::span<char>(buf));
//
// Each send and receive is one IORING_OP_SENDMSG / IORING_OP_RECVMSG on the
// current P's ring; the task parks and its P runs others meanwhile, as for
// TCP (mpg/net.hpp). IPv4 and IPv6; a socket bound to ":port" (or dialled
// to an IPv6 address) is IPv6 and dual-stack, and sends to an IPv4 address
// as its v4-mapped IPv6 form.
//
// Datagrams. A receive takes one whole datagram. When buf is smaller than it,
// the rest is discarded by the kernel: recv_from reports it (datagram::
// truncated, with size == buf.size()); recv() returns buf.size() and drops
// the rest silently, as Go's Read does. send/send_to send one datagram of
// all of data or fail (EMSGSIZE past the limit).
//
// Errors: absl::Status values carrying their errno (mpg/io_error.hpp): a
// connected socket reports ICMP "port unreachable" on a later send or recv
// as ECONNREFUSED; use after close() is net::is_closed. kDeadlineExceeded and
// kCancelled as for TCP.
//
// Concurrency: one task may receive while another sends; one receive and
// one send at a time (a second one started before the first returned fails
// at once with errno EALREADY, kAlreadyExists). cancel() and close() from any
// task (any P). Deadlines as tcp_stream's. Buffers must outlive the awaited
// call. Moving a socket with an operation in flight is undefined.
//
// Names: send_to and dial_udp look a host name up under mpg::blocking (the P
// keeps running other tasks); listen_udp, which is not a coroutine, accepts
// a host name only from a plain thread (as listen, mpg/net.hpp). Unix
// datagram sockets are not supported.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mpg/context.hpp"
#include "mpg/detail/io/io_op.hpp"
#include "mpg/task.hpp"

namespace mpg::net {

// datagram: what recv_from received.
struct datagram {
  std::size_t size = 0;    // bytes stored in the buffer
  std::string from;        // the sender, "127.0.0.1:5353" or "[::1]:5353"
  bool truncated = false;  // the datagram was longer than the buffer; the rest is lost
};

// udp_socket: a UDP socket, bound (listen_udp) or connected (dial_udp).
// Move-only; the destructor closes it.
class udp_socket {
 public:
  using clock = std::chrono::steady_clock;

  udp_socket() noexcept = default;
  // Adopts a UDP socket (blocking mode, as listen_udp/dial_udp make it); a
  // negative fd makes a closed socket.
  explicit udp_socket(int fd) noexcept;
  udp_socket(udp_socket&& o) noexcept;
  udp_socket& operator=(udp_socket&& o) noexcept;
  udp_socket(const udp_socket&) = delete;
  udp_socket& operator=(const udp_socket&) = delete;
  ~udp_socket() { close(); }

  bool is_open() const noexcept { return fd_.load(std::memory_order_relaxed) >= 0; }
  int native_handle() const noexcept {
    const int fd = fd_.load(std::memory_order_relaxed);
    return fd >= 0 ? fd : -1;
  }
  // port(): the local port.
  std::uint16_t port() const noexcept { return port_; }
  absl::StatusOr<std::string> local_address() const;
  // remote_address(): the peer of a connected socket.
  absl::StatusOr<std::string> remote_address() const;

  // send_to(): one datagram of all of data to address ("ip:port", or a
  // name:port looked up under mpg::blocking).
  task<absl::Status> send_to(std::string_view data, std::string_view address);
  // recv_from(): the next datagram into buf, with its sender.
  task<absl::StatusOr<datagram>> recv_from(std::span<char> buf);
  // send() / recv(): on a connected socket (dial_udp).
  task<absl::Status> send(std::string_view data);
  task<absl::StatusOr<std::size_t>> recv(std::span<char> buf);
  // The same, bounded by ctx too: kCancelled or kDeadlineExceeded (the
  // context's code) once ctx ends, blocked or not yet started. A host-name
  // lookup of send_to is not interrupted; its result is dropped.
  task<absl::Status> send_to(std::string_view data, std::string_view address, const context& ctx);
  task<absl::StatusOr<datagram>> recv_from(std::span<char> buf, const context& ctx);
  task<absl::Status> send(std::string_view data, const context& ctx);
  task<absl::StatusOr<std::size_t>> recv(std::span<char> buf, const context& ctx);

  // set_deadline(), set_read_deadline(), set_write_deadline()
  //
  // The socket's deadlines (std::nullopt: none), as tcp_stream's: from any
  // task, at any time; they apply to the operation in flight in that
  // direction and to later ones (kDeadlineExceeded once passed).
  void set_deadline(std::optional<clock::time_point> t) noexcept;
  void set_read_deadline(std::optional<clock::time_point> t) noexcept;
  void set_write_deadline(std::optional<clock::time_point> t) noexcept;

  // cancel(): the operations in flight complete with kCancelled. Any task.
  void cancel() noexcept;
  // close(): cancels what is in flight and closes the socket. Idempotent;
  // later operations fail with net::is_closed. A task it wakes may destroy
  // the socket at once, as tcp_stream::close() allows.
  void close() noexcept;

  // Diagnostics: an operation is in flight in that direction.
  bool recv_pending() const noexcept {
    return read_slot_.op.load(std::memory_order_relaxed) != nullptr;
  }

 private:
  task<absl::Status> do_send(std::string_view data, std::optional<std::string> to,
                             std::shared_ptr<detail::context_node> ctx);
  task<absl::StatusOr<datagram>> do_recv(std::span<char> buf, bool want_from,
                                         std::shared_ptr<detail::context_node> ctx);

  // The socket, -1 once closed (as tcp_stream::fd_).
  std::atomic<int> fd_{-1};
  std::uint16_t port_ = 0;
  int family_ = 0;  // AF_INET or AF_INET6
  detail::io_deadline read_deadline_;   // followed by the op in read_slot_
  detail::io_deadline write_deadline_;  // followed by the op in write_slot_
  detail::io_slot read_slot_{true};   // claiming (io_op.hpp)
  // Mutable: the const address calls take its lock (lib/io/fd_close.hpp, C6).
  mutable detail::io_slot write_slot_{true};
};

// listen_udp(): a socket bound to address (":0", "127.0.0.1:0", "[::1]:5353";
// port 0 picks a free port, see port()). Any thread.
absl::StatusOr<udp_socket> listen_udp(std::string_view address);

// dial_udp(): a socket connected to address: send/recv exchange datagrams
// with that peer only. In a task.
task<absl::StatusOr<udp_socket>> dial_udp(std::string_view address);

}  // namespace mpg::net
