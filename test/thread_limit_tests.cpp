// test/thread_limit_tests.cpp: tasks starving at the thread limit
// (runtime_options::max_threads) are reported, and only then.
//
// With procs = 1 and max_threads = 1 (the least allowed: the limit is at
// least procs) there is one M. A task on it enters mpg::blocking, and the P
// it hands away keeps a second task queued that no M can run. When the
// blocking call waits for that second task, nothing can ever run it: the
// monitor must say so on stderr after thread_starvation_threshold (small
// here), once for as long as it lasts. A blocking call that returns by
// itself must cost no report, and the queued task must then run.
//
// Nothing sleeps to synchronise: the tests wait for the report on captured
// stderr with a bound, and a blocking call that waits for a task is always
// released from the test thread afterwards (whether the report came or
// not), so a failing test ends instead of hanging. The only sleep is the
// transient case's blocking call, which is what that case is about.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <string_view>
#include <thread>

#include "mpg/mpg.hpp"
#include "sched/scheduler.hpp"
#include "stderr_capture.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// Bounds that must not trigger on a healthy but loaded machine grow in
// sanitizer builds. The blocking call's own bound outlasts every wait of
// the test thread: the test releases it before that.
constexpr std::chrono::milliseconds kGiveUp = mpg_test::kSanitized ? 20s : 10s;
constexpr std::chrono::milliseconds kBlockingBound = 60s;
constexpr std::chrono::milliseconds kWatchdog = mpg_test::kSanitized ? 120s : 60s;
constexpr std::chrono::milliseconds kThreshold{50};
constexpr std::string_view kReport = "mpg: thread limit reached";

// A promise that the helper task or the test thread fulfils, whichever
// comes first.
struct release {
  std::promise<void> promise;
  std::atomic<bool> done{false};
  void fulfil() {
    // Relaxed: the flag only elects the one caller that sets the promise;
    // the promise itself orders the waiter after the set.
    if (!done.exchange(true, std::memory_order_relaxed)) promise.set_value();
  }
};

mpg::task<void> helper(release* r, std::atomic<int>* runs) {
  // Relaxed: counted for the test thread, which reads it after joining
  // (the join orders it) or, before the release, only to see it is 0.
  runs->fetch_add(1, std::memory_order_relaxed);
  r->fulfil();
  co_return;
}

// wait_for_helper(): spawns helper, which is queued on this P, then waits
// for it inside mpg::blocking. True when the wait ended by the promise.
mpg::task<bool> wait_for_helper(release* r, std::atomic<int>* helper_runs) {
  std::future<void> f = r->promise.get_future();
  auto h = mpg::spawn(helper(r, helper_runs), "helper");
  const bool ready = co_await mpg::blocking(
      [&f] { return f.wait_for(kBlockingBound) == std::future_status::ready; });
  co_await h;
  co_return ready;
}

mpg::runtime_options limited(std::chrono::milliseconds threshold) {
  return {.procs = 1, .max_threads = 1, .thread_starvation_threshold = threshold};
}

bool contains(const std::string& s, std::string_view what) {
  return s.find(what) != std::string::npos;
}

}  // namespace

namespace {

// What one stranded run gave: a task that waits inside mpg::blocking for a
// helper it spawned, which no M can run.
struct stranded_run {
  bool reported = false;         // the report came within kGiveUp
  int runs_before_release = -1;  // the helper's runs before the test's release
  bool ready = false;            // the blocking call ended by the release
  int helper_runs = 0;           // the helper's runs in all
  mpg::runtime_stats st;
};

// run_stranded(): runs `waiter` (wait_for_helper, or a task around it) on a
// runtime with `opts`, waits for the report, then ends the blocking call
// from the test thread, report or not, so a failing test ends.
using waiter_fn = mpg::task<bool> (*)(release*, std::atomic<int>*);
stranded_run run_stranded(const mpg::runtime_options& opts, waiter_fn waiter,
                          mpg_test::stderr_capture& cap) {
  stranded_run out;
  std::atomic<int> helper_runs{0};
  release r;
  {
    mpg::runtime rt(opts);
    mpg_test::watchdog dog(kWatchdog, "a blocking call waiting for a stranded task", &rt);
    auto h = rt.spawn(waiter(&r, &helper_runs), "waiter");
    out.reported = cap.wait_for(kReport, 1, kGiveUp);
    out.runs_before_release = helper_runs.load(std::memory_order_relaxed);
    r.fulfil();
    out.ready = rt.block_on(std::move(h));
    out.st = rt.stats();
  }
  out.helper_runs = helper_runs.load(std::memory_order_relaxed);
  return out;
}

}  // namespace

TEST_CASE("max_threads 1: a blocking call waiting for a task stranded on its P is reported") {
  mpg_test::stderr_capture cap;
  const stranded_run run = run_stranded(limited(kThreshold), &wait_for_helper, cap);
  REQUIRE(cap.sync());
  const std::string text = cap.text();
  cap.echo_on_exit(!run.reported || run.st.thread_limit_reports != 1);
  CHECK_MESSAGE(run.reported, "no thread-limit report within " << kGiveUp.count() << " ms");
  CHECK(run.runs_before_release == 0);  // nothing could run the helper
  CHECK(run.ready);
  CHECK(run.helper_runs == 1);
  CHECK(run.st.thread_limit_reports == 1);
  CHECK(cap.count(kReport) == 1);
  // The report names the limit, the Ms in mpg::blocking and the stranded
  // task, and dumps the tasks: the waiter in its blocking call, the helper
  // runnable.
  CHECK(contains(text, "max_threads = 1"));
  CHECK(contains(text, "1 of 1 M(s) inside mpg::blocking"));
  CHECK(contains(text, "1 runnable task(s)"));
  CHECK(contains(text, "(waiter) [waiting: blocking at "));
  CHECK(contains(text, "(helper) [runnable]"));
}

TEST_CASE("the thread-limit report comes once while it lasts, and again when it recurs") {
  mpg_test::stderr_capture cap;
  std::atomic<int> helper_runs{0};
  mpg::runtime_stats st;
  bool first = false;
  bool repeated = true;
  bool second = false;
  {
    mpg::runtime rt(limited(kThreshold));
    mpg_test::watchdog dog(kWatchdog, "two blocking calls waiting for stranded tasks", &rt);
    release r1;
    auto h1 = rt.spawn(wait_for_helper(&r1, &helper_runs), "waiter");
    first = cap.wait_for(kReport, 1, kGiveUp);
    // Twenty thresholds more of the same starvation: no second report.
    // (A bounded wait for something that must not come.)
    repeated = cap.wait_for(kReport, 2, 20 * kThreshold);
    r1.fulfil();
    CHECK(rt.block_on(std::move(h1)));
    // The helper ran: the starvation is over. A new one is a new report.
    release r2;
    auto h2 = rt.spawn(wait_for_helper(&r2, &helper_runs), "waiter");
    second = cap.wait_for(kReport, 2, kGiveUp);
    r2.fulfil();
    CHECK(rt.block_on(std::move(h2)));
    st = rt.stats();
  }
  cap.echo_on_exit(!first || repeated || !second);
  CHECK(first);
  CHECK_FALSE(repeated);
  CHECK(second);
  CHECK(helper_runs.load(std::memory_order_relaxed) == 2);
  CHECK(st.thread_limit_reports == 2);
}

namespace {

// The OS refusing threads, below max_threads: assign_m()'s test hook
// refuses every M it would start while `refusing` is set.
std::atomic<bool> refusing{false};
bool refuse_m_start() {
  // Relaxed: set by the task below before its blocking call hands the P
  // away (that M's own earlier write), or by the test thread, whose later
  // clear only stops refusals.
  return refusing.load(std::memory_order_relaxed);
}

mpg::task<bool> refuse_threads_then_wait(release* r, std::atomic<int>* helper_runs) {
  refusing.store(true, std::memory_order_relaxed);
  co_return co_await wait_for_helper(r, helper_runs);
}

}  // namespace

// The OS may refuse a thread long before max_threads (RLIMIT_NPROC, a
// cgroup's pids limit, memory). Then no M can be started for the P that a
// blocking call hands away either: the stranded task is reported as at
// the limit, and the report says why. Not testable through the OS as root
// (RLIMIT_NPROC does not apply): the hook stands in for its EAGAIN.
TEST_CASE("the OS refusing threads below max_threads strands a task: that is reported too") {
  mpg_test::stderr_capture cap;
  mpg::detail::g_m_start_refuse_hook.store(&refuse_m_start, std::memory_order_relaxed);
  const stranded_run run = run_stranded(
      {.procs = 1, .max_threads = 64, .thread_starvation_threshold = kThreshold},
      &refuse_threads_then_wait, cap);
  refusing.store(false, std::memory_order_relaxed);
  mpg::detail::g_m_start_refuse_hook.store(nullptr, std::memory_order_relaxed);
  REQUIRE(cap.sync());
  const std::string text = cap.text();
  cap.echo_on_exit(!run.reported || run.st.thread_limit_reports != 1);
  CHECK_MESSAGE(run.reported, "no thread-limit report within " << kGiveUp.count() << " ms");
  CHECK(run.runs_before_release == 0);
  CHECK(run.ready);
  CHECK(run.helper_runs == 1);
  CHECK(run.st.thread_limit_reports == 1);
  CHECK(contains(text, "the OS refused a new thread: test hook"));
  CHECK(contains(text, "1 M(s) started, runtime_options::max_threads = 64"));
  CHECK(contains(text, "raise the OS's limit on threads"));
  CHECK(contains(text, "(helper) [runnable]"));
}

namespace {

mpg::task<void> count_run(std::atomic<int>* runs) {
  // Relaxed: read after the join, which orders it, and inside the blocking
  // call, where the one M cannot be running this task at all.
  runs->fetch_add(1, std::memory_order_relaxed);
  co_return;
}

// Each round strands a spawned task on the P handed away by a blocking
// call that returns by itself; the task must run once the call returns.
// Returns the rounds in which the task had not run during the call (all
// of them, with one M).
mpg::task<int> blocking_returns_by_itself(int rounds, std::atomic<int>* runs) {
  int stranded = 0;
  for (int i = 0; i < rounds; ++i) {
    auto h = mpg::spawn(count_run(runs), "helper");
    const int before = runs->load(std::memory_order_relaxed);
    const int after = co_await mpg::blocking([runs] {
      std::this_thread::sleep_for(20ms);  // the transient blocking call
      return runs->load(std::memory_order_relaxed);
    });
    if (after == before) ++stranded;
    co_await h;
  }
  co_return stranded;
}

}  // namespace

TEST_CASE("max_threads 1: a blocking call that returns by itself is not reported") {
  constexpr int kRounds = 10;
  mpg_test::stderr_capture cap;
  std::atomic<int> runs{0};
  int stranded = 0;
  mpg::runtime_stats st;
  {
    // A threshold twenty times the call: no loaded machine makes the
    // stranded task wait that long once the call returns.
    mpg::runtime rt(limited(400ms));
    mpg_test::watchdog dog(kWatchdog, "blocking calls that return by themselves", &rt);
    stranded = rt.block_on(blocking_returns_by_itself(kRounds, &runs));
    st = rt.stats();
  }
  REQUIRE(cap.sync());
  cap.echo_on_exit(cap.count(kReport) != 0);
  CHECK(stranded == kRounds);  // the limit held the task back each time...
  CHECK(runs.load(std::memory_order_relaxed) == kRounds);  // ...and it ran after
  CHECK(st.thread_limit_reports == 0);
  CHECK(cap.count(kReport) == 0);
}
