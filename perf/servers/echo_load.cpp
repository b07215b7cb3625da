// perf/servers/echo_load.cpp: the one load client of the tcp_echo workload,
// used against every echo server (mpg, threads, Go), written on mpg.
//
//   echo_load --addr 127.0.0.1:9000 [--conns 64] [--size 64] [--seconds 5]
//             [--procs 2] [--impl mpg]
//
// Each connection is a task doing request/response ping-pong: write `size`
// bytes, read until `size` bytes came back, record the round trip. Prints
//   RESULT workload=tcp_echo impl=<impl> msgs_per_s=... p50_us=... p99_us=...
//   INFO msgs=<total> elapsed_s=<s> conns=<n> size=<bytes> errors=<n>
// Messages are counted from the moment every connection is established.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include "server_args.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

struct shared_state {
  std::atomic<bool> go{false};
  std::atomic<bool> stop{false};
  std::atomic<int> connected{0};
  std::atomic<int> errors{0};
};

mpg::task<std::vector<std::uint32_t>> run_conn(std::string addr, std::size_t size,
                                                shared_state* st) {
  std::vector<std::uint32_t> lat_ns;
  auto c = co_await mpg::net::dial(addr);
  st->connected.fetch_add(1);
  if (!c.ok()) {
    st->errors.fetch_add(1);
    std::fprintf(stderr, "echo_load: dial: %s\n", std::string(c.status().message()).c_str());
    co_return lat_ns;
  }
  while (!st->go.load(std::memory_order_acquire)) co_await mpg::yield();
  lat_ns.reserve(1 << 16);
  std::string msg(size, 'x');
  std::vector<char> buf(size);
  while (!st->stop.load(std::memory_order_relaxed)) {
    auto t0 = clock_type::now();
    if (!(co_await c->write(msg)).ok()) {
      st->errors.fetch_add(1);
      break;
    }
    std::size_t got = 0;
    while (got < size) {
      auto n = co_await c->read(std::span<char>(buf.data() + got, size - got));
      if (!n.ok() || *n == 0) {
        st->errors.fetch_add(1);
        co_return lat_ns;
      }
      got += *n;
    }
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0).count();
    lat_ns.push_back(static_cast<std::uint32_t>(std::min<long long>(ns, UINT32_MAX)));
  }
  co_return lat_ns;
}

mpg::task<int> run(std::string addr, int conns, std::size_t size, double seconds,
                   std::string impl) {
  shared_state st;
  std::vector<mpg::join_handle<std::vector<std::uint32_t>>> hs;
  for (int i = 0; i < conns; ++i) hs.push_back(mpg::spawn(run_conn(addr, size, &st)));
  while (st.connected.load() < conns) co_await mpg::yield();
  auto t0 = clock_type::now();
  st.go.store(true, std::memory_order_release);
  co_await mpg::sleep_for(std::chrono::duration<double>(seconds));
  st.stop.store(true);
  auto elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  std::vector<std::uint32_t> all;
  for (auto& h : hs) {
    auto v = co_await h;
    all.insert(all.end(), v.begin(), v.end());
  }
  if (all.empty()) {
    std::printf("RESULT workload=tcp_echo impl=%s msgs_per_s=0 p50_us=0 p99_us=0\n", impl.c_str());
    co_return 1;
  }
  auto pct = [&](double p) {
    std::size_t k = std::min(all.size() - 1, static_cast<std::size_t>(p * all.size()));
    std::nth_element(all.begin(), all.begin() + static_cast<long>(k), all.end());
    return all[k] / 1000.0;
  };
  double p50 = pct(0.50), p99 = pct(0.99);
  std::printf("RESULT workload=tcp_echo impl=%s msgs_per_s=%.0f p50_us=%.1f p99_us=%.1f\n",
              impl.c_str(), all.size() / elapsed, p50, p99);
  std::printf("INFO msgs=%zu elapsed_s=%.3f conns=%d size=%zu errors=%d\n", all.size(), elapsed,
              conns, size, st.errors.load());
  co_return st.errors.load() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  perf::args a(argc, argv);
  mpg::runtime rt({.procs = static_cast<unsigned>(a.num("procs", 0))});
  return rt.block_on(run(a.str("addr", "127.0.0.1:9000"), static_cast<int>(a.num("conns", 64)),
                         static_cast<std::size_t>(a.num("size", 64)),
                         std::stod(a.str("seconds", "5")), a.str("impl", "unknown")));
}
