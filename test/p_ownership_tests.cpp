// test/p_ownership_tests.cpp: one owner per P, and no G stranded next to an
// idle P, around mpg::blocking.
//
// Each case sets the handoff of mpg::blocking (its M giving the P away on
// entry and taking one back on exit) against something that needs the P:
//   - an M that sleeps in the P's io_uring ring while holding it, woken by a
//     socket completion just as a returning blocking call takes that P over
//     (two Ms must never both push to, or pop from, the P's run queue);
//   - with procs = 1 and max_threads = 2, a G queued globally by a returning
//     blocking call just as the other M enters one (an M that is about to go
//     idle must still be found for the P that frees up);
//   - with every thread allowed in use, a P with a pending timer handed off
//     by a blocking call while the other M is busy: the sleep must still fire;
//   - with every thread allowed in use, a P handed off by a blocking call with
//     a G in its runnext slot while the other M sleeps in its ring holding its
//     own P: that M must take the runnext G from the unheld P.
// The first three are races, hit by timing (spinning to deadlines a few
// microseconds apart, many rounds); on a broken scheduler TSan reports the
// first case and the others strand a task, which the bounded waits turn
// into a failure. The last is no race: it builds its scene step by step and
// checks each step (runtime_stats, the P's queue) before the bounded wait.
// Nothing sleeps to synchronise: waits spin (then yield the CPU) on flags and
// give up after a bound, and a watchdog ends the process if a round hangs.
#include <doctest/doctest.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "mpg/detail/sync/cpu_relax.hpp"
#include "mpg/mpg.hpp"
#include "mpg/net.hpp"
#include "sched/scheduler.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// Sanitizer builds run every step several times slower, so bounds that must
// not trigger on a healthy but loaded machine grow with them.
constexpr auto kGiveUp = mpg_test::kSanitized ? 10s : 5s;
constexpr std::chrono::milliseconds kWatchdog = mpg_test::kSanitized ? 60s : 40s;
constexpr std::chrono::milliseconds kRoundWatchdog = mpg_test::kSanitized ? 10s : 5s;

void spin_until(steady::time_point t) {
  while (steady::now() < t) mpg::detail::cpu_relax();
}

// spin_for_flag(): until f reads true (spinning, then yielding the CPU), or
// kGiveUp passes; returns f's last value. `abandon`, when set, ends the wait
// early (the other side of the round has failed already).
bool spin_for_flag(const std::atomic<bool>& f, const std::atomic<bool>* abandon = nullptr) {
  const auto give_up = steady::now() + kGiveUp;
  for (unsigned i = 0;; ++i) {
    // Acquire: pairs with the setter's release store; what it wrote before
    // is visible to the caller after a true return.
    if (f.load(std::memory_order_acquire)) return true;
    if (abandon != nullptr && abandon->load(std::memory_order_relaxed)) return false;
    if (i < 4096) {
      mpg::detail::cpu_relax();
    } else {
      if (steady::now() > give_up) return false;
      std::this_thread::yield();
    }
  }
}

// ---------------------------------------------------------------------------
// A completion in the ring of a sleeping M while a blocking call takes its P.

// delayed_writer: a plain thread that writes one byte to its socket at the
// time it is asked to, spinning until then (a sleep would be too coarse).
class delayed_writer {
 public:
  explicit delayed_writer(int fd) : fd_(fd), thread_([this] { run(); }) {}
  ~delayed_writer() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

  void write_at(steady::time_point when, char byte) {
    {
      std::lock_guard<std::mutex> l(mu_);
      when_ = when;
      byte_ = byte;
      pending_ = true;
    }
    cv_.notify_one();
  }
  int failed_writes() const { return failed_.load(std::memory_order_relaxed); }

 private:
  void run() {
    for (;;) {
      steady::time_point when;
      char byte;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [this] { return pending_ || stop_; });
        if (stop_) return;
        pending_ = false;
        when = when_;
        byte = byte_;
      }
      spin_until(when);
      ssize_t n;
      while ((n = ::write(fd_, &byte, 1)) < 0 && errno == EINTR) {
      }
      if (n != 1) failed_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  int fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  steady::time_point when_;  // guarded by mu_
  char byte_ = 0;            // guarded by mu_
  bool pending_ = false;     // guarded by mu_
  bool stop_ = false;        // guarded by mu_
  std::atomic<int> failed_{0};
  std::thread thread_;
};

mpg::task<int> read_one_byte(mpg::net::tcp_stream* s) {
  char b = 0;
  auto n = co_await s->read(std::span<char>(&b, 1));
  if (!n.ok() || *n != 1) co_return -1;
  co_return static_cast<unsigned char>(b);
}

struct ring_round_result {
  int rounds = 0;
  int wrong = 0;       // a reader got no byte or another round's byte
  int first_bad = -1;  // the first such round
};

// Each round: a reader parks in a read; this task enters mpg::blocking for
// about as long as the peer waits before writing. Entering, it hands the
// only P (which has I/O in flight) to a second M, which finds nothing to
// run and sleeps in the P's ring holding it. Leaving, it takes that P over
// while the byte's completion wakes the sleeping M. The offsets sweep the
// exit across the completion in steps of a microsecond.
mpg::task<ring_round_result> reads_completing_at_blocking_exit(mpg::net::tcp_stream* s,
                                                               delayed_writer* peer, int rounds,
                                                               mpg_test::watchdog* dog) {
  ring_round_result res;
  for (int r = 0; r < rounds; ++r) {
    auto reader = mpg::spawn(read_one_byte(s), "reader");
    co_await mpg::yield();  // the reader (runnext) runs and parks in its read
    const auto t0 = steady::now();
    const auto write_at = t0 + 150us;
    const auto exit_at = write_at + std::chrono::microseconds((r * 7) % 61 - 30);
    peer->write_at(write_at, static_cast<char>(r & 0x7f));
    auto wait = [exit_at] { spin_until(exit_at); };
    co_await mpg::blocking(wait);
    const int got = co_await reader;
    dog->pet();
    ++res.rounds;
    if (got != (r & 0x7f)) {
      if (res.first_bad < 0) res.first_bad = r;
      ++res.wrong;
    }
  }
  co_return res;
}

// ---------------------------------------------------------------------------
// Two tasks passing a turn through blocking calls, procs = 1, max_threads = 2.

struct turn_game {
  std::atomic<int> turn{0};
  // The last round both play: rounds - 1, or earlier when player 0 sees the
  // time budget spent (it decides at the start of its turn, so both stop
  // after the same round).
  std::atomic<int> last_round{0};
  steady::time_point end_by;
  std::atomic<bool> failed{false};  // a player gave up waiting: end the game
  std::atomic<int> stuck_round{-1};
};

// wait_turn(): the blocking call: spin until it is `me`'s turn (the other
// player's task sets it while running on the only P).
bool wait_turn(turn_game* g, int me) {
  const auto spin_until_t = steady::now() + 2ms;
  const auto give_up = steady::now() + kGiveUp;
  for (unsigned i = 0;; ++i) {
    // Acquire: pairs with the other player's release store of the turn.
    if (g->turn.load(std::memory_order_acquire) == me) return true;
    if (g->failed.load(std::memory_order_relaxed)) return false;
    // Spin (the store is seen within a cache miss, which the pause sweep
    // relies on) for a few milliseconds, then leave the CPU to others.
    if (i % 256 == 255) {
      const auto now = steady::now();
      if (now > give_up) return false;
      if (now > spin_until_t) std::this_thread::yield();
    }
    mpg::detail::cpu_relax();
  }
}

// A player: wait (blocking) for its turn, give the turn to the other,
// pause, and wait again. The other player's M leaves its blocking call right
// after the store, finds the only P busy (this task runs on it), queues its
// G globally and goes idle; this task's M enters its own blocking call and
// hands the P on: it must find that M (or the queued G must otherwise run)
// or both players stall. The pause sweeps 0..max_pause in 64 steps from
// round to round, so that the entry lands at every point of the other M's
// exit, whose start lags the store by the time it takes to see it.
mpg::task<int> player(turn_game* g, int me, std::chrono::nanoseconds max_pause) {
  const std::int64_t step = max_pause.count() / 63;
  int played = 0;
  for (int r = 0;; ++r) {
    auto wait = [g, me] { return wait_turn(g, me); };
    const bool mine = co_await mpg::blocking(wait);
    if (!mine) {
      int none = -1;
      g->stuck_round.compare_exchange_strong(none, r, std::memory_order_relaxed);
      g->failed.store(true, std::memory_order_relaxed);
      co_return played;
    }
    ++played;
    // Relaxed: player 1 reads it after the turn store below (release/acquire).
    if (me == 0 && steady::now() > g->end_by) g->last_round.store(r, std::memory_order_relaxed);
    const bool last = r >= g->last_round.load(std::memory_order_relaxed);
    const auto pause_until = steady::now() + std::chrono::nanoseconds((r % 64) * step);
    // Release: the turn publishes this round's writes to the other player.
    g->turn.store(1 - me, std::memory_order_release);
    if (last) break;
    spin_until(pause_until);
  }
  co_return played;
}

mpg::task<int> play_turns(turn_game* g, std::chrono::nanoseconds max_pause) {
  auto a = mpg::spawn(player(g, 0, max_pause), "player0");
  auto b = mpg::spawn(player(g, 1, max_pause), "player1");
  const int pa = co_await a;
  const int pb = co_await b;
  co_return pa + pb;
}

// ---------------------------------------------------------------------------
// A timer on a P handed off by a blocking call when no M is free.

struct timer_scene {
  std::atomic<bool> hog_running{false};
  std::atomic<bool> in_blocking{false};
  std::atomic<bool> fired{false};
};

// Keeps the second M busy (no idle M) until the blocking call has started.
mpg::task<bool> hog(timer_scene* sc) {
  sc->hog_running.store(true, std::memory_order_release);
  co_return spin_for_flag(sc->in_blocking);
}

mpg::task<void> sleeper(timer_scene* sc) {
  co_await mpg::sleep_for(20ms);
  sc->fired.store(true, std::memory_order_release);
}

struct timer_outcome {
  bool setup_ok = false;  // the hog ran on the other M before the blocking call
  bool hog_ok = false;
  bool fired_in_time = false;
};

// The sleeper arms its timer on this P, then this task enters a blocking
// call that waits for the sleep to end. Entering, it hands the P (it has a
// timer) to another M, but the only other M allowed runs the hog, so the P
// goes idle without an M; the hog then ends and that M finds nothing to do.
// Someone must still run the P's timer while the blocking call waits.
mpg::task<timer_outcome> sleep_next_to_blocking_call(timer_scene* sc) {
  timer_outcome out;
  auto h = mpg::spawn(hog(sc), "hog");
  auto s = mpg::spawn(sleeper(sc), "sleeper");  // runnext; the hog moves to the stealable queue
  // The other P's M steals the hog. Spinning here (not yielding) keeps the
  // hog and the sleeper off this P's M.
  out.setup_ok = spin_for_flag(sc->hog_running);
  co_await mpg::yield();  // the sleeper (runnext) runs here and arms its timer on this P
  auto wait = [sc] {
    sc->in_blocking.store(true, std::memory_order_release);
    return spin_for_flag(sc->fired);
  };
  out.fired_in_time = co_await mpg::blocking(wait);
  out.hog_ok = co_await h;
  co_await s;
  co_return out;
}

// ---------------------------------------------------------------------------
// A runnext G on a P handed off by a blocking call when no M is free.

struct runnext_scene {
  mpg::runtime* rt = nullptr;
  mpg::chan<int> go;  // unbuffered: the target waits in recv until the sender readies it
  // Set by the target and the reader just before they suspend, with the M's
  // park count (runtime_stats::parks) read before it, and the reader's P.
  std::atomic<bool> target_waiting{false};
  std::atomic<bool> reader_waiting{false};
  std::atomic<std::uint64_t> target_parks{0};
  std::atomic<std::uint64_t> reader_parks{0};
  std::atomic<std::uint32_t> reader_p{UINT32_MAX};
  std::atomic<bool> target_ran{false};
};

// Relaxed stores of the counts and the P: the release store of the flag
// after them publishes them to the acquire load that sees the flag.
mpg::task<void> runnext_target(runnext_scene* sc) {
  sc->target_parks.store(sc->rt->stats().parks, std::memory_order_relaxed);
  sc->target_waiting.store(true, std::memory_order_release);
  const std::optional<int> v = co_await sc->go.recv();
  // Release: pairs with the blocking call's acquire load (spin_for_flag).
  sc->target_ran.store(v.has_value(), std::memory_order_release);
}

mpg::task<int> runnext_reader(runnext_scene* sc, mpg::net::tcp_stream* s) {
  sc->reader_p.store(mpg::detail::current_m()->p()->id, std::memory_order_relaxed);
  sc->reader_parks.store(sc->rt->stats().parks, std::memory_order_relaxed);
  sc->reader_waiting.store(true, std::memory_order_release);
  co_return co_await read_one_byte(s);
}

// sleeper_set_up(): the first blocking call. The task's P, with the target
// and the reader spawned on it, went to the other M (or stayed unheld
// until that M took them): both Gs run there, the target waits in recv,
// the reader in its read, and that M, with nothing left to run, parks
// after the later of their two samples of the park count (the only M that
// can park meanwhile: this one is in the blocking call). Its P has the
// read in flight, so it sleeps in that P's ring holding it (T3).
bool sleeper_set_up(runnext_scene* sc) {
  if (!spin_for_flag(sc->target_waiting) || !spin_for_flag(sc->reader_waiting)) return false;
  const std::uint64_t after = std::max(sc->target_parks.load(std::memory_order_relaxed),
                                       sc->reader_parks.load(std::memory_order_relaxed));
  const auto give_up = steady::now() + kGiveUp;
  while (sc->rt->stats().parks <= after) {
    if (steady::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

struct runnext_outcome {
  bool sleeper = false;         // the other M went to sleep after both Gs suspended
  bool reader_elsewhere = false;  // the reader's P is not this task's P
  std::uint64_t threads = 0;    // Ms started before the second blocking call
  bool sent = false;            // try_send found the target waiting (and readied it)
  bool only_runnext = false;    // this task's P then had the target in runnext, nothing else
  // Just before the second blocking call, this task's P had its runnext
  // marked stealable: sysmon sampled the P in the few microseconds between
  // the two calls and took this task for a long-running G (it went on from
  // the first call on a P that sysmon had last seen unheld, so its tick had
  // not moved). The other M may steal the target on that mark, not on the
  // P's being unheld: such a round shows nothing. (Once the call has handed
  // the P away, a mark is sysmon's service of the unheld P, which is what
  // the round is about.)
  bool spoiled = false;
  bool ring_woken = false;  // the other M was woken from its ring during the call
  bool reached = false;     // the target ran while the blocking call waited for it
  std::uint64_t thread_limit_reports = 0;
  int read = -2;            // the reader's byte, once released
};

// The round. The second blocking call hands this task's P away with only
// the target queued (in runnext): no M is idle and none may be started, so
// the P is left unheld and the work goes to the other M, asleep in its ring
// (p_ownership.cpp, "Thread limit"). The call waits for the target; only
// that M can run it, by stealing it from the unheld P.
mpg::task<runnext_outcome> runnext_next_to_blocking_call(runnext_scene* sc,
                                                         mpg::net::tcp_stream* s, int peer) {
  runnext_outcome out;
  auto target = mpg::spawn(runnext_target(sc), "target");
  auto reader = mpg::spawn(runnext_reader(sc, s), "reader");
  out.sleeper = co_await mpg::blocking([sc] { return sleeper_set_up(sc); });
  // Back from the call on a P that nobody held (the other M holds its own).
  mpg::detail::processor* p = mpg::detail::current_m()->p();
  out.reader_elsewhere = sc->reader_p.load(std::memory_order_relaxed) != p->id;
  const mpg::runtime_stats before = sc->rt->stats();
  out.threads = before.threads;
  out.sent = sc->go.try_send(1);  // ready(): into this P's runnext, no wake
  out.only_runnext = p->runq.has_runnext() && p->runq.size() == 1;
  struct waited {
    bool reached, ring_woken;
  };
  // Relaxed: a look at a hint, as late as can be (what it tells is argued
  // at runnext_outcome).
  out.spoiled = p->runnext_stealable.load(std::memory_order_relaxed);
  const waited w = co_await mpg::blocking([sc, ring0 = before.ring_wakeups] {
    waited r{};
    r.reached = spin_for_flag(sc->target_ran);
    r.ring_woken = sc->rt->stats().ring_wakeups > ring0;
    return r;
  });
  out.reached = w.reached;
  out.ring_woken = w.ring_woken;
  out.thread_limit_reports = sc->rt->stats().thread_limit_reports;
  if (!out.sent) sc->go.close();  // the target ends either way
  co_await target;
  // The reader's byte; failing that, end of stream (read_one_byte: -1).
  const char byte = 42;
  if (::write(peer, &byte, 1) != 1) ::shutdown(peer, SHUT_WR);
  out.read = co_await reader;
  co_return out;
}

}  // namespace

TEST_CASE(
    "a completion waking a ring-sleeping M while mpg::blocking takes over its P is delivered "
    "once") {
  constexpr int kRounds = mpg_test::kSanitized ? 8000 : 3000;
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  mpg::net::tcp_stream reader_side(fds[0]);  // closes fds[0]
  ring_round_result res;
  {
    delayed_writer peer(fds[1]);
    mpg::runtime rt({.procs = 1});
    mpg_test::watchdog dog(kRoundWatchdog, "a round of reads completing at blocking exit", &rt);
    res = rt.block_on(reads_completing_at_blocking_exit(&reader_side, &peer, kRounds, &dog));
    CHECK(peer.failed_writes() == 0);
  }
  ::close(fds[1]);
  CAPTURE(res.first_bad);
  CHECK(res.rounds == kRounds);
  CHECK(res.wrong == 0);
}

TEST_CASE(
    "procs 1, max_threads 2: a G queued by a blocking exit is not stranded when the P frees up") {
  constexpr int kRounds = 8000;
  constexpr auto kBudget = mpg_test::kSanitized ? 15s : 10s;
  // The pause after passing the turn sweeps the window in which the other
  // M, leaving its blocking call, has queued its G but not yet gone idle.
  constexpr std::chrono::nanoseconds kMaxPause = mpg_test::kSanitized ? 6us : 1500ns;
  turn_game g;
  g.last_round.store(kRounds - 1);
  g.end_by = steady::now() + kBudget;
  mpg::runtime rt({.procs = 1, .max_threads = 2});
  mpg_test::watchdog dog(kWatchdog, "two players passing a turn through blocking calls", &rt);
  const int played = rt.block_on(play_turns(&g, kMaxPause));
  INFO("a player gave up waiting for its turn in round " << g.stuck_round.load()
                                                         << " (the other player was stranded)");
  CHECK_FALSE(g.failed.load());
  CHECK(played == 2 * (g.last_round.load() + 1));
  MESSAGE((g.last_round.load() + 1) << " rounds played");
}

TEST_CASE(
    "procs 2, max_threads 2: a sleep on a P handed off by a blocking call fires while the other M "
    "idles") {
  for (int attempt = 0; attempt < 3; ++attempt) {
    CAPTURE(attempt);
    timer_scene sc;
    mpg::runtime rt({.procs = 2, .max_threads = 2});
    mpg_test::watchdog dog(kWatchdog, "a sleep next to a long blocking call", &rt);
    const timer_outcome out = rt.block_on(sleep_next_to_blocking_call(&sc));
    REQUIRE_MESSAGE(out.setup_ok, "the hog never ran on the second M");
    CHECK(out.hog_ok);
    CHECK_MESSAGE(out.fired_in_time, "a 20 ms sleep did not fire within the blocking call's bound");
    if (!out.fired_in_time) break;  // each failed attempt waits the whole bound
  }
}

TEST_CASE("procs 2, max_threads 2: a runnext G on a P handed off by a blocking call runs while "
          "the other M sleeps in its ring") {
  // A round is spoiled only when sysmon samples the Ps in the few
  // microseconds between the two blocking calls (runnext_outcome): a
  // second round is all but sure to be clean.
  constexpr int kAttempts = 3;
  bool clean = false;
  for (int attempt = 0; attempt < kAttempts && !clean; ++attempt) {
    CAPTURE(attempt);
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    mpg::net::tcp_stream reader_side(fds[0]);  // closes fds[0]
    runnext_outcome out;
    {
      mpg::runtime rt({.procs = 2, .max_threads = 2});
      mpg_test::watchdog dog(kWatchdog, "a runnext G next to a long blocking call", &rt);
      runnext_scene sc;
      sc.rt = &rt;
      out = rt.block_on(runnext_next_to_blocking_call(&sc, &reader_side, fds[1]));
    }
    ::close(fds[1]);
    // The scene: the other M asleep in its ring holding the reader's P, no
    // M left to start, and this task's P handed away with one G, in runnext.
    REQUIRE_MESSAGE(out.sleeper, "the target and the reader never both waited on the other M");
    REQUIRE(out.reader_elsewhere);
    REQUIRE(out.threads == 2);
    REQUIRE_MESSAGE(out.sent, "the target was not waiting in recv");
    CHECK(out.read == 42);
    if (out.spoiled) {
      MESSAGE("attempt " << attempt << ": sysmon took the sender for a long G before its call");
      continue;
    }
    clean = true;
    REQUIRE_MESSAGE(out.only_runnext, "the sender's P did not hold the target alone, in runnext");
    // The hand-off (or sysmon, serving the unheld P) woke the sleeper.
    REQUIRE_MESSAGE(out.ring_woken, "the M asleep in its ring was never woken for the unheld P");
    CHECK_MESSAGE(out.reached, "the runnext G left on the unheld P did not run within "
                                   << std::chrono::duration_cast<std::chrono::milliseconds>(kGiveUp)
                                          .count()
                                   << " ms while a blocking call waited for it");
    CHECK(out.thread_limit_reports == 0);
  }
  REQUIRE_MESSAGE(clean, "every attempt was spoiled");
}
