// perf/servers/threads_echo_server.cpp: the thread-per-connection baseline
// of the tcp_echo workload: blocking accept, a detached std::thread per
// connection doing blocking read/write. Same buffering as echo_server.cpp.
//
//   threads_echo_server --port 9000 [--host 127.0.0.1] [--procs N (ignored)]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>
#include <thread>

#include "server_args.hpp"

namespace {

constexpr std::size_t kSmall = 512;
constexpr std::size_t kLarge = 64 * 1024;

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void handle(int fd) {
  char small[kSmall];
  std::unique_ptr<char[]> large;
  char* buf = small;
  std::size_t cap = kSmall;
  for (;;) {
    ssize_t n = ::recv(fd, buf, cap, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || !write_all(fd, buf, static_cast<std::size_t>(n))) break;
    if (static_cast<std::size_t>(n) == cap && !large) {
      large.reset(new char[kLarge]);
      buf = large.get();
      cap = kLarge;
    }
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  int ln = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(ln, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(a.num("port", 9000)));
  ::inet_pton(AF_INET, a.str("host", "127.0.0.1").c_str(), &addr.sin_addr);
  if (::bind(ln, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(ln, 4096) != 0) {
    std::perror("threads_echo_server: listen");
    return 1;
  }
  std::printf("listening on port %ld\n", a.num("port", 9000));
  std::fflush(stdout);
  for (;;) {
    int fd = ::accept4(ln, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) ::usleep(5000);
      continue;
    }
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(handle, fd).detach();
  }
}
