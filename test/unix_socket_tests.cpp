// test/unix_socket_tests.cpp: Unix stream sockets through mpg::net (paths
// and the abstract namespace), the socket file's life, bad Unix addresses,
// errors that name a Unix address whole on one line, and where host names
// are looked up (dial under mpg::blocking; listen only off a P).
#include <doctest/doctest.h>
#include <netdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "temp_files.hpp"

namespace {

using mpg::task;
using mpg_test::temp_dir;
using mpg::net::tcp_stream;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_socket(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode);
}

// One echo round trip over a Unix address: the server echoes one message.
task<std::string> round_trip(std::string address, mpg::net::listener& ln, std::string msg) {
  auto server = mpg::spawn([](mpg::net::listener& l) -> task<bool> {
    auto c = co_await l.accept();
    if (!c.ok()) co_return false;
    char buf[256];
    auto n = co_await c->read(std::span<char>(buf));
    if (!n.ok()) co_return false;
    co_return (co_await c->write(std::string_view(buf, *n))).ok();
  }(ln));
  auto c = co_await mpg::net::dial(address);
  REQUIRE(c.ok());
  REQUIRE((co_await c->write(msg)).ok());
  std::string got;
  char buf[256];
  while (got.size() < msg.size()) {
    auto n = co_await c->read(std::span<char>(buf));
    REQUIRE(n.ok());
    if (*n == 0) break;
    got.append(buf, *n);
  }
  CHECK(co_await server);
  co_return got;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

// The host name resolves without the network (it is in /etc/hosts).
bool host_name_resolves(const std::string& name) {
  if (name.empty() || name == "localhost") return false;
  addrinfo* res = nullptr;
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICSERV;
  if (::getaddrinfo(name.c_str(), "1", &hints, &res) != 0) return false;
  ::freeaddrinfo(res);
  return true;
}

}  // namespace

TEST_CASE("a Unix socket on a path: echo, port 0, addresses, the file removed on close") {
  temp_dir dir;
  const std::string path = dir.path + "/echo.sock";
  const std::string address = "unix:" + path;
  mpg::runtime rt({.procs = 2});
  rt.block_on([&]() -> task<void> {
    auto ln = mpg::net::listen(address);
    REQUIRE(ln.ok());
    CHECK(ln->port() == 0);
    CHECK(ln->address() == address);
    CHECK(is_socket(path));
    const std::string msg = "hello over a unix socket";
    std::string echoed = co_await round_trip(address, *ln, msg);
    CHECK(echoed == msg);

    // The streams report Unix addresses: the listener's on the server side,
    // an unnamed one for the dialer.
    auto accepting = mpg::spawn(ln->accept());
    auto c = co_await mpg::net::dial(address);
    REQUIRE(c.ok());
    auto s = co_await accepting;
    REQUIRE(s.ok());
    CHECK(c->remote_address().value_or("") == address);
    CHECK(s->local_address().value_or("") == address);
    CHECK(s->remote_address().value_or("?") == "unix:");

    // A moved-from listener does not remove the file; the one it moved to does.
    mpg::net::listener moved = std::move(*ln);
    ln->close();
    CHECK(exists(path));
    moved.close();
    CHECK(!exists(path));
    moved.close();  // idempotent
  }());
}

TEST_CASE("a Unix socket in the abstract namespace has no file") {
  const std::string address = "unix:@mpg-test-" + std::to_string(::getpid());
  mpg::runtime rt({.procs = 2});
  rt.block_on([&]() -> task<void> {
    auto ln = mpg::net::listen(address);
    REQUIRE(ln.ok());
    CHECK(ln->port() == 0);
    CHECK(ln->address() == address);
    const std::string msg = "abstract";
    std::string echoed = co_await round_trip(address, *ln, msg);
    CHECK(echoed == msg);
    // The name is taken while the listener lives, and free after close.
    auto again = mpg::net::listen(address);
    CHECK(!again.ok());
    ln->close();
    auto after = mpg::net::listen(address);
    CHECK(after.ok());
  }());
}

TEST_CASE("listen on an existing path fails; dial to a missing path fails") {
  temp_dir dir;
  const std::string path = dir.path + "/taken.sock";
  mpg::runtime rt({.procs = 1});
  rt.block_on([&]() -> task<void> {
    auto ln = mpg::net::listen("unix:" + path);
    REQUIRE(ln.ok());
    auto second = mpg::net::listen("unix:" + path);
    CHECK(!second.ok());
    CHECK(is_socket(path));  // the failed listen did not remove the first one's file
    const std::string missing_path = "unix:" + dir.path + "/missing.sock";
    auto missing = co_await mpg::net::dial(missing_path);
    CHECK(missing.status().code() == absl::StatusCode::kNotFound);
  }());
}

namespace {
// address_named(): "" if st's message is "<op> \"<address, escaped>\": ..."
// on one line that a C string holds whole (an abstract name's NUL, a line
// break, a quote escaped by absl::CHexEscape, so the address shows whole),
// else the message.
std::string address_named(const absl::Status& st, const char* op,
                          const std::string& address) {
  const std::string msg(st.message());
  const std::string head = absl::StrCat(op, " \"", absl::CHexEscape(address), "\": ");
  const bool ok = msg.find_first_of(std::string("\n\r\0", 3)) == std::string::npos &&
                  msg.starts_with(head) && msg.size() > head.size();
  return ok ? "" : absl::StrCat("message (escaped): ", absl::CHexEscape(msg));
}
}  // namespace

TEST_CASE("an error names its Unix address whole, escaped, on one line") {
  temp_dir dir;
  // Abstract names are bytes: this one holds a line break, a quote and a
  // NUL (and its sockaddr begins with a NUL); the path, a line break.
  const std::string abstract =
      absl::StrCat(std::string("unix:@mpg\n\"test\"\0", 17), ::getpid());
  const std::string path = "unix:" + dir.path + "/a\nb.sock";
  const std::string missing = "unix:" + dir.path + "/no\nsuch.sock";
  mpg::runtime rt({.procs = 1});
  rt.block_on([&]() -> task<void> {
    for (const std::string* a : {&abstract, &path}) {
      auto ln = mpg::net::listen(*a);
      REQUIRE(ln.ok());
      auto again = mpg::net::listen(*a);
      CHECK(mpg::errno_of(again.status()) == EADDRINUSE);
      CHECK(address_named(again.status(), "listen", *a) == "");
      // UDP takes no Unix address: refused, naming it.
      auto u = mpg::net::listen_udp(*a);
      CHECK(u.status().code() == absl::StatusCode::kInvalidArgument);
      CHECK(address_named(u.status(), "address", *a) == "");
    }
    const std::string refused = abstract + "x";  // no one listens
    auto c = co_await mpg::net::dial(refused);
    CHECK(mpg::errno_of(c.status()) == ECONNREFUSED);
    CHECK(address_named(c.status(), "dial", refused) == "");
    auto m = co_await mpg::net::dial(missing);
    CHECK(mpg::errno_of(m.status()) == ENOENT);
    CHECK(address_named(m.status(), "dial", missing) == "");
    auto du = co_await mpg::net::dial_udp(refused);
    CHECK(du.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(address_named(du.status(), "address", refused) == "");
  }());
}

TEST_CASE("malformed Unix addresses are kInvalidArgument") {
  const std::string too_long = "unix:/" + std::string(200, 'x');
  CHECK(mpg::net::listen("unix:").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mpg::net::listen(too_long).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(mpg::net::listen("unix:@" + std::string(120, 'y')).status().code() ==
        absl::StatusCode::kInvalidArgument);
  mpg::runtime rt({.procs = 1});
  auto st = rt.block_on([&]() -> task<absl::Status> {
    co_return (co_await mpg::net::dial(too_long)).status();
  }());
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("host names: dial looks up under blocking, listen only off a P") {
  const std::string name = host_name();
  if (!host_name_resolves(name)) {
    MESSAGE("the host name does not resolve locally; skipped");
    return;
  }
  // From a plain thread (no P) listen may look the name up.
  auto plain = mpg::net::listen(name + ":0");
  REQUIRE(plain.ok());
  const std::uint16_t port = plain->port();
  mpg::runtime rt({.procs = 1});
  rt.block_on([&]() -> task<void> {
    // Inside a task a name would block the P: refused without a lookup.
    auto in_task = mpg::net::listen(name + ":0");
    CHECK(in_task.status().code() == absl::StatusCode::kInvalidArgument);
    // dial resolves it under mpg::blocking.
    auto accepting = mpg::spawn(plain->accept());
    const std::string target = name + ":" + std::to_string(port);
    auto c = co_await mpg::net::dial(target);
    CHECK(c.ok());
    auto s = co_await accepting;
    CHECK(s.ok());
  }());
}
