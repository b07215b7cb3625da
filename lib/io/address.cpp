// lib/io/address.cpp: socket addresses for mpg::net (see address.hpp).
#include "io/address.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "mpg/io_error.hpp"
#include "mpg/detail/sched/timer.hpp"
#include "io/fd_close.hpp"
#include "io/io_status.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {

// Debian's abseil has its own string_view type (not std::string_view's alias).
absl::string_view av(std::string_view s) noexcept { return {s.data(), s.size()}; }

constexpr std::string_view kUnixPrefix = "unix:";
constexpr std::string_view kLookupNeeded = "lookup needed";
constexpr socklen_t kUnixPathOffset = offsetof(sockaddr_un, sun_path);

void add_v4(std::vector<sock_addr>& out, in_addr a, std::uint16_t port) {
  sock_addr s;
  auto* in = reinterpret_cast<sockaddr_in*>(&s.ss);
  in->sin_family = AF_INET;
  in->sin_port = htons(port);
  in->sin_addr = a;
  s.len = sizeof(sockaddr_in);
  out.push_back(s);
}

// add_v6(): base whole (its scope id: the zone of a link-local address),
// with the port.
void add_v6(std::vector<sock_addr>& out, const sockaddr_in6& base, std::uint16_t port) {
  sock_addr s;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&s.ss);
  *in6 = base;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(port);
  s.len = sizeof(sockaddr_in6);
  out.push_back(s);
}

void add_v6(std::vector<sock_addr>& out, in6_addr a, std::uint16_t port) {
  sockaddr_in6 in6{};
  in6.sin6_addr = a;
  add_v6(out, in6, port);
}

// parse_port(): 1 to 5 ASCII digits, at most 65535; nothing else (no sign,
// no space), so that an address reads one way only.
std::optional<std::uint16_t> parse_port(std::string_view text) noexcept {
  if (text.empty() || text.size() > 5) return std::nullopt;
  std::uint32_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (v > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(v);
}

// resolve_zoned(): an IPv6 address with a zone, "fe80::1%eth0" or
// "fe80::1%2". getaddrinfo with AI_NUMERICHOST parses it into a
// sockaddr_in6 with the zone's scope id and never asks DNS, so it runs
// whether or not lookups are allowed.
absl::Status resolve_zoned(std::vector<sock_addr>& out, std::string_view addr,
                           const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_INET6;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) {
    return bad_address(addr, "not an IPv6 address with a zone (an interface name or index)");
  }
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET6) {
      add_v6(out, *reinterpret_cast<const sockaddr_in6*>(ai->ai_addr), port);
      break;
    }
  }
  ::freeaddrinfo(res);
  if (out.empty()) return bad_address(addr, "not an IPv6 address with a zone");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<sock_addr>> resolve_unix(std::string_view addr) {
  std::string_view name = addr.substr(kUnixPrefix.size());
  if (name.empty()) return bad_address(addr, "empty Unix socket path");
  sock_addr s;
  auto* un = reinterpret_cast<sockaddr_un*>(&s.ss);
  un->sun_family = AF_UNIX;
  if (name.front() == '@') {
    // Abstract: a NUL, then the name's bytes (not NUL-terminated).
    name.remove_prefix(1);
    if (name.size() + 1 > sizeof un->sun_path) return bad_address(addr, "name too long");
    std::memcpy(un->sun_path + 1, name.data(), name.size());
    s.len = static_cast<socklen_t>(kUnixPathOffset + 1 + name.size());
  } else {
    if (name.find('\0') != std::string_view::npos) return bad_address(addr, "NUL in path");
    if (name.size() + 1 > sizeof un->sun_path) return bad_address(addr, "path too long");
    std::memcpy(un->sun_path, name.data(), name.size());
    s.len = static_cast<socklen_t>(kUnixPathOffset + name.size() + 1);
  }
  return std::vector<sock_addr>{s};
}

}  // namespace

absl::Status bad_address(std::string_view addr, std::string_view why) {
  // Escaped (C style: \0, \n, \", \xff): the message stays one line that a
  // C string holds whole, so the reason after an address with a NUL is seen.
  return absl::InvalidArgumentError(absl::StrCat("address ", quoted(av(addr)), ": ", av(why)));
}

void dial_errors::add(absl::Status s) {
  if (s.ok()) return;
  const int err = errno_of(s);
  const bool family_only = err == EAFNOSUPPORT || err == EADDRNOTAVAIL;
  if (kept_.ok() || (family_only_ && !family_only)) {
    kept_ = std::move(s);
    family_only_ = family_only;
  }
}

absl::Status dial_errors::result(absl::Status none) const {
  return kept_.ok() ? none : kept_;
}

bool lookup_needed(const absl::Status& s) noexcept {
  return s.code() == absl::StatusCode::kUnavailable && s.message() == av(kLookupNeeded);
}

bool holds_p() noexcept {
  scheduler* s = current_scheduler();
  return s != nullptr && current_p_of(s) != nullptr;
}

std::string format_addr(const sockaddr_storage& ss, socklen_t len) {
  char buf[INET6_ADDRSTRLEN] = "?";
  switch (ss.ss_family) {
    case AF_INET: {
      auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
      return absl::StrCat(buf, ":", ntohs(in->sin_port));
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      if (in6->sin6_scope_id == 0) return absl::StrCat("[", buf, "]:", ntohs(in6->sin6_port));
      // The zone: the interface's name where getaddrinfo takes a name back
      // (glibc's __inet6_scopeid_pton: link-local and node- or link-local
      // multicast addresses), else the index, which it takes on any address.
      char name[IF_NAMESIZE] = {};
      const in6_addr& a = in6->sin6_addr;
      const bool named_zone = IN6_IS_ADDR_LINKLOCAL(&a) || IN6_IS_ADDR_MC_NODELOCAL(&a) ||
                              IN6_IS_ADDR_MC_LINKLOCAL(&a);
      std::string zone = named_zone && ::if_indextoname(in6->sin6_scope_id, name) != nullptr
                             ? std::string(name)
                             : absl::StrCat(in6->sin6_scope_id);
      return absl::StrCat("[", buf, "%", zone, "]:", ntohs(in6->sin6_port));
    }
    case AF_UNIX: {
      auto* un = reinterpret_cast<const sockaddr_un*>(&ss);
      if (len <= kUnixPathOffset) return std::string(kUnixPrefix);
      std::size_t n = std::min<std::size_t>(len - kUnixPathOffset, sizeof un->sun_path);
      if (un->sun_path[0] == '\0') {
        return absl::StrCat(av(kUnixPrefix), "@", absl::string_view(un->sun_path + 1, n - 1));
      }
      return absl::StrCat(av(kUnixPrefix),
                          absl::string_view(un->sun_path, ::strnlen(un->sun_path, n)));
    }
    default:
      return "?";
  }
}

std::string shown_addr(const sock_addr& a) { return quoted(format_addr(a.ss, a.len)); }

std::uint16_t port_of(const sockaddr_storage& ss) noexcept {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string unix_path(const sock_addr& a) {
  if (a.ss.ss_family != AF_UNIX || a.len <= kUnixPathOffset) return {};
  auto* un = reinterpret_cast<const sockaddr_un*>(&a.ss);
  if (un->sun_path[0] == '\0') return {};
  return std::string(un->sun_path, ::strnlen(un->sun_path, a.len - kUnixPathOffset));
}

absl::StatusOr<std::vector<sock_addr>> resolve(std::string_view addr, bool passive,
                                               name_lookup how) {
  if (addr.substr(0, kUnixPrefix.size()) == kUnixPrefix) return resolve_unix(addr);
  std::string_view host, port_text;
  if (!addr.empty() && addr.front() == '[') {
    std::size_t end = addr.find(']');
    if (end == std::string_view::npos) return bad_address(addr, "missing ']'");
    host = addr.substr(1, end - 1);
    if (end + 1 >= addr.size() || addr[end + 1] != ':') return bad_address(addr, "missing port");
    port_text = addr.substr(end + 2);
  } else {
    std::size_t colon = addr.rfind(':');
    if (colon == std::string_view::npos) return bad_address(addr, "missing port");
    host = addr.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return bad_address(addr, "too many colons (write IPv6 addresses as \"[::1]:80\")");
    }
    port_text = addr.substr(colon + 1);
  }
  const std::optional<std::uint16_t> port = parse_port(port_text);
  if (!port) return bad_address(addr, "invalid port (1 to 5 digits, at most 65535)");
  // The host goes to C functions as a C string: a NUL would cut it short.
  if (host.find('\0') != std::string_view::npos) return bad_address(addr, "NUL in host");
  std::vector<sock_addr> out;
  const std::uint16_t p = *port;
  std::string h(host);
  in_addr a4{};
  in6_addr a6{};
  if (h.empty()) {
    if (passive) {
      add_v6(out, in6addr_any, p);  // dual-stack (IPV6_V6ONLY off), as Go
      add_v4(out, in_addr{htonl(INADDR_ANY)}, p);
    } else {
      add_v4(out, in_addr{htonl(INADDR_LOOPBACK)}, p);
      add_v6(out, in6addr_loopback, p);
    }
  } else if (::inet_pton(AF_INET, h.c_str(), &a4) == 1) {
    add_v4(out, a4, p);
  } else if (::inet_pton(AF_INET6, h.c_str(), &a6) == 1) {
    add_v6(out, a6, p);
  } else if (h == "localhost") {
    add_v4(out, in_addr{htonl(INADDR_LOOPBACK)}, p);
    add_v6(out, in6addr_loopback, p);
  } else if (h.find('%') != std::string::npos) {
    if (absl::Status st = resolve_zoned(out, addr, h, p); !st.ok()) return st;
  } else {
    if (how == name_lookup::refused) return absl::UnavailableError(av(kLookupNeeded));
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG | (passive ? AI_PASSIVE : 0);
    addrinfo* res = nullptr;
    int rc = ::getaddrinfo(h.c_str(), nullptr, &hints, &res);
    if (rc != 0) {
      // The host quoted, as bad_address() quotes an address.
      return absl::NotFoundError(absl::StrCat("lookup ", quoted(h), ": ", ::gai_strerror(rc)));
    }
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      if (ai->ai_family == AF_INET) {
        add_v4(out, reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr, p);
      } else if (ai->ai_family == AF_INET6) {
        add_v6(out, *reinterpret_cast<const sockaddr_in6*>(ai->ai_addr), p);
      }
    }
    ::freeaddrinfo(res);
    if (out.empty()) {
      return absl::NotFoundError(absl::StrCat("lookup ", quoted(h), ": no addresses"));
    }
  }
  return out;
}

absl::StatusOr<std::string> socket_name(const std::atomic<int>& fd, io_slot& slot, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int err = with_open_fd(
      fd, slot,
      [&](int n) {
        const int rc = peer ? ::getpeername(n, reinterpret_cast<sockaddr*>(&ss), &len)
                            : ::getsockname(n, reinterpret_cast<sockaddr*>(&ss), &len);
        return rc != 0 ? errno : 0;
      },
      [] { return -1; });
  const char* what = peer ? "remote_address" : "local_address";
  if (err < 0) return closed_status(what, "network connection");
  if (err != 0) return errno_status(err, peer ? "getpeername" : "getsockname");
  return format_addr(ss, len);
}

}  // namespace mpg::detail
