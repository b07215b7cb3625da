// perf/servers/uring_floor_echo.cpp: the floor of the tcp_echo workload, a
// reference point and not a peer. No runtime, no tasks: one hand-written
// io_uring event loop per thread, with every trick a dedicated server can use
// and a runtime cannot always (one thread per ring forever, so SINGLE_ISSUER
// and DEFER_TASKRUN; multishot accept; multishot recv into a provided buffer
// ring, so a connection never re-arms its poll; the reply sent straight from
// the receive buffer). Whatever CPU per message this server spends is the
// kernel's TCP and io_uring cost, which every echo server on this machine
// pays; run_servers.py prints it beside mpg and Go so the targets can be read
// against it.
//
//   uring_floor_echo --port 9000 [--procs 2] [--host 127.0.0.1] [--http]
//       [--multishot 0|1] [--defer 0|1]
//
// --http answers every HTTP request head with the http_hello response (the
// floor of that workload); --multishot 0 and --defer 0 take away one trick
// each, to show what it is worth.
// Each of --procs threads owns a ring and a SO_REUSEPORT listener on the
// same port (the kernel spreads connections over them).
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "server_args.hpp"

namespace {

constexpr unsigned kEntries = 1024;
constexpr unsigned kBufCount = 4096;  // power of two
constexpr unsigned kBufSize = 2048;
constexpr int kGroup = 0;

// user_data: kind in the low 2 bits, fd (and for sends the buffer id) above.
enum kind : std::uint64_t { kAccept = 0, kRecv = 1, kSend = 2 };
std::uint64_t tag(kind k, int fd, unsigned bid = 0) {
  return k | (static_cast<std::uint64_t>(fd) << 2) | (static_cast<std::uint64_t>(bid) << 34);
}

[[noreturn]] void die(const char* what, int err) {
  std::fprintf(stderr, "uring_floor_echo: %s: %s\n", what, std::strerror(err));
  std::exit(1);
}

int listen_on(const std::string& host, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind", errno);
  if (::listen(fd, 4096) != 0) die("listen", errno);
  return fd;
}

struct loop {
  bool multishot = true;  // --multishot 0: one recv per message, poll first
  bool defer = true;      // --defer 0: COOP_TASKRUN | TASKRUN_FLAG, as mpg's rings
  const std::string* http = nullptr;  // --http: answer each request head with this
  io_uring ring{};
  io_uring_buf_ring* br = nullptr;
  char* bufs = nullptr;
  int lfd = -1;

  io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (s == nullptr) {
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  }
  void recycle(unsigned bid) {
    io_uring_buf_ring_add(br, bufs + static_cast<std::size_t>(bid) * kBufSize, kBufSize,
                          static_cast<unsigned short>(bid), io_uring_buf_ring_mask(kBufCount), 0);
    io_uring_buf_ring_advance(br, 1);
  }
  void arm_accept() {
    io_uring_sqe* s = sqe();
    io_uring_prep_multishot_accept(s, lfd, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, tag(kAccept, lfd));
  }
  void arm_recv(int fd) {
    io_uring_sqe* s = sqe();
    if (multishot) {
      io_uring_prep_recv_multishot(s, fd, nullptr, 0, 0);
    } else {
      io_uring_prep_recv(s, fd, nullptr, kBufSize, 0);
      s->ioprio |= IORING_RECVSEND_POLL_FIRST;
    }
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kGroup;
    io_uring_sqe_set_data64(s, tag(kRecv, fd));
  }

  void run(const std::string& host, int port) {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE | (defer ? IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
                                           : IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    p.cq_entries = kEntries * 8;
    if (int r = io_uring_queue_init_params(kEntries, &ring, &p); r < 0) die("io_uring", -r);
    std::size_t ring_bytes = kBufCount * sizeof(io_uring_buf);
    void* mem = ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                       -1, 0);
    if (mem == MAP_FAILED) die("mmap", errno);
    br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<std::uintptr_t>(br);
    reg.ring_entries = kBufCount;
    reg.bgid = kGroup;
    if (int r = io_uring_register_buf_ring(&ring, &reg, 0); r < 0) die("buf ring", -r);
    bufs = static_cast<char*>(std::aligned_alloc(4096, std::size_t{kBufCount} * kBufSize));
    for (unsigned i = 0; i < kBufCount; ++i) {
      io_uring_buf_ring_add(br, bufs + static_cast<std::size_t>(i) * kBufSize, kBufSize,
                            static_cast<unsigned short>(i), io_uring_buf_ring_mask(kBufCount),
                            static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br, kBufCount);
    lfd = listen_on(host, port);
    arm_accept();
    for (;;) {
      io_uring_submit_and_wait(&ring, 1);
      unsigned head, seen = 0;
      io_uring_cqe* cqe;
      io_uring_for_each_cqe(&ring, head, cqe) {
        ++seen;
        handle(cqe);
      }
      io_uring_cq_advance(&ring, seen);
    }
  }

  // A floor, not a server: a request head is assumed not to straddle two
  // receives (wrk's never do), and every request gets the same response.
  void reply_http(int fd, const char* data, int len) {
    std::string_view in(data, static_cast<std::size_t>(len));
    for (std::size_t at = in.find("\r\n\r\n"); at != std::string_view::npos;
         at = in.find("\r\n\r\n", at + 4)) {
      io_uring_sqe* s = sqe();
      io_uring_prep_send(s, fd, http->data(), http->size(), MSG_NOSIGNAL | MSG_WAITALL);
      io_uring_sqe_set_data64(s, tag(kSend, fd));
    }
  }

  void handle(io_uring_cqe* cqe) {
    std::uint64_t ud = cqe->user_data;
    int fd = static_cast<int>((ud >> 2) & 0xffffffffu);
    switch (static_cast<kind>(ud & 3)) {
      case kAccept:
        if (cqe->res >= 0) {
          int one = 1;
          ::setsockopt(cqe->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          arm_recv(cqe->res);
        }
        if (!(cqe->flags & IORING_CQE_F_MORE)) arm_accept();
        break;
      case kRecv: {
        if (cqe->res <= 0) {
          if (cqe->res == -ENOBUFS) {
            arm_recv(fd);  // every buffer is out in a send: try again
          } else if (!(cqe->flags & IORING_CQE_F_MORE)) {
            ::close(fd);
          }
          break;
        }
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (http != nullptr) {
          reply_http(fd, bufs + static_cast<std::size_t>(bid) * kBufSize, cqe->res);
          recycle(bid);
          if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
          break;
        }
        io_uring_sqe* s = sqe();
        io_uring_prep_send(s, fd, bufs + static_cast<std::size_t>(bid) * kBufSize,
                           static_cast<std::size_t>(cqe->res), MSG_NOSIGNAL | MSG_WAITALL);
        io_uring_sqe_set_data64(s, tag(kSend, fd, bid));
        if (!(cqe->flags & IORING_CQE_F_MORE)) arm_recv(fd);
        break;
      }
      case kSend:
        if (http == nullptr) recycle(static_cast<unsigned>(ud >> 34));
        break;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  int procs = static_cast<int>(a.num("procs", 0));
  if (procs <= 0) procs = static_cast<int>(std::thread::hardware_concurrency());
  std::string host = a.str("host", "127.0.0.1");
  int port = static_cast<int>(a.num("port", 9000));
  std::vector<loop> loops(static_cast<std::size_t>(procs));
  // As Go's net/http and mpg's http_server answer "Hello, World!".
  static const std::string response =
      "HTTP/1.1 200 OK\r\nDate: Sat, 28 Nov 2026 00:00:00 GMT\r\nContent-Length: 13\r\n"
      "Content-Type: text/plain; charset=utf-8\r\n\r\nHello, World!";
  for (auto& l : loops) {
    if (a.num("http", 0) != 0) l.http = &response;
    l.multishot = a.num("multishot", 1) != 0;
    l.defer = a.num("defer", 1) != 0;
  }
  std::vector<std::thread> threads;
  for (auto& l : loops) threads.emplace_back([&l, host, port] { l.run(host, port); });
  std::printf("listening on %s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  for (auto& t : threads) t.join();
}
