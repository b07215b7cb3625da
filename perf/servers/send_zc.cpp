// perf/servers/send_zc.cpp: does IORING_OP_SEND_ZC pay for large writes?
//
//   send_zc [--bytes 2000000000] [--chunks 16384,65536,1048576] [--runs 3] [--procs 2]
//
// One TCP connection over loopback; a task writes --bytes in writes of each
// chunk size through mpg::io::submit, as a plain SEND and as a SEND_ZC
// (whose second CQE, the notification that the kernel let go of the
// buffer, is where io::submit resumes), while another task reads it all.
// The two kinds alternate within each round. Prints a RESULT line per run
// and, per chunk size, the medians and SEND_ZC's ratios to SEND: rate and
// process CPU per GB (both tasks, client and server, as they share it).
//
// Loopback is the only network this machine class has; there the kernel
// copies a zero-copy skb's pages when it delivers them to the receiving
// socket, so what this measures is SEND_ZC's own cost (pinning, the
// notification) on top of a copy, not a NIC's DMA. Over a real NIC the
// answer may differ for large writes.
#include <liburing.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <mpg/io.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include "server_args.hpp"

namespace {

double process_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct sample {
  double gb_per_s = 0;
  double cpu_s_per_gb = 0;
};

mpg::task<std::size_t> drain(mpg::net::tcp_stream& s, std::size_t total) {
  std::vector<char> in(1 << 20);
  std::size_t got = 0;
  while (got < total) {
    auto n = co_await s.read(std::span<char>(in));
    if (!n.ok() || *n == 0) break;
    got += *n;
  }
  co_return got;
}

// One run: `total` bytes (rounded up to whole chunks) in writes of `chunk`.
mpg::task<sample> run_once(bool zero_copy, std::size_t chunk, std::size_t total) {
  auto ln = mpg::net::listen("127.0.0.1:0");
  if (!ln.ok()) throw std::runtime_error(std::string(ln.status().message()));
  auto accepted = mpg::spawn(ln->accept());
  auto c = co_await mpg::net::dial("127.0.0.1:" + std::to_string(ln->port()));
  auto s = co_await accepted;
  if (!c.ok() || !s.ok()) throw std::runtime_error("connect failed");
  const std::size_t rounds = (total + chunk - 1) / chunk;
  const int fd = c->native_handle();
  const std::vector<char> buf(chunk, 'x');
  auto reader = mpg::spawn(drain(*s, rounds * chunk));
  const double cpu0 = process_cpu_s();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t off = 0; off < chunk;) {
      const char* p = buf.data() + off;
      const auto len = static_cast<unsigned>(chunk - off);
      int n;
      if (zero_copy) {
        n = co_await mpg::io::submit(
            [&](io_uring_sqe* sqe) { io_uring_prep_send_zc(sqe, fd, p, len, MSG_NOSIGNAL, 0); });
      } else {
        n = co_await mpg::io::submit(
            [&](io_uring_sqe* sqe) { io_uring_prep_send(sqe, fd, p, len, MSG_NOSIGNAL); });
      }
      if (n <= 0) throw std::runtime_error("send failed: " + std::to_string(n));
      off += static_cast<std::size_t>(n);
    }
  }
  const std::size_t got = co_await reader;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double gb = static_cast<double>(got) / 1e9;
  co_return sample{gb / secs, (process_cpu_s() - cpu0) / gb};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  const auto total = static_cast<std::size_t>(a.num("bytes", 2'000'000'000));
  const long runs = std::max(1L, a.num("runs", 3));
  std::vector<std::size_t> chunks;
  std::stringstream list(a.str("chunks", "16384,65536,1048576"));
  for (std::string item; std::getline(list, item, ',');) chunks.push_back(std::stoul(item));
  mpg::runtime rt({.procs = static_cast<unsigned>(a.num("procs", 2))});
  for (std::size_t chunk : chunks) {
    std::vector<double> rate[2], cpu[2];
    for (long r = 0; r < runs; ++r) {
      for (int zc = 0; zc < 2; ++zc) {
        const sample s = rt.block_on(run_once(zc == 1, chunk, total));
        std::printf("RESULT workload=send chunk=%zu impl=%s gb_per_s=%.3f cpu_s_per_gb=%.3f\n",
                    chunk, zc ? "send_zc" : "send", s.gb_per_s, s.cpu_s_per_gb);
        rate[zc].push_back(s.gb_per_s);
        cpu[zc].push_back(s.cpu_s_per_gb);
      }
    }
    std::printf("chunk %8zu: send %.2f GB/s %.3f CPU s/GB; send_zc %.2f GB/s %.3f CPU s/GB; "
                "send_zc/send: rate %.2fx, CPU %.2fx (medians of %ld)\n",
                chunk, median(rate[0]), median(cpu[0]), median(rate[1]), median(cpu[1]),
                median(rate[1]) / median(rate[0]), median(cpu[1]) / median(cpu[0]), runs);
    std::fflush(stdout);
  }
  return 0;
}
