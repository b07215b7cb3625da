// test/scheduler_tests.cpp: scheduling behaviour of the M-P-G scheduler:
// yield fairness, work spreading over Ps, cooperative budget, the procs
// option and MPG_PROCS, stealing, the task dump, and the reuse of Gs.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <sched.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sched/scheduler.hpp"
#include "test_support.hpp"

namespace {


// ---------------------------------------------------------------------------
// Yield fairness.

struct interleaving {
  std::mutex mu;  // one P runs them, but possibly on different Ms over time
  std::vector<char> order;
  void add(char c) {
    std::lock_guard<std::mutex> l(mu);
    order.push_back(c);
  }
};

mpg::task<void> yielder(interleaving* log, char who, int turns) {
  for (int i = 0; i < turns; ++i) {
    log->add(who);
    co_await mpg::yield();
  }
}

mpg::task<void> two_yielders(interleaving* log, int turns) {
  auto a = mpg::spawn(yielder(log, 'A', turns));
  auto b = mpg::spawn(yielder(log, 'B', turns));
  co_await a;
  co_await b;
}

// ---------------------------------------------------------------------------
// Work spreading over Ps.

struct rendezvous {
  std::atomic<int> started{0};
  std::mutex mu;
  std::set<std::thread::id> threads;
};

// Spins without suspending (so the other task cannot run on this P) until
// both have started, bounded by a deadline. True if both met.
mpg::task<bool> meet(rendezvous* r) {
  {
    std::lock_guard<std::mutex> l(r->mu);
    r->threads.insert(std::this_thread::get_id());
  }
  r->started.fetch_add(1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (r->started.load() < 2) {
    if (std::chrono::steady_clock::now() > deadline) co_return false;
  }
  co_return true;
}

mpg::task<int> meet_both(rendezvous* r) {
  auto a = mpg::spawn(meet(r), "meet.a");
  auto b = mpg::spawn(meet(r), "meet.b");
  int met = 0;
  met += (co_await a) ? 1 : 0;
  met += (co_await b) ? 1 : 0;
  co_return met;
}

// ---------------------------------------------------------------------------
// Budget fairness.

mpg::task<void> raise(std::atomic<bool>* flag) {
  flag->store(true);
  co_return;
}

// A loop that never suspends except through consume_budget; the task that
// ends it is spawned by the loop itself (runnext of the same P), so it can
// only run when consume_budget yields.
mpg::task<long> busy_until_flag() {
  std::atomic<bool> flag{false};
  auto h = mpg::spawn(raise(&flag));
  long iterations = 0;
  while (!flag.load()) {
    ++iterations;
    co_await mpg::consume_budget();
  }
  co_await h;
  co_return iterations;
}

// ---------------------------------------------------------------------------
// Stealing.

mpg::task<int> fib(int n) {
  if (n < 2) co_return n;
  mpg::join_handle<int> a = mpg::spawn(fib(n - 1));
  int b = co_await fib(n - 2);
  co_return co_await a + b;
}

// Each child records its thread and spins without suspending until children
// have run on two threads (bounded by a deadline). Spawned from one task,
// they sit in that task's P: another P gets them only by stealing.
mpg::task<bool> hold_until_two_threads(rendezvous* r) {
  {
    std::lock_guard<std::mutex> l(r->mu);
    r->threads.insert(std::this_thread::get_id());
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    {
      std::lock_guard<std::mutex> l(r->mu);
      if (r->threads.size() >= 2) co_return true;
    }
    if (std::chrono::steady_clock::now() > deadline) co_return false;
  }
}

mpg::task<int> fork_join(rendezvous* r, int n) {
  std::vector<mpg::join_handle<bool>> hs;
  for (int i = 0; i < n; ++i) hs.push_back(mpg::spawn(hold_until_two_threads(r), "fork"));
  int ok = 0;
  for (auto& h : hs) ok += (co_await h) ? 1 : 0;
  co_return ok;
}

// ---------------------------------------------------------------------------
// dump().

mpg::task<std::string> dump_from_child(mpg::runtime* rt, std::atomic<bool>* dumped) {
  std::ostringstream os;
  rt->dump(os);
  dumped->store(true);
  co_return os.str();
}

mpg::task<void> nothing() { co_return; }

mpg::task<std::string> parent_parked_in_join(mpg::runtime* rt, std::atomic<bool>* dumped) {
  auto h = mpg::spawn(dump_from_child(rt, dumped), "dump-child");
  // A second spawn takes the runnext slot, so the join cannot run the child
  // inline (work-first) and parks instead.
  auto other = mpg::spawn(nothing(), "displacer");
  std::string d = co_await h;
  co_await other;
  co_return d;
}

}  // namespace

TEST_CASE("yield alternates two tasks strictly on one P") {
  mpg::runtime rt({.procs = 1});
  interleaving log;
  const int turns = 200;
  rt.block_on(two_yielders(&log, turns));
  const std::vector<char>& v = log.order;
  REQUIRE(v.size() == 2 * static_cast<std::size_t>(turns));
  // From the moment both have started until one of them ends: strict
  // alternation.
  std::size_t first_a = v.size(), first_b = v.size(), last_a = 0, last_b = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] == 'A') {
      if (first_a == v.size()) first_a = i;
      last_a = i;
    } else {
      if (first_b == v.size()) first_b = i;
      last_b = i;
    }
  }
  const std::size_t start = std::max(first_a, first_b);
  const std::size_t end = std::min(last_a, last_b);
  REQUIRE(start < end);
  CHECK(start <= 1);
  std::size_t breaks = 0;
  for (std::size_t i = start; i < end; ++i) breaks += v[i] == v[i + 1] ? 1 : 0;
  CHECK(breaks == 0);
  CHECK(end - start >= 2 * static_cast<std::size_t>(turns) - 3);
}

TEST_CASE("work spreads over two Ps") {
  mpg::runtime rt({.procs = 2});
  rendezvous r;
  CHECK(rt.block_on(meet_both(&r)) == 2);
  CHECK(r.threads.size() == 2);
  const auto s = rt.stats();
  REQUIRE(s.tasks_run.size() == 2);
  CHECK(s.tasks_run[0] > 0);
  CHECK(s.tasks_run[1] > 0);
}

TEST_CASE("consume_budget lets a spinning task give way on one P") {
  mpg::runtime rt({.procs = 1});
  const long iterations = rt.block_on(busy_until_flag());
  // It looped (the flag was not set before it started) and ended (the
  // budget ran out and the setter ran).
  CHECK(iterations >= 2);
}

namespace {
mpg::task<void> receive_then_mark(mpg::chan<int> c, std::atomic<bool>* ran,
                                  std::thread::id* where) {
  (void)co_await c.recv();
  *where = std::this_thread::get_id();
  ran->store(true, std::memory_order_release);
}
}  // namespace

TEST_CASE("a task readied into runnext behind a task that never suspends runs on the other P") {
  // ready() wakes no M for a G alone in its P's runnext slot (scheduler.cpp,
  // "Runnext hand-offs"): the P's holder runs it next. Here the holder's
  // task spins until the readied task has run, which only the other P can
  // do, once sysmon finds this P stuck, marks its runnext stealable and
  // wakes an M.
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c;
  std::atomic<bool> ran{false};
  std::thread::id ran_on, spun_on;
  bool in_time = false;
  rt.block_on([&]() -> mpg::task<void> {
    auto receiver = mpg::spawn(receive_then_mark(c, &ran, &ran_on));
    while (!mpg_test::dump_shows(rt, "chan receive")) co_await mpg::yield();
    spun_on = std::this_thread::get_id();
    CHECK(c.try_send(1));  // the receiver goes to this P's runnext slot
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!ran.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < give_up) {
    }
    in_time = ran.load(std::memory_order_acquire);
    co_await receiver;
  }());
  CHECK(in_time);
  CHECK(ran_on != spun_on);
}

TEST_CASE("the procs option is respected") {
  for (unsigned procs : {1u, 3u, 5u}) {
    CAPTURE(procs);
    mpg::runtime rt({.procs = procs});
    CHECK(rt.procs() == procs);
    const auto s = rt.stats();
    CHECK(s.procs == procs);
    CHECK(s.tasks_run.size() == procs);
    CHECK(s.local_queue_lengths.size() == procs);
    CHECK(rt.block_on(fib(10)) == 55);
  }
}

TEST_CASE("MPG_PROCS sets procs when the option is 0") {
  const char* old = getenv("MPG_PROCS");
  std::string saved = old ? old : "";
  setenv("MPG_PROCS", "3", 1);
  {
    mpg::runtime rt({.procs = 0});
    CHECK(rt.procs() == 3);
  }
  {
    mpg::runtime rt({.procs = 2});  // an explicit value wins
    CHECK(rt.procs() == 2);
  }
  setenv("MPG_PROCS", "not-a-number", 1);  // ignored (with a warning)
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
    mpg::runtime rt({.procs = 0});
    CHECK(rt.procs() == static_cast<unsigned>(CPU_COUNT(&set)));
  }
  if (old) setenv("MPG_PROCS", saved.c_str(), 1); else unsetenv("MPG_PROCS");
  {
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
    if (!old) {
      mpg::runtime rt;  // default: the affinity mask
      CHECK(rt.procs() == static_cast<unsigned>(CPU_COUNT(&set)));
    }
  }
}

TEST_CASE("idle Ps steal from a busy one in a fork-join workload") {
  mpg::runtime rt({.procs = 2});
  rendezvous r;
  CHECK(rt.block_on(fork_join(&r, 8)) == 8);
  CHECK(r.threads.size() == 2);
  const auto s = rt.stats();
  CHECK(s.steals > 0);
  CHECK(s.stolen_tasks >= s.steals);
  REQUIRE(s.tasks_run.size() == 2);
  CHECK(s.tasks_run[0] > 0);
  CHECK(s.tasks_run[1] > 0);
  CHECK(rt.block_on(fib(22)) == 17711);
}

TEST_CASE("dump lists a task parked in a join, with its name") {
  mpg::runtime rt({.procs = 1});
  // On one P the child runs only once its parent has parked in the join
  // (and the displacer has run and finished).
  // The main thread spawns nothing while the child dumps (block_on would
  // spawn its waiter task concurrently), so it waits for the dump first.
  std::atomic<bool> dumped{false};
  auto h = rt.spawn(parent_parked_in_join(&rt, &dumped), "dump-parent");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!dumped.load() && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  REQUIRE(dumped.load());
  const std::string d = rt.block_on(std::move(h));
  CAPTURE(d);
  CHECK(d.find("(dump-parent) [waiting: join") != std::string::npos);
  CHECK(d.find("(dump-child) [running") != std::string::npos);
  CHECK(d.find("mpg: 2 live task(s) on 1 P(s)") != std::string::npos);
}

// ---------------------------------------------------------------------------
// Reuse of Gs: a G retired on one P goes to that P's pool, and past its
// bound to the global pool, where a spawn on another P finds it.

namespace {

mpg::task<void> wait_at(mpg::wait_group* gate) { co_await gate->wait(); }

// One wave: n tasks, all live at once (each waits at a gate that opens
// once the last is spawned), then joined; they finish on both Ps.
mpg::task<std::size_t> wave_of(std::size_t n) {
  mpg::wait_group gate;
  gate.add(1);
  std::vector<mpg::join_handle<void>> hs;
  hs.reserve(n);
  for (std::size_t i = 0; i < n; ++i) hs.push_back(mpg::spawn(wait_at(&gate)));
  gate.done();
  for (auto& h : hs) co_await h;
  co_return mpg::detail::current_scheduler()->g_count();
}

}  // namespace

TEST_CASE("Gs retired on the Ps are reused: waves of spawns do not make new Gs") {
  constexpr std::size_t kTasks = 2000;
  constexpr int kWaves = 20;
  mpg::runtime rt({.procs = 2});
  const std::size_t first = rt.block_on(wave_of(kTasks));
  CHECK(first >= kTasks);  // all were live at once
  std::size_t last = first;
  for (int w = 0; w < kWaves; ++w) last = rt.block_on(wave_of(kTasks));
  // A spawn makes Gs (a block of at most kGBlockMax) only when its P's
  // pool, its P's fresh Gs and the global pool are all empty, so a wave can
  // add no more than the Gs the other P keeps (its pool, at most
  // kGfreeMax + 1, and its fresh Gs, fewer than a block), whatever the
  // first wave made: the Gs ever made stay below the peak of live tasks
  // (kTasks, the wave's own task and block_on's) plus both Ps' pools and
  // two blocks. A pool that lost the Gs it was given would add about kTasks
  // per wave.
  using mpg::detail::processor;
  CAPTURE(first);
  CAPTURE(last);
  CHECK(last <= kTasks + 8 + 2 * (processor::kGfreeMax + 1) + 2 * processor::kGBlockMax);
}

TEST_CASE("runtime_options out of range are refused with std::invalid_argument") {
  CHECK_THROWS_AS(mpg::runtime({.procs = 5000}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .recv_buffers = 3}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .recv_buffers = 65536}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .recv_buffer_size = 1u << 30}), std::invalid_argument);
  CHECK_THROWS_AS(mpg::runtime({.procs = 1, .long_task_threshold = std::chrono::milliseconds(-1)}),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      mpg::runtime({.procs = 1, .thread_starvation_threshold = std::chrono::milliseconds(-1)}),
      std::invalid_argument);
  mpg::runtime ok({.procs = 1, .recv_buffers = 1024, .recv_buffer_size = 4096});
  CHECK(ok.procs() == 1);
}

TEST_CASE("long_task_threshold = milliseconds::max() never reports") {
  // The monitor reports a P on one G past the threshold; ms::max() has no
  // nanosecond form and must saturate to "never", not wrap to a negative
  // threshold that reports every task past 1 ms.
  mpg::runtime rt({.procs = 1,
                   .long_task_threshold = std::chrono::milliseconds::max(),
                   .report_long_tasks = true});
  rt.block_on([]() -> mpg::task<void> {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
    while (std::chrono::steady_clock::now() < until) {
    }  // the monitor samples this P several times meanwhile
    co_return;
  }());
  CHECK(rt.stats().long_task_reports == 0);
}

// Abseil builds its table of errno texts at the first absl::ErrnoToStatus,
// guarded by code ThreadSanitizer does not see (scheduler_setup.cpp). Here
// runtime A is made first, on a thread of its own, and B only after A's
// first errno Status, but with no order ThreadSanitizer could see between
// the two threads (the flag is relaxed, on purpose): B's constructor and
// B's first errno Status must read the table through an order that mpg
// provides. meson runs this case alone in a process too
// (scheduler_tests_errno_texts, test/meson.build, which names it by the
// start of its title: keep the two alike), so that A's is the process's
// first build.
mpg::task<absl::StatusCode> stat_missing_code() {
  std::string path = "/nonexistent/mpg-test";
  absl::StatusOr<mpg::fs::file_info> info = co_await mpg::fs::stat(std::move(path));
  co_return info.status().code();
}

TEST_CASE("two runtimes made on two threads: the errno texts are built in an order both see") {
  // Relaxed flags: the test wants B after A in time but in no order that
  // ThreadSanitizer tracks (see above). A's runtime lives until B's is
  // gone: liburing maps the rings with raw syscalls, which ThreadSanitizer
  // does not see, so B's ring at the address of A's unmapped one would be
  // a report of its own.
  std::atomic<bool> a_done{false};
  std::atomic<bool> b_done{false};
  absl::StatusCode a_code = absl::StatusCode::kOk;
  absl::StatusCode b_code = absl::StatusCode::kOk;
  std::thread a([&] {
    mpg::runtime rt({.procs = 1});
    a_code = rt.block_on(stat_missing_code());
    a_done.store(true, std::memory_order_relaxed);
    while (!b_done.load(std::memory_order_relaxed)) std::this_thread::yield();
  });
  std::thread b([&] {
    while (!a_done.load(std::memory_order_relaxed)) std::this_thread::yield();
    {
      mpg::runtime rt({.procs = 1});
      b_code = rt.block_on(stat_missing_code());
    }
    b_done.store(true, std::memory_order_relaxed);
  });
  a.join();
  b.join();
  CHECK(a_code == absl::StatusCode::kNotFound);
  CHECK(b_code == absl::StatusCode::kNotFound);
}
