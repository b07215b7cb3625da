// test/sched_stress_tests.cpp: no work lost or run twice while Ps change
// hands: blocking calls, Ms sleeping in their io_uring rings, completions
// from other threads, timers and stealing, all at once, at procs 1 and 2.
//
// Each round runs a fixed workload to completion and then checks it:
//   - kStreams task-to-task byte streams (AF_UNIX socket pairs): a sender
//     writes kFrames numbered frames, pausing between them with an
//     mpg::blocking call, a sleep, a yield or nothing; a receiver reads them.
//     Receivers spend most of their time parked in reads, so idle Ms sleep
//     in their rings holding their Ps, while returning blocking calls take
//     Ps back (the ownership handoffs under test);
//   - one stream fed by a plain thread (completions arriving from outside
//     the runtime at arbitrary moments);
//   - kWorkers spawned tasks that yield, sleep or block and are joined (with
//     procs = 2 the idle P steals them).
// Checks: every frame of every stream arrives exactly once and in order,
// every worker runs exactly once and its join returns its value. A lost G
// shows as a round that never ends: the watchdog fails the test with a task
// dump. A G run twice shows as a duplicate frame or count (or a sanitizer
// report). Rounds repeat over four runtime configurations (procs 1 and 2,
// with the default thread limit and with max_threads = procs + 1) until the
// time budget is spent.
//
// Duration: MPG_STRESS_SECONDS (a positive number), default 32 s in
// sanitizer builds (CI's TSan stage) and 6 s otherwise. Nothing sleeps to
// synchronise: rounds end by joins; the plain thread's pauses only pace it.
#include <doctest/doctest.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "mpg/detail/sync/cpu_relax.hpp"
#include "mpg/mpg.hpp"
#include "mpg/net.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

constexpr int kStreams = 4;
constexpr int kFrames = 48;       // per task-to-task stream and round
constexpr int kOuterFrames = 32;  // from the plain thread, per round
constexpr int kWorkers = 24;
constexpr std::size_t kFrameSize = 8;
constexpr std::chrono::milliseconds kRoundLimit = mpg_test::kSanitized ? 20s : 10s;

std::chrono::duration<double> stress_duration() {
  if (const char* env = std::getenv("MPG_STRESS_SECONDS")) {
    char* end = nullptr;
    const double v = std::strtod(env, &end);
    if (end != env && *end == '\0' && v > 0) return std::chrono::duration<double>(v);
    MESSAGE("ignoring MPG_STRESS_SECONDS=" << env << " (want a positive number)");
  }
  return std::chrono::duration<double>(mpg_test::kSanitized ? 32.0 : 6.0);
}

// A frame: the stream's id and the frame's number, 4 bytes each.
void put_frame(char* out, std::uint32_t stream, std::uint32_t seq) {
  std::memcpy(out, &stream, 4);
  std::memcpy(out + 4, &seq, 4);
}

// What one round saw; filled by the tasks, checked by the test thread after
// the round's block_on returned (which orders every write before the reads).
struct round_record {
  // delivered[s][i]: how many times frame i of stream s arrived (stream
  // kStreams is the plain thread's).
  std::array<std::array<int, kFrames>, kStreams + 1> delivered{};
  // Fault counts, bumped by any task (relaxed: read after the round).
  std::atomic<int> out_of_order{0};  // a frame arrived before one that precedes it
  std::atomic<int> foreign{0};       // a frame carried another stream's id or a bad number
  std::atomic<int> io_errors{0};
  std::array<std::atomic<int>, kWorkers> worker_runs{};
  int join_sum = 0;

  void reset() {
    for (auto& s : delivered) s.fill(0);
    out_of_order.store(0, std::memory_order_relaxed);
    foreign.store(0, std::memory_order_relaxed);
    io_errors.store(0, std::memory_order_relaxed);
    join_sum = 0;
    for (auto& w : worker_runs) w.store(0, std::memory_order_relaxed);
  }
};

// The blocking call of the workload: a short nanosleep on the M's own thread
// (what a slow syscall looks like to the scheduler).
void short_syscall(int us) { std::this_thread::sleep_for(std::chrono::microseconds(us)); }

mpg::task<void> sender(mpg::net::tcp_stream* s, std::uint32_t id, std::uint32_t round,
                       round_record* rec) {
  char frame[kFrameSize];
  for (std::uint32_t i = 0; i < kFrames; ++i) {
    put_frame(frame, id, i);
    absl::Status st = co_await s->write(std::string_view(frame, kFrameSize));
    if (!st.ok()) {
      rec->io_errors.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    switch ((i + id + round) % 5) {
      case 0: {
        const int us = static_cast<int>(10 + (i * 7 + round) % 40);
        co_await mpg::blocking([us] { short_syscall(us); });
        break;
      }
      case 1:
        co_await mpg::sleep_for(std::chrono::microseconds(20 + (i * 13 + id) % 120));
        break;
      case 2:
        co_await mpg::yield();
        break;
      default:
        break;
    }
  }
}

// Reads `frames` frames of stream `id`, recording each one.
mpg::task<void> receiver(mpg::net::tcp_stream* s, std::uint32_t id, int frames,
                         round_record* rec) {
  std::array<char, 4 * kFrameSize + 3> buf{};
  std::size_t have = 0;
  int next = 0;  // frames parsed so far
  while (next < frames) {
    auto n = co_await s->read(std::span<char>(buf.data() + have, buf.size() - have));
    if (!n.ok() || *n == 0) {
      rec->io_errors.fetch_add(1, std::memory_order_relaxed);
      co_return;
    }
    have += *n;
    std::size_t off = 0;
    for (; have - off >= kFrameSize; off += kFrameSize) {
      std::uint32_t sid, seq;
      std::memcpy(&sid, buf.data() + off, 4);
      std::memcpy(&seq, buf.data() + off + 4, 4);
      if (sid != id || seq >= static_cast<std::uint32_t>(frames)) {
        rec->foreign.fetch_add(1, std::memory_order_relaxed);
      } else {
        if (static_cast<int>(seq) != next)
          rec->out_of_order.fetch_add(1, std::memory_order_relaxed);
        ++rec->delivered[id][seq];
      }
      ++next;
    }
    std::memmove(buf.data(), buf.data() + off, have - off);
    have -= off;
  }
}

mpg::task<int> worker(int i, std::uint32_t round, round_record* rec) {
  switch ((i + static_cast<int>(round)) % 4) {
    case 0:
      co_await mpg::blocking([] { short_syscall(15); });
      break;
    case 1:
      co_await mpg::sleep_for(std::chrono::microseconds(30 + i));
      break;
    default:
      for (int k = 0; k < 1 + i % 3; ++k) co_await mpg::yield();
      break;
  }
  rec->worker_runs[i].fetch_add(1, std::memory_order_relaxed);
  co_return i * i;
}

// outer_writer: a plain thread that writes kOuterFrames frames of stream
// kStreams per round, pacing them with short sleeps, so completions land
// while the runtime's Ms run, block or sleep in their rings.
class outer_writer {
 public:
  explicit outer_writer(int fd) : fd_(fd), thread_([this] { run(); }) {}
  ~outer_writer() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void start_round(std::uint32_t round) {
    {
      std::lock_guard<std::mutex> l(mu_);
      round_ = round;
      pending_ = true;
    }
    cv_.notify_one();
  }
  int failed_writes() const { return failed_.load(std::memory_order_relaxed); }

 private:
  void run() {
    for (;;) {
      std::uint32_t round;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return pending_ || stop_; });
        if (stop_) return;
        pending_ = false;
        round = round_;
      }
      char frame[kFrameSize];
      for (std::uint32_t i = 0; i < kOuterFrames; ++i) {
        put_frame(frame, kStreams, i);
        std::size_t done = 0;
        while (done < kFrameSize) {
          const ssize_t n = ::write(fd_, frame + done, kFrameSize - done);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            failed_.fetch_add(1, std::memory_order_relaxed);
            break;
          }
          done += static_cast<std::size_t>(n);
        }
        if ((i + round) % 3 != 0)
          std::this_thread::sleep_for(std::chrono::microseconds(5 + (i * 31 + round) % 60));
      }
    }
  }

  int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint32_t round_ = 0;  // guarded by mu_
  bool pending_ = false;     // guarded by mu_
  bool stop_ = false;        // guarded by mu_
  std::atomic<int> failed_{0};
  std::thread thread_;
};

struct socket_pair {
  int fds[2] = {-1, -1};
  socket_pair() {
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) fds[0] = fds[1] = -1;
  }
  bool ok() const { return fds[0] >= 0; }
};

// The streams of one runtime configuration; they outlive its rounds.
struct plumbing {
  std::vector<mpg::net::tcp_stream> send_side, recv_side;  // [kStreams]
  mpg::net::tcp_stream outer_recv;
  int outer_send_fd = -1;  // owned; written by the outer_writer thread
  bool ok = true;

  plumbing() {
    for (int i = 0; i < kStreams; ++i) {
      socket_pair p;
      ok = ok && p.ok();
      send_side.emplace_back(p.fds[0]);
      recv_side.emplace_back(p.fds[1]);
    }
    socket_pair p;
    ok = ok && p.ok();
    outer_recv = mpg::net::tcp_stream(p.fds[0]);
    outer_send_fd = p.fds[1];
  }
  ~plumbing() {
    if (outer_send_fd >= 0) ::close(outer_send_fd);
  }
};

mpg::task<void> one_round(plumbing* pl, outer_writer* outer, std::uint32_t round,
                          round_record* rec) {
  std::vector<mpg::join_handle<void>> io;
  // Receivers first, so they are parked in reads when the frames come.
  for (int s = 0; s < kStreams; ++s)
    io.push_back(mpg::spawn(
        receiver(&pl->recv_side[s], static_cast<std::uint32_t>(s), kFrames, rec), "receiver"));
  io.push_back(
      mpg::spawn(receiver(&pl->outer_recv, kStreams, kOuterFrames, rec), "outer.receiver"));
  for (int s = 0; s < kStreams; ++s)
    io.push_back(mpg::spawn(sender(&pl->send_side[s], static_cast<std::uint32_t>(s), round, rec),
                            "sender"));
  outer->start_round(round);
  std::vector<mpg::join_handle<int>> workers;
  for (int i = 0; i < kWorkers; ++i) workers.push_back(mpg::spawn(worker(i, round, rec), "worker"));
  int sum = 0;
  for (auto& w : workers) sum += co_await w;
  rec->join_sum = sum;
  for (auto& h : io) co_await h;
}

// Checks a finished round; returns a description of the first fault, or "".
std::string fault_of(const round_record& rec) {
  if (rec.io_errors.load(std::memory_order_relaxed) != 0) return "an I/O error";
  if (rec.foreign.load(std::memory_order_relaxed) != 0)
    return "a frame with a wrong stream id or number";
  if (rec.out_of_order.load(std::memory_order_relaxed) != 0) return "frames out of order";
  for (int s = 0; s <= kStreams; ++s) {
    const int frames = s == kStreams ? kOuterFrames : kFrames;
    for (int i = 0; i < frames; ++i)
      if (rec.delivered[s][i] != 1)
        return "frame " + std::to_string(i) + " of stream " + std::to_string(s) + " arrived " +
               std::to_string(rec.delivered[s][i]) + " times";
  }
  int expect_sum = 0;
  for (int i = 0; i < kWorkers; ++i) {
    expect_sum += i * i;
    const int runs = rec.worker_runs[i].load(std::memory_order_relaxed);
    if (runs != 1) return "worker " + std::to_string(i) + " ran " + std::to_string(runs) + " times";
  }
  if (rec.join_sum != expect_sum) return "the workers' joins returned a wrong sum";
  return "";
}

struct phase_result {
  int rounds = 0;
  std::string fault;  // empty: every round checked out
  std::uint64_t steals = 0;
  std::uint64_t threads = 0;
};

phase_result run_phase(mpg::runtime_options opts, std::chrono::duration<double> budget,
                       const char* name) {
  phase_result res;
  plumbing pl;
  if (!pl.ok) {
    res.fault = "socketpair failed";
    return res;
  }
  auto rec = std::make_unique<round_record>();
  outer_writer outer(pl.outer_send_fd);
  mpg::runtime rt(opts);
  // A round takes milliseconds; one that has not ended after seconds is lost.
  mpg_test::watchdog dog(kRoundLimit, std::string("a round of stress phase ") + name, &rt);
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(budget);
  for (std::uint32_t round = 0; round < 1'000'000 && steady::now() < deadline; ++round) {
    rec->reset();
    rt.block_on(one_round(&pl, &outer, round, rec.get()));
    dog.pet();
    ++res.rounds;
    res.fault = fault_of(*rec);
    if (!res.fault.empty()) {
      res.fault = "round " + std::to_string(round) + ": " + res.fault;
      break;
    }
  }
  if (res.fault.empty() && outer.failed_writes() != 0)
    res.fault = "the plain thread's writes failed";
  const mpg::runtime_stats st = rt.stats();
  res.steals = st.steals;
  res.threads = st.threads;
  return res;
}

}  // namespace

TEST_CASE("stress: blocking calls, ring sleeps, completions and stealing lose and repeat no work") {
  const std::chrono::duration<double> total = stress_duration();
  struct config {
    const char* name;
    mpg::runtime_options opts;
  };
  const config configs[] = {
      {"procs 1", {.procs = 1}},
      {"procs 2", {.procs = 2}},
      {"procs 1, max_threads 2", {.procs = 1, .max_threads = 2}},
      {"procs 2, max_threads 3", {.procs = 2, .max_threads = 3}},
  };
  for (const config& c : configs) {
    INFO("config: " << std::string(c.name));
    const phase_result r = run_phase(c.opts, total / 4, c.name);
    MESSAGE(std::string(c.name) << ": " << r.rounds << " rounds, " << r.steals << " steals, "
                                << r.threads << " threads");
    CHECK_MESSAGE(r.fault.empty(), r.fault);
    CHECK(r.rounds >= 1);
  }
}
