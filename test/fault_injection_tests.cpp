// test/fault_injection_tests.cpp: the I/O layer under injected faults
// (runtime_options::io_faults; lib/io/fault_injector.hpp). A TCP echo of
// checksummed frames over many connections, under each fault kind and all
// of them at once: no byte lost or corrupted (the server checks each frame's
// checksum, the client compares the echo with what it sent), no hang (a
// watchdog), no descriptor or task left at the end; -ECONNRESET reads as the
// error it is and the client redoes its exchange on a new connection. Also
// files under faults, io::submit left alone, and the option's parsing.
#include <dirent.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <mpg/fs.hpp>
#include <mpg/io.hpp>
#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "io/fault_injector.hpp"
#include "temp_files.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

namespace {

using namespace std::chrono_literals;
using mpg::task;
using mpg_test::temp_dir;
using mpg::net::tcp_stream;
using clock_type = std::chrono::steady_clock;

int open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

std::uint64_t fnv(const char* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
  return h;
}

std::uint32_t next_rand(std::uint32_t& x) {
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return x;
}

// A frame: u32 length, payload, u64 FNV-1a of the payload.
void append_frame(std::string& out, std::size_t len, std::uint32_t& seed) {
  std::string payload(len, '\0');
  for (auto& c : payload) c = static_cast<char>(next_rand(seed));
  const std::uint32_t n = static_cast<std::uint32_t>(len);
  const std::uint64_t sum = fnv(payload.data(), payload.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out.append(payload);
  out.append(reinterpret_cast<const char*>(&sum), sizeof sum);
}

// The bytes one client sends: small frames around one large one.
std::string client_stream(unsigned id, std::size_t large) {
  std::uint32_t seed = id * 2654435761u + 1;
  std::string s;
  for (int i = 0; i < 8; ++i) append_frame(s, 1 + next_rand(seed) % 200, seed);
  append_frame(s, large, seed);
  for (int i = 0; i < 8; ++i) append_frame(s, 1 + next_rand(seed) % 3000, seed);
  return s;
}

struct counters {
  std::atomic<int> frames_ok{0};
  std::atomic<int> frames_bad{0};
  std::atomic<int> handlers{0};
  std::atomic<int> resets_seen{0};   // statuses reading "Connection reset" (kUnavailable)
  std::atomic<int> other_errors{0};  // statuses of any other kind
  std::atomic<int> retries{0};
};

void note_error(counters& c, const absl::Status& st) {
  if (st.code() == absl::StatusCode::kUnavailable &&
      std::string(st.message()).find("reset") != std::string::npos) {
    c.resets_seen.fetch_add(1);
  } else {
    c.other_errors.fetch_add(1);
  }
}

// The server side of one connection: echoes every byte, and checks every
// frame as it passes.
task<void> echo_frames(tcp_stream s, std::shared_ptr<counters> c) {
  std::vector<char> buf(16 * 1024);
  std::string pending;  // bytes of a frame not yet complete
  for (;;) {
    auto n = co_await s.read(std::span<char>(buf));
    if (!n.ok()) {
      note_error(*c, n.status());
      break;
    }
    if (*n == 0) break;
    pending.append(buf.data(), *n);
    for (;;) {
      std::uint32_t len = 0;
      if (pending.size() < sizeof len) break;
      std::memcpy(&len, pending.data(), sizeof len);
      const std::size_t whole = sizeof len + len + sizeof(std::uint64_t);
      if (pending.size() < whole) break;
      std::uint64_t sum = 0;
      std::memcpy(&sum, pending.data() + sizeof len + len, sizeof sum);
      (fnv(pending.data() + sizeof len, len) == sum ? c->frames_ok : c->frames_bad).fetch_add(1);
      pending.erase(0, whole);
    }
    absl::Status w = co_await s.write(std::string_view(buf.data(), *n));
    if (!w.ok()) {
      note_error(*c, w);
      break;
    }
  }
  c->handlers.fetch_sub(1);
}

task<void> accept_loop(std::shared_ptr<mpg::net::listener> ln, std::shared_ptr<counters> c) {
  for (;;) {
    auto s = co_await ln->accept();
    if (!s.ok()) co_return;  // closed at the end of the test
    c->handlers.fetch_add(1);
    mpg::go(echo_frames(std::move(*s), c));
  }
}

task<absl::Status> send_all(tcp_stream* s, const std::string* data) {
  absl::Status st = co_await s->write(*data);
  if (st.ok()) {
    st = s->shutdown();
  } else {
    // A broken connection: the reader gets its EOF at once (no echo is coming).
    (void)s->shutdown(mpg::net::shutdown_how::both);
  }
  co_return st;
}

// One exchange: send the stream, read the echo to EOF. OK only if the echo
// is exactly what was sent; the bytes that did come back must be a prefix.
task<absl::Status> exchange(std::uint16_t port, const std::string& sent, counters& c) {
  auto conn = co_await mpg::net::dial("127.0.0.1:" + std::to_string(port));
  if (!conn.ok()) co_return conn.status();
  auto writer = mpg::spawn(send_all(&*conn, &sent));
  std::vector<char> buf(32 * 1024);
  std::size_t got = 0;
  absl::Status read_status;
  for (;;) {
    auto n = co_await conn->read(std::span<char>(buf));
    if (!n.ok()) {
      read_status = n.status();
      break;
    }
    if (*n == 0) break;
    if (got + *n > sent.size() || std::memcmp(buf.data(), sent.data() + got, *n) != 0) {
      c.frames_bad.fetch_add(1000000);  // corrupted echo: fails the test below
      read_status = absl::DataLossError("echo differs from what was sent");
      break;
    }
    got += *n;
  }
  if (!read_status.ok()) conn->close();  // ends a writer blocked on a dead connection
  absl::Status w = co_await writer;
  if (!read_status.ok()) co_return read_status;
  if (!w.ok()) co_return w;
  if (got != sent.size())
    co_return absl::UnavailableError("echo ended early (the peer's connection was reset)");
  co_return absl::OkStatus();
}

// A client: redoes its exchange on a new connection after an injected (or
// resulting) reset, a bounded number of times.
task<bool> client(std::uint16_t port, unsigned id, std::size_t large, std::shared_ptr<counters> c,
                  mpg_test::watchdog* wd) {
  const std::string sent = client_stream(id, large);
  for (int attempt = 0; attempt < 200; ++attempt) {
    absl::Status st = co_await exchange(port, sent, *c);
    wd->pet();
    if (st.ok()) co_return true;
    if (st.code() == absl::StatusCode::kDataLoss) co_return false;
    note_error(*c, st);
    c->retries.fetch_add(1);
  }
  co_return false;
}

struct echo_result {
  bool clients_ok = false;
  int frames_ok = 0, frames_bad = 0, resets_seen = 0, other_errors = 0, retries = 0;
  mpg::runtime_stats stats;
};

echo_result run_echo(const char* faults, int conns, std::size_t large) {
  echo_result out;
  const int fds_before = open_fds();
  {
    mpg::runtime rt({.procs = 2, .io_faults = faults});
    mpg_test::watchdog wd(20s, std::string("echo under ") + faults, &rt);
    auto c = std::make_shared<counters>();
    out.clients_ok = rt.block_on([&]() -> task<bool> {
      auto l = mpg::net::listen("127.0.0.1:0");
      REQUIRE(l.ok());
      auto ln = std::make_shared<mpg::net::listener>(std::move(*l));
      auto server = mpg::spawn(accept_loop(ln, c));
      std::vector<mpg::join_handle<bool>> clients;
      for (int i = 0; i < conns; ++i) {
        clients.push_back(mpg::spawn(client(ln->port(), static_cast<unsigned>(i), large, c, &wd)));
      }
      bool all = true;
      for (auto& h : clients) all = (co_await h) && all;
      ln->close();
      co_await server;
      // Every connection's handler has seen its EOF (or error) and closed.
      const auto give_up = clock_type::now() + 10s;
      while (c->handlers.load() != 0 && clock_type::now() < give_up) co_await mpg::yield();
      CHECK(c->handlers.load() == 0);
      co_return all;
    }());
    // No task left behind: the count settles at 0 once block_on's own
    // tasks have been counted as completed (bounded).
    const auto give_up = clock_type::now() + 5s;
    while (rt.stats().live != 0 && clock_type::now() < give_up) std::this_thread::yield();
    out.stats = rt.stats();
    CHECK(out.stats.live == 0);
    out.frames_ok = c->frames_ok.load();
    out.frames_bad = c->frames_bad.load();
    out.resets_seen = c->resets_seen.load();
    out.other_errors = c->other_errors.load();
    out.retries = c->retries.load();
  }
  CHECK(open_fds() == fds_before);  // no descriptor left open
  std::printf(
      "fault_injection_tests: %s: %llu faults injected and survived (eintr %llu, eagain %llu, "
      "short %llu, reset %llu, overflow %llu); %d frames checked, %d resets seen, %d retries\n",
      faults, static_cast<unsigned long long>(out.stats.io_faults_injected),
      static_cast<unsigned long long>(out.stats.io_faults_eintr),
      static_cast<unsigned long long>(out.stats.io_faults_eagain),
      static_cast<unsigned long long>(out.stats.io_faults_short),
      static_cast<unsigned long long>(out.stats.io_faults_reset),
      static_cast<unsigned long long>(out.stats.io_faults_overflow), out.frames_ok, out.resets_seen,
      out.retries);
  return out;
}

constexpr int kConns = mpg_test::kSanitized ? 16 : 48;
constexpr std::size_t kLarge = mpg_test::kSanitized ? 96 * 1024 : 256 * 1024;
constexpr int kFramesPerClient = 17;
// Rates that give every kind dozens of faults per run (so "> 0" cannot miss
// by chance) while a client under resets still finishes in a few attempts.
constexpr const char* kResetSpec =
    mpg_test::kSanitized ? "rate=0.03,kinds=reset,seed=5" : "rate=0.02,kinds=reset,seed=5";
constexpr const char* kAllSpec =
    mpg_test::kSanitized ? "rate=0.1,kinds=eintr+eagain+short+reset+overflow,seed=42"
                         : "rate=0.05,kinds=eintr+eagain+short+reset+overflow,seed=42";

// Faults the I/O layer hides entirely: every frame arrives once, intact.
void check_hidden(const char* faults) {
  echo_result r = run_echo(faults, kConns, kLarge);
  CHECK(r.clients_ok);
  CHECK(r.frames_bad == 0);
  CHECK(r.frames_ok == kConns * kFramesPerClient);
  CHECK(r.retries == 0);
  CHECK(r.resets_seen + r.other_errors == 0);
  CHECK(r.stats.io_faults_injected > 0);
}

}  // namespace

TEST_CASE("echo under -EINTR: every byte arrives once, intact") {
  check_hidden("rate=0.1,kinds=eintr,seed=1");
}

TEST_CASE("echo under -EAGAIN: every byte arrives once, intact") {
  check_hidden("rate=0.1,kinds=eagain,seed=2");
}

TEST_CASE("echo under short reads and writes: every byte arrives once, intact") {
  echo_result r = run_echo("rate=0.2,kinds=short,seed=3", kConns, kLarge);
  CHECK(r.clients_ok);
  CHECK(r.frames_bad == 0);
  CHECK(r.frames_ok == kConns * kFramesPerClient);
  CHECK(r.retries == 0);
  CHECK(r.stats.io_faults_short > 0);
}

TEST_CASE("echo under CQ overflow: every completion comes back") {
  echo_result r = run_echo("rate=0.05,kinds=overflow,seed=4", kConns, kLarge);
  CHECK(r.clients_ok);
  CHECK(r.frames_bad == 0);
  CHECK(r.frames_ok == kConns * kFramesPerClient);
  CHECK(r.retries == 0);
  CHECK(r.stats.io_faults_overflow > 0);
}

TEST_CASE("echo under -ECONNRESET: a reset reads as kUnavailable, the client redoes its exchange") {
  echo_result r = run_echo(kResetSpec, kConns, kLarge);
  CHECK(r.clients_ok);
  CHECK(r.frames_bad == 0);
  CHECK(r.frames_ok >= kConns * kFramesPerClient);
  CHECK(r.stats.io_faults_reset > 0);
  CHECK(r.resets_seen > 0);
  CHECK(r.retries > 0);
}

TEST_CASE("echo under every fault kind at once") {
  echo_result r = run_echo(kAllSpec, kConns, kLarge);
  CHECK(r.clients_ok);
  CHECK(r.frames_bad == 0);
  CHECK(r.frames_ok >= kConns * kFramesPerClient);
  CHECK(r.stats.io_faults_eintr > 0);
  CHECK(r.stats.io_faults_eagain > 0);
  CHECK(r.stats.io_faults_short > 0);
  CHECK(r.stats.io_faults_overflow > 0);
}

namespace {

task<bool> file_round_trip(std::string path, unsigned id) {
  std::uint32_t seed = id + 7;
  std::string data(1 << 20, '\0');
  for (auto& ch : data) ch = static_cast<char>(next_rand(seed));
  auto f = co_await mpg::fs::open(path, O_RDWR | O_CREAT | O_TRUNC);
  REQUIRE(f.ok());
  // Write in pieces of varying size at their offsets, then fsync.
  std::size_t off = 0;
  while (off < data.size()) {
    const std::size_t n = std::min<std::size_t>(1 + next_rand(seed) % 100000, data.size() - off);
    absl::Status st = co_await f->write_at(std::string_view(data).substr(off, n), off);
    REQUIRE(st.ok());
    off += n;
  }
  REQUIRE((co_await f->fsync()).ok());
  auto info = co_await f->stat();
  REQUIRE(info.ok());
  CHECK(info->size == data.size());
  // Read back in pieces of varying size.
  std::string back(data.size(), '\0');
  off = 0;
  while (off < back.size()) {
    const std::size_t n = std::min<std::size_t>(1 + next_rand(seed) % 100000, back.size() - off);
    auto got = co_await f->read_at(std::span<char>(back.data() + off, n), off);
    REQUIRE(got.ok());
    REQUIRE(*got == n);  // read_at fills its buffer before end of file
    off += n;
  }
  // At end of file: 0, not an error.
  char tail[16];
  auto end = co_await f->read_at(std::span<char>(tail), data.size());
  REQUIRE(end.ok());
  CHECK(*end == 0);
  REQUIRE(f->close().ok());
  co_return back == data;
}

}  // namespace

TEST_CASE("files under -EINTR, -EAGAIN, short counts and CQ overflow read back what was written") {
  temp_dir dir;
  const int fds_before = open_fds();
  mpg::runtime_stats stats;
  {
    mpg::runtime rt({.procs = 2, .io_faults = "rate=0.2,kinds=eintr+eagain+short+overflow,seed=9"});
    mpg_test::watchdog wd(20s, "files under faults", &rt);
    bool ok = rt.block_on([&]() -> task<bool> {
      std::vector<mpg::join_handle<bool>> hs;
      for (unsigned i = 0; i < 4; ++i) {
        hs.push_back(mpg::spawn(file_round_trip(dir.path + "/f" + std::to_string(i), i)));
      }
      bool all = true;
      for (auto& h : hs) all = (co_await h) && all;
      co_return all;
    }());
    CHECK(ok);
    stats = rt.stats();
  }
  CHECK(open_fds() == fds_before);
  CHECK(stats.io_faults_eintr > 0);
  CHECK(stats.io_faults_eagain > 0);
  CHECK(stats.io_faults_short > 0);
  CHECK(stats.io_faults_overflow > 0);
  std::printf("fault_injection_tests: files: %llu faults injected and survived\n",
              static_cast<unsigned long long>(stats.io_faults_injected));
}

TEST_CASE("io::submit is never faulted: its result is the kernel's") {
  mpg::runtime rt({.procs = 1, .io_faults = "rate=1,kinds=all,seed=11"});
  bool ok = rt.block_on([]() -> task<bool> {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    bool all = true;
    char out[64], in[64];
    std::memset(out, 'x', sizeof out);
    for (int i = 0; i < 200; ++i) {
      int w = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
        io_uring_prep_write(sqe, p[1], out, sizeof out, 0);
      });
      int r = co_await mpg::io::submit([&](io_uring_sqe* sqe) {
        io_uring_prep_read(sqe, p[0], in, sizeof in, 0);
      });
      all = all && w == static_cast<int>(sizeof out) && r == static_cast<int>(sizeof in);
    }
    ::close(p[0]);
    ::close(p[1]);
    co_return all;
  }());
  CHECK(ok);
  CHECK(rt.stats().io_faults_injected == 0);
}

TEST_CASE("the fault spec parses like GODEBUG; bad pairs are reported and ignored") {
  using mpg::detail::io_fault;
  auto bit = [](io_fault f) { return 1u << static_cast<unsigned>(f); };
  std::string errors;
  auto c = mpg::detail::parse_faults("rate=0.05,kinds=eintr+short,seed=42", &errors);
  CHECK(errors.empty());
  CHECK(c.rate == doctest::Approx(0.05));
  CHECK(c.kinds == (bit(io_fault::eintr) | bit(io_fault::short_io)));
  CHECK(c.seed == 42);
  CHECK(c.on());

  errors.clear();
  c = mpg::detail::parse_faults("rate=2,kinds=eintr+bogus,seed=-1,color=red,rate=0.5", &errors);
  CHECK(c.rate == doctest::Approx(0.5));  // the bad rate is ignored, the later good one kept
  // default: all, which leaves out nomultishot (a missing kernel feature),
  // nosqe (a refused arm, which the reader sees), nopause (not at rate) and
  // misspause (drains the ring)
  const unsigned all = ((1u << mpg::detail::kFaultKinds) - 1) & ~bit(io_fault::no_multishot) &
                       ~bit(io_fault::no_sqe) & ~bit(io_fault::no_pause) &
                       ~bit(io_fault::miss_pause);
  CHECK(c.kinds == all);
  CHECK(c.seed == 0);
  CHECK(errors.find("\"rate=2\"") != std::string::npos);
  CHECK(errors.find("\"kinds=eintr+bogus\"") != std::string::npos);
  CHECK(errors.find("\"seed=-1\"") != std::string::npos);
  CHECK(errors.find("\"color=red\"") != std::string::npos);

  errors.clear();
  c = mpg::detail::parse_faults("rate=1,kinds=nomultishot", &errors);
  CHECK(errors.empty());
  CHECK(c.kinds == bit(io_fault::no_multishot));
  CHECK(mpg::detail::parse_faults("rate=1,kinds=all", &errors).kinds == all);
  CHECK(mpg::detail::parse_faults("rate=1,kinds=nosqe", &errors).kinds == bit(io_fault::no_sqe));
  CHECK(mpg::detail::parse_faults("rate=1,kinds=nopause", &errors).kinds ==
        bit(io_fault::no_pause));
  CHECK(mpg::detail::parse_faults("rate=1,kinds=misspause", &errors).kinds ==
        bit(io_fault::miss_pause));
  CHECK(errors.empty());

  errors.clear();
  CHECK(!mpg::detail::parse_faults("", &errors).on());
  CHECK(!mpg::detail::parse_faults("kinds=all", &errors).on());  // no rate: off
  CHECK(errors.empty());

  // A runtime given a bad spec starts, and injects nothing.
  mpg::runtime rt({.procs = 1, .io_faults = "rate=lots"});
  CHECK(rt.stats().io_faults_injected == 0);
}
