// test/diagnostics_edge_tests.cpp: the safety nets at their edges: the
// shutdown report's length and chains, MPG_FAULTS's seed, the deadlock check
// under block_ons made inside blocking calls, dumps made at once.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <sstream>
#include <streambuf>
#include <string>
#include <thread>
#include <utility>

#include "io/fault_injector.hpp"
#include "mpg/mpg.hpp"
#include "mpg/net.hpp"
#include "sched/scheduler.hpp"
#include "stderr_capture.hpp"
#include "stream_pair.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// A line of an await chain (six spaces, "at ") naming function fn: the
// compilers spell the anonymous namespace and the parameters differently.
bool has_chain_line(const std::string& text, const std::string& fn) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("      at ", 0) == 0 && line.find("::" + fn + "(") != std::string::npos)
      return true;
  return false;
}

mpg::task<void> receive_forever(mpg::chan<int> c) { (void)co_await c.recv(); }

}  // namespace

// The shutdown report lists the first 20 tasks and ends in "..." when there
// were more (shutdown.cpp).
TEST_CASE("the shutdown report of 25 tasks says that it left 5 out") {
  mpg_test::stderr_capture err;
  {
    mpg::runtime rt({.procs = 1});
    mpg::chan<int> c;
    for (int i = 0; i < 25; ++i) rt.go(receive_forever(c), "leaked");
    REQUIRE(mpg_test::wait_until([&] { return rt.stats().live == 25; }));
  }
  REQUIRE(err.wait_for("25 task(s) still alive"));
  // The report reaches the capture in pieces: wait for its last one.
  REQUIRE(err.wait_for("\n  ..."));
  const std::string text = err.text();
  INFO(text);
  CHECK(err.count("\n  task ") == 20);
  CHECK(text.find("\n  ...") != std::string::npos);
}

namespace {

mpg::task<void> read_forever(mpg::net::tcp_stream* s) {
  char buf[16];
  (void)co_await s->read(std::span<char>(buf));
}

mpg::task<void> hold_pair_and_read(std::optional<mpg_test::stream_pair>* out) {
  *out = co_await mpg_test::connect_pair();
}

}  // namespace

// docs/diagnostics.md, "The shutdown report": the tasks still suspended are
// reported with their states and await chains. A task parked in a socket
// read is readied by step 3 (the ring's cancel_all) before step 5 reports;
// it has not run since, so its chain is still that of its park.
TEST_CASE("the shutdown report shows the await chain of a task parked in a read") {
  std::optional<mpg_test::stream_pair> pair;
  mpg_test::stderr_capture err;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on(hold_pair_and_read(&pair));
    rt.go(read_forever(&pair->server), "reader");
    // Parked in the read: the dump says so.
    REQUIRE(mpg_test::wait_until([&] {
      std::ostringstream os;
      rt.dump(os);
      return os.str().find("net.read") != std::string::npos;
    }));
  }
  REQUIRE(err.wait_for("still alive"));
  const std::string text = err.text();
  INFO(text);
  CHECK(text.find("(reader): ") != std::string::npos);
  CHECK(has_chain_line(text, "read_forever"));
  pair.reset();
}

// docs/diagnostics.md, fault injection: `seed` is "the random streams'
// seed (default: from the clock)": an explicit seed=0 is kept, so that the
// run is reproducible.
TEST_CASE("MPG_FAULTS seed=0 is kept as given") {
  const mpg::detail::fault_config c = mpg::detail::faults_from_options("rate=0.5,seed=0");
  CHECK(c.rate == 0.5);
  CHECK(c.seed == 0);
}

namespace {

mpg::task<int> receive_one(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

// A task that runs block_on inside mpg::blocking, `depth` levels deep; the
// innermost block_on runs a task that waits on c for ever.
mpg::task<int> block_on_in_blocking(mpg::runtime* rt, mpg::chan<int> c, int depth) {
  // Named, not a temporary of the co_await's full-expression: it holds a
  // chan, and g++ 12 may destroy such a temporary twice (README).
  auto call = [rt, c, depth] {
    if (depth == 0) return rt->block_on(receive_one(c));
    return rt->block_on(block_on_in_blocking(rt, c, depth - 1));
  };
  co_return co_await mpg::blocking(call);
}

}  // namespace

// docs/diagnostics.md, "Deadlock detection": a call inside mpg::blocking
// that waits in a block_on is no possible wake-up. Two levels deep, each
// level's call waits in a block_on: the innermost task's deadlock is
// reported, and the outer block_on (from a plain thread) gets it.
TEST_CASE("a deadlock under two nested block_on-in-blocking levels is reported") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c;
  std::atomic<int> outcome{0};  // 1: deadlock_error, 2: a value
  std::thread main_thread([&] {
    try {
      (void)rt.block_on(block_on_in_blocking(&rt, c, 1));
      outcome.store(2);
    } catch (const mpg::deadlock_error&) {
      outcome.store(1);
    }
  });
  const bool ended = mpg_test::wait_until([&] { return outcome.load() != 0; }, 10s);
  CHECK(ended);
  if (!ended) {
    (void)c.try_send(1);  // lets the hung chain return
    REQUIRE(mpg_test::wait_until([&] { return outcome.load() != 0; }, 10s));
  }
  main_thread.join();
  CHECK(outcome.load() == 1);
}

namespace {

// Two plain threads dump at once: each posts its first hold, and neither
// posts its second before both firsts hold a P (the hook runs just before
// each post).
thread_local int t_posts = 0;
std::atomic<int> g_second_posts{0};
void hold_second_post() {
  if (++t_posts != 2) return;
  g_second_posts.fetch_add(1);
  // Bounded: past the stop's 2 s, a dumper whose first hold never came
  // has given up and posts no second.
  (void)mpg_test::wait_until([] { return g_second_posts.load() >= 2; }, 3s);
}

mpg::task<void> wait_here(mpg::chan<int> c) { (void)co_await c.recv(); }

}  // namespace

// docs/diagnostics.md: dumps made at once take turns (inspect.cpp,
// stw_mu_). Two dumps from plain threads (a dump_signal dump and a deadlock
// report, say) that each got a first P would otherwise wait 2 s for each
// other's and both come out without chains.
TEST_CASE("two dumps from plain threads at once both have their chains") {
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c;
  rt.go(wait_here(c), "waiter");
  REQUIRE(mpg_test::wait_until([&] {
    std::ostringstream os;
    rt.dump(os);
    return os.str().find("chan receive") != std::string::npos;
  }));
  mpg::detail::test_post_entered_hook.store(&hold_second_post);
  std::string a, b;
  std::thread ta([&] {
    std::ostringstream os;
    rt.dump(os);
    a = os.str();
  });
  std::thread tb([&] {
    std::ostringstream os;
    rt.dump(os);
    b = os.str();
  });
  ta.join();
  tb.join();
  mpg::detail::test_post_entered_hook.store(nullptr);
  INFO(a);
  INFO(b);
  CHECK(has_chain_line(a, "wait_here"));
  CHECK(has_chain_line(b, "wait_here"));
  c.close();
}

// A task's dump() stops the world; sysmon sees the task's P stuck in it
// after a period, and would run its timers and reap its ring, changing the
// parked Gs whose chains the dump reads. It leaves them alone until the
// dump is written. The dump's first write, made while the world is stopped,
// arms a timer of the task's P due in 2 ms and waits (bounded) for it to
// fire. Armed there, the timer falls due only inside the stop: one armed
// before the dump could be fired by sysmon before the stop began, whenever
// the task's thread lost its CPU for a few ms on its way to the dump.
namespace {
struct timer_watching_buf : std::streambuf {
  std::optional<std::pair<mpg::context, mpg::cancel_func>> timeout;
  bool looked = false;
  bool fired_during = false;
  int overflow(int c) override {
    look();
    return c;
  }
  std::streamsize xsputn(const char*, std::streamsize n) override {
    look();
    return n;
  }
  void look() {
    if (looked) return;
    looked = true;
    timeout.emplace(mpg::with_timeout(mpg::background(), std::chrono::milliseconds(2)));
    const mpg::context& ctx = timeout->first;
    // Bounded: far past the timer's 2 ms and sysmon's 1 ms period.
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (!ctx.cancelled() && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    fired_during = ctx.cancelled();
  }
};
}  // namespace

TEST_CASE("a task's dump: sysmon fires no timer of the task's P while the dump is written") {
  mpg::runtime rt({.procs = 1});
  rt.block_on([](mpg::runtime& rt) -> mpg::task<void> {
    timer_watching_buf buf;
    std::ostream os(&buf);
    rt.dump(os);
    REQUIRE(buf.looked);
    CHECK_FALSE(buf.fired_during);
    // After the dump the timer fires as usual.
    const mpg::context& ctx = buf.timeout->first;
    co_await ctx.done().recv();
    CHECK(ctx.cancelled());
  }(rt));
}

// A task's dump() while a plain thread's dump is gathering the Ps. The
// plain thread's stop holds one P and needs the task's; the task, holding
// its P, waited up to 2 s for the plain thread's stop to end (inspect.cpp,
// stw_mu_), so both waited 2 s for each other: the whole runtime stood
// still for 2 s and both dumps came out without chains. The hook runs
// before each post: at the plain thread's second, its first hold holds the
// other P, and only the task's P is left.
namespace {
std::atomic<int> g_gather_posts{0};
std::atomic<bool> g_gathering{false};
void note_gathering() {
  if (g_gather_posts.fetch_add(1) == 1) g_gathering.store(true);
}

struct task_dump_result {
  std::atomic<bool> spinning{false};
  std::string text;
  long long ms = -1;
};

mpg::task<void> dump_when_gathering(const mpg::runtime* rt, task_dump_result* r) {
  r->spinning.store(true);
  // Holds its P without suspending (bounded) until the other stop gathers.
  (void)mpg_test::wait_until([] { return g_gathering.load(); }, 10s);
  const auto t0 = std::chrono::steady_clock::now();
  std::ostringstream os;
  rt->dump(os);
  r->ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  r->text = os.str();
  co_return;
}
}  // namespace

TEST_CASE("a task's dump while a plain thread's dump gathers the Ps stalls neither") {
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c;
  rt.go(receive_forever(c), "waiter");
  REQUIRE(mpg_test::wait_until([&] {
    std::ostringstream os;
    rt.dump(os);
    return has_chain_line(os.str(), "receive_forever");
  }));
  task_dump_result r;
  auto h = rt.spawn(dump_when_gathering(&rt, &r), "task dumper");
  REQUIRE(mpg_test::wait_until([&] { return r.spinning.load(); }));
  mpg::detail::test_post_entered_hook.store(&note_gathering);
  const auto t0 = std::chrono::steady_clock::now();
  std::ostringstream os;
  rt.dump(os);
  const auto plain_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  rt.block_on(std::move(h));
  mpg::detail::test_post_entered_hook.store(nullptr);
  CHECK(g_gathering.load());
  INFO(os.str());
  INFO(r.text);
  CHECK(has_chain_line(os.str(), "receive_forever"));
  CHECK(plain_ms < 1000);
  CHECK(r.ms < 1000);
  c.close();
}
