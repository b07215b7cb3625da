// lib/io/address.hpp: parsing, resolving and printing socket addresses for
// mpg::net (private).
//
// Accepted forms:
//   "host:port"      IPv4 or a name: "127.0.0.1:80", "localhost:80", "example.com:443"
//   "[ipv6]:port"    "[::1]:0"; with a zone, "[fe80::1%eth0]:80" or "[fe80::1%2]:80"
//                    (the scope id is kept; getaddrinfo parses it with AI_NUMERICHOST)
//   ":port"          listen: every interface, dual-stack; dial: this host
//   "unix:/path"     a Unix socket on a path (relative paths too: "unix:app.sock")
//   "unix:@name"     a Unix socket in the abstract namespace (Linux)
// The port is 1 to 5 ASCII digits, at most 65535 (no space, no sign); a host
// with a NUL is refused (it would be cut short as a C string).
// Names other than "localhost" need getaddrinfo, which blocks; resolve()
// does it only when asked to (see name_lookup below), so no P ever waits for DNS.
// An address with a zone is numeric: parsing it never blocks.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mpg::detail {

struct sock_addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};

enum class name_lookup {
  allowed,   // getaddrinfo inline (the caller does not hold a P)
  refused,   // a name that needs getaddrinfo yields lookup_needed()
};

// resolve(): addr to socket addresses, in the order to try them. passive:
// for listen (an empty host means every interface). Unix addresses yield
// one AF_UNIX address. kInvalidArgument for a malformed address, kNotFound
// for a failed lookup (naming the host quoted, as bad_address() does).
absl::StatusOr<std::vector<sock_addr>> resolve(std::string_view addr, bool passive,
                                               name_lookup how);

// lookup_needed(): resolve() refused to run getaddrinfo for s.
bool lookup_needed(const absl::Status& s) noexcept;

// holds_p(): the calling thread runs a task or posted function on a P (and
// so must not block in getaddrinfo).
bool holds_p() noexcept;

// format_addr(): "1.2.3.4:80", "[::1]:80", "[fe80::1%eth0]:80" (a scope id
// as its interface's name on a link-local address or a node- or link-local
// multicast one, else as its number, or
// when no interface has it: what resolve() reads back to the same address),
// "unix:/path", "unix:@name", or "unix:" for an unnamed Unix socket. len: as
// returned with the address.
std::string format_addr(const sockaddr_storage& ss, socklen_t len);

// shown_addr(): a as an error message names it: format_addr's text between
// quotes, escaped (io_status.hpp, quoted()), since an abstract Unix name
// (and a path) may hold any byte, a NUL or a line break included.
std::string shown_addr(const sock_addr& a);

struct io_slot;

// socket_name(): the address of a socket object's own end (getsockname) or
// of its peer (getpeername), with close() held off under the call
// (fd_close.hpp, C6): fd is the object's fd word, slot the one whose lock
// guards it.
absl::StatusOr<std::string> socket_name(const std::atomic<int>& fd, io_slot& slot, bool peer);

// port_of(): the IP port of ss; 0 for anything else.
std::uint16_t port_of(const sockaddr_storage& ss) noexcept;

// unix_path(): the file a Unix address names ("" for abstract and unnamed
// addresses, which have no file).
std::string unix_path(const sock_addr& a);

// bad_address(): kInvalidArgument naming the address (escaped as a C
// string literal's body, so the message is one line with no NUL) and what
// is wrong.
absl::Status bad_address(std::string_view addr, std::string_view why);

// dial_errors: the error a dial that tried each of an address's socket
// addresses reports when none connected: the first, as Go's, except that an
// error saying only that this host cannot use that address family
// (EAFNOSUPPORT, EADDRNOTAVAIL: "localhost" or ":port" on a host without
// IPv6) gives way to the first later error that says more. listen() and
// listen_udp() keep theirs here too: they go on past only such errors, so
// they report the first address's.
class dial_errors {
 public:
  void add(absl::Status s);
  // result(): the kept error; none when no error was added.
  absl::Status result(absl::Status none) const;

 private:
  absl::Status kept_;
  bool family_only_ = false;  // kept_ is an EAFNOSUPPORT or EADDRNOTAVAIL
};

}  // namespace mpg::detail
