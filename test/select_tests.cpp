// test/select_tests.cpp: mpg::select against Go's select semantics (the
// select parts of Go's chan_test.go and select tests): ready cases win
// without waiting, default only when nothing is ready, duplicate channels,
// send and receive cases on one channel, closed channels (recv: nullopt;
// send: throws when chosen), results as a variant by index even for equal
// types; uniform fairness over 100,000 selections; no value lost or
// duplicated by losing cases against steady producers; a stress mixing
// plain and select senders and receivers on four channels.
#include <doctest/doctest.h>

#include "test_support.hpp"
#include "watchdog.hpp"

#include <mpg/mpg.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr int kScale = mpg_test::kSanitized ? 1 : 4;

using mpg_test::yield_some;

// -- Basics -----------------------------------------------------------------

mpg::task<std::string> ready_case_wins() {
  mpg::chan<int> a(1), b(1);
  mpg::chan<std::string> s(1);
  co_await b.send(5);
  auto r = co_await mpg::select(a.recv(), b.recv(), s.recv());
  if (r.index() != 1) co_return "wrong case";
  if (std::get<1>(r) != 5) co_return "wrong value";
  // A send case with room wins.
  auto r2 = co_await mpg::select(a.recv(), s.send("hi"));
  if (r2.index() != 1) co_return "send case not chosen";
  if (s.try_recv() != "hi") co_return "sent value missing";
  co_return "ok";
}

TEST_CASE("select takes a ready case without waiting") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(ready_case_wins()) == "ok");
}

mpg::task<std::string> default_case_behaviour() {
  mpg::chan<int> a, b(1), full(1);
  co_await full.send(1);
  // Nothing ready: default (never waits).
  auto r = co_await mpg::select(a.recv(), full.send(2), mpg::default_case);
  if (r.index() != 2) co_return "default not chosen when nothing is ready";
  // default first in the list works too.
  auto r1 = co_await mpg::select(mpg::default_case, a.recv());
  if (r1.index() != 0) co_return "leading default not chosen";
  // Something ready: never default.
  co_await b.send(9);
  auto r2 = co_await mpg::select(a.recv(), b.recv(), mpg::default_case);
  if (r2.index() != 1 || std::get<1>(r2) != 9) co_return "default chosen over a ready case";
  // Only a default.
  auto r3 = co_await mpg::select(mpg::default_case);
  if (r3.index() != 0) co_return "lone default";
  // The value of a losing send case stays with nobody: the full channel
  // still holds only its first value.
  if (full.size() != 1 || full.try_recv() != 1) co_return "losing send case delivered";
  co_return "ok";
}

TEST_CASE("default case wins only when no other case is ready") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(default_case_behaviour()) == "ok");
}

mpg::task<std::string> equal_types_by_index() {
  mpg::chan<int> a(1), b(1);
  co_await a.send(1);
  auto r = co_await mpg::select(b.recv(), a.recv());
  using R = decltype(r);
  static_assert(std::is_same_v<R, std::variant<std::optional<int>, std::optional<int>>>);
  if (r.index() != 1 || std::get<1>(r) != 1) co_return "index lost for equal types";
  auto r2 = co_await mpg::select(a.send(3), b.send(4));
  static_assert(std::is_same_v<decltype(r2), std::variant<std::monostate, std::monostate>>);
  if (r2.index() == 0 ? a.try_recv() != 3 : b.try_recv() != 4) co_return "send index mismatch";
  co_return "ok";
}

TEST_CASE("result alternatives are by case index, also for equal types") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(equal_types_by_index()) == "ok");
}

// A select that has to wait: woken by a send, a receive, or a close.
mpg::task<std::string> parked_select_woken(int how) {
  mpg::chan<int> a, b, c;
  auto h = mpg::spawn([](mpg::chan<int> a, mpg::chan<int> b, mpg::chan<int> c)
                          -> mpg::task<std::string> {
    auto r = co_await mpg::select(a.recv(), b.send(77), c.recv());
    co_return std::to_string(r.index()) + ":" +
        (r.index() == 0 ? std::to_string(std::get<0>(r).value_or(-1))
         : r.index() == 2 ? (std::get<2>(r) ? "value" : "closed")
                          : "sent");
  }(a, b, c));
  co_await yield_some(20);
  std::string want;
  switch (how) {
    case 0:
      co_await a.send(5);
      want = "0:5";
      break;
    case 1: {
      std::optional<int> v = co_await b.recv();
      if (v != 77) co_return "receiver got the wrong value";
      want = "1:sent";
      break;
    }
    default:
      c.close();
      want = "2:closed";
  }
  std::string got = co_await h;
  if (got != want) co_return "got " + got + " want " + want;
  // The losing cases left nothing behind: a, b have no waiter any more.
  if (a.try_send(1) || b.try_recv()) co_return "a losing case is still queued";
  co_return "ok";
}

TEST_CASE(
    "a waiting select is woken by a send, a receive or a close, and dequeues its other cases") {
  mpg::runtime rt({.procs = 2});
  for (int how = 0; how < 3; ++how) {
    CAPTURE(how);
    CHECK(rt.block_on(parked_select_woken(how)) == "ok");
  }
}

mpg::task<std::string> closed_channel_cases() {
  mpg::chan<int> open, closed(2);
  co_await closed.send(1);
  closed.close();
  // recv on a closed channel: drains, then nullopt.
  auto r = co_await mpg::select(open.recv(), closed.recv());
  if (r.index() != 1 || std::get<1>(r) != 1) co_return "buffered value not drained";
  auto r2 = co_await mpg::select(open.recv(), closed.recv());
  if (r2.index() != 1 || std::get<1>(r2).has_value()) co_return "closed recv case not nullopt";
  // send on a closed channel throws when chosen (it is always ready).
  try {
    (void)co_await mpg::select(open.recv(), closed.send(3));
    co_return "send case on a closed channel did not throw";
  } catch (const mpg::closed_channel_error&) {
  }
  // A waiting send case woken by close throws too.
  mpg::chan<int> later;
  auto h = mpg::spawn([](mpg::chan<int> later, mpg::chan<int> open) -> mpg::task<int> {
    try {
      (void)co_await mpg::select(open.recv(), later.send(1));
    } catch (const mpg::closed_channel_error&) {
      co_return 1;
    }
    co_return 0;
  }(later, open));
  co_await yield_some(20);
  later.close();
  if (co_await h != 1) co_return "waiting send case not failed by close";
  co_return "ok";
}

TEST_CASE("closed channels: recv cases get nullopt, send cases throw when chosen") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(closed_channel_cases()) == "ok");
}

// Go's TestSelectDuplicateChannel: a select queued twice on c, then woken
// through d, must leave c's queue intact for the next receiver.
mpg::task<std::string> duplicate_channel() {
  mpg::chan<int> c, d, e;
  auto a = mpg::spawn([](mpg::chan<int> c, mpg::chan<int> d, mpg::chan<int> e) -> mpg::task<void> {
    (void)co_await mpg::select(c.recv(), c.recv(), d.recv());
    co_await e.send(9);
  }(c, d, e));
  co_await yield_some(20);
  auto b = mpg::spawn([](mpg::chan<int> c) -> mpg::task<int> {
    co_return (co_await c.recv()).value_or(-1);
  }(c));
  co_await yield_some(20);
  co_await d.send(7);        // wakes A, which dequeues itself from c twice
  (void)co_await e.recv();  // A is done
  co_await c.send(8);        // must reach B
  co_await a;
  if (co_await b != 8) co_return "c's queue corrupted";
  co_return "ok";
}

TEST_CASE("duplicate channels in one select (Go's TestSelectDuplicateChannel)") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(duplicate_channel()) == "ok");
}

// Go's TestSelfSelect: send and receive cases on the same channel, from two
// tasks; an unbuffered channel never delivers a task's value to itself.
mpg::task<int> self_select_worker(mpg::chan<int> c, int p, std::size_t cap) {
  int self_receives = 0;
  for (int i = 0; i < 1000; ++i) {
    if (p == 0 || i % 2 == 0) {
      auto r = co_await mpg::select(c.send(p), c.recv());
      if (r.index() == 1 && cap == 0 && std::get<1>(r) == p) ++self_receives;
    } else {
      auto r = co_await mpg::select(c.recv(), c.send(p));
      if (r.index() == 0 && cap == 0 && std::get<0>(r) == p) ++self_receives;
    }
  }
  co_return self_receives;
}

mpg::task<std::string> self_select(std::size_t cap) {
  mpg::chan<int> c(cap);
  auto a = mpg::spawn(self_select_worker(c, 0, cap));
  auto b = mpg::spawn(self_select_worker(c, 1, cap));
  int bad = co_await a + co_await b;
  co_return bad == 0 ? "ok" : "self receive";
}

TEST_CASE("send and receive cases on one channel (Go's TestSelfSelect)") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 10u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(self_select(cap)) == "ok");
  }
}

// Go's TestNonblockSelectRace: from the moment the select starts, one of c1
// and c2 is always ready, so default must never be chosen.
mpg::task<std::string> nonblock_select_race(bool close_c2) {
  mpg::chan<bool> done(1);
  for (int i = 0; i < 1000 * kScale; ++i) {
    mpg::chan<int> c1(1), c2(close_c2 ? 0 : 1);
    co_await c1.send(1);
    mpg::go([](mpg::chan<int> c1, mpg::chan<int> c2, mpg::chan<bool> done) -> mpg::task<void> {
      auto r = co_await mpg::select(c1.recv(), c2.recv(), mpg::default_case);
      co_await done.send(r.index() != 2);
    }(c1, c2, done));
    if (close_c2)
      c2.close();
    else
      co_await c2.send(1);
    (void)co_await mpg::select(c1.recv(), mpg::default_case);
    if (!*co_await done.recv()) co_return "default chosen while a case was ready";
  }
  co_return "ok";
}

TEST_CASE("select acts on one instant: default never chosen while a case is ready") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(nonblock_select_race(false)) == "ok");
  CHECK(rt.block_on(nonblock_select_race(true)) == "ok");
}

// -- Fairness -------------------------------------------------------------------

// Chi-square statistic of counts against the uniform distribution.
double chi_square(const std::vector<long>& counts) {
  long total = 0;
  for (long c : counts) total += c;
  const double expect = static_cast<double>(total) / static_cast<double>(counts.size());
  double x = 0;
  for (long c : counts)
    x += (static_cast<double>(c) - expect) * (static_cast<double>(c) - expect) / expect;
  return x;
}

mpg::task<std::vector<long>> fairness_two_ready(int n) {
  // Two always-ready channels: closed ones (recv never waits, never drains).
  mpg::chan<int> a, b;
  a.close();
  b.close();
  std::vector<long> counts(2);
  for (int i = 0; i < n; ++i) ++counts[(co_await mpg::select(a.recv(), b.recv())).index()];
  co_return counts;
}

mpg::task<std::vector<long>> fairness_buffered(int n) {
  // Four buffered channels kept non-empty (refilled after each win), plus a
  // case that is never ready.
  std::array<mpg::chan<int>, 4> c = {mpg::chan<int>(1), mpg::chan<int>(1), mpg::chan<int>(1),
                                     mpg::chan<int>(1)};
  mpg::chan<int> never;
  for (auto& ch : c) co_await ch.send(0);
  std::vector<long> counts(4);
  for (int i = 0; i < n; ++i) {
    auto r = co_await mpg::select(c[0].recv(), never.recv(), c[1].recv(), c[2].recv(), c[3].recv());
    const std::size_t k = r.index() == 0 ? 0 : r.index() - 1;
    if (r.index() == 1) co_return std::vector<long>{};  // impossible
    ++counts[k];
    co_await c[k].send(0);
  }
  co_return counts;
}

TEST_CASE("fairness: a uniformly random choice among ready cases (100,000 selections)") {
  mpg::runtime rt({.procs = 2});
  // chi-square, 1 degree of freedom: P(X > 15.1) = 1e-4.
  std::vector<long> two = rt.block_on(fairness_two_ready(100'000));
  CAPTURE(two[0]);
  CAPTURE(two[1]);
  CHECK(chi_square(two) < 15.1);
  // 3 degrees of freedom: P(X > 21.1) = 1e-4.
  std::vector<long> four = rt.block_on(fairness_buffered(100'000));
  REQUIRE(four.size() == 4);
  CAPTURE(four[0]);
  CAPTURE(four[1]);
  CAPTURE(four[2]);
  CAPTURE(four[3]);
  CHECK(chi_square(four) < 21.1);
}

// Go's TestPseudoRandomSend: a select over two sends to one receiver.
mpg::task<std::string> pseudo_random_send(std::size_t cap) {
  constexpr int n = 100;
  mpg::chan<int> c(cap);
  auto rx = mpg::spawn([](mpg::chan<int> c) -> mpg::task<std::vector<int>> {
    std::vector<int> l;
    for (int i = 0; i < n; ++i) {
      co_await mpg::yield();
      l.push_back(*co_await c.recv());
    }
    co_return l;
  }(c));
  for (int i = 0; i < n; ++i) (void)co_await mpg::select(c.send(1), c.send(0));
  std::vector<int> l = co_await rx;
  int ones = 0;
  for (int v : l) ones += v;
  if (ones <= n / 10 || n - ones <= n / 10)
    co_return "not pseudo-random: " + std::to_string(ones) + " ones";
  co_return "ok";
}

TEST_CASE("a select over two sends picks both (Go's TestPseudoRandomSend)") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 100u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(pseudo_random_send(cap)) == "ok");
  }
}

// -- No loss, no duplication -------------------------------------------------

// Producers feed a and b steadily; several consumers select over both (and
// a channel that never fires), another consumes a plainly. Every value must
// arrive exactly once: a select that loses on one channel takes nothing.
mpg::task<std::string> select_no_loss(std::size_t cap) {
  const int per = 5000 * kScale;
  mpg::chan<int> a(cap), b(cap), never;
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(2 * per));
  auto producer = [](mpg::chan<int> c, int from, int to) -> mpg::task<void> {
    for (int i = from; i < to; ++i) co_await c.send(i);
    c.close();
  };
  auto selecting = [](mpg::chan<int> a, mpg::chan<int> b, mpg::chan<int> never,
                      std::vector<std::atomic<int>>* seen) -> mpg::task<void> {
    bool a_open = true, b_open = true;
    while (a_open && b_open) {
      auto r = co_await mpg::select(a.recv(), never.recv(), b.recv());
      if (r.index() == 0) {
        if (auto v = std::get<0>(r)) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
        else a_open = false;
      } else if (r.index() == 2) {
        if (auto v = std::get<2>(r)) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
        else b_open = false;
      }
    }
    // Drain whichever is still open, plainly.
    mpg::chan<int> rest = a_open ? a : b;
    while (auto v = co_await rest.recv()) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
  };
  auto plain = [](mpg::chan<int> a, std::vector<std::atomic<int>>* seen) -> mpg::task<void> {
    while (auto v = co_await a.recv()) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
  };
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 3; ++i) hs.push_back(mpg::spawn(selecting(a, b, never, &seen)));
  hs.push_back(mpg::spawn(plain(a, &seen)));
  hs.push_back(mpg::spawn(producer(a, 0, per)));
  hs.push_back(mpg::spawn(producer(b, per, 2 * per)));
  for (auto& h : hs) co_await h;
  for (int i = 0; i < 2 * per; ++i) {
    const int n = seen[static_cast<std::size_t>(i)].load();
    if (n != 1)
      co_return "value " + std::to_string(i) + " received " + std::to_string(n) + " times";
  }
  co_return "ok";
}

TEST_CASE("select loses and duplicates nothing against steady producers") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 1u, 64u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(select_no_loss(cap)) == "ok");
  }
}

// Selecting senders against plain receivers: every value sent by a winning
// send case arrives exactly once; losing send cases deliver nothing.
mpg::task<std::string> select_send_no_loss() {
  const int n = 5000 * kScale;
  mpg::chan<int> a, b(3);
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
  auto rx = [](mpg::chan<int> c, std::vector<std::atomic<int>>* seen) -> mpg::task<void> {
    while (auto v = co_await c.recv()) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
  };
  auto ha = mpg::spawn(rx(a, &seen));
  auto hb = mpg::spawn(rx(b, &seen));
  for (int i = 0; i < n; ++i) (void)co_await mpg::select(a.send(i), b.send(i));
  a.close();
  b.close();
  co_await ha;
  co_await hb;
  for (int i = 0; i < n; ++i)
    if (seen[static_cast<std::size_t>(i)].load() != 1) co_return "value lost or duplicated";
  co_return "ok";
}

TEST_CASE("select send cases deliver each value exactly once") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(select_send_no_loss()) == "ok");
}

mpg::task<std::string> move_only_send_cases() {
  mpg::chan<std::unique_ptr<int>> a, b(1);
  // b has room and a has no receiver yet: b wins at once, a's value is
  // destroyed with the awaiter. (The receiver is spawned only after this
  // select: with 2 Ps it could otherwise be waiting on a already, and a
  // select picks at random among ready cases.)
  auto r = co_await mpg::select(a.send(std::make_unique<int>(1)), b.send(std::make_unique<int>(2)));
  if (r.index() != 1) co_return "b should win";
  auto h = mpg::spawn([](mpg::chan<std::unique_ptr<int>> a) -> mpg::task<int> {
    auto v = co_await a.recv();
    co_return v && *v ? **v : -1;
  }(a));
  // Now b is full: a's receiver takes the value.
  auto r2 =
      co_await mpg::select(a.send(std::make_unique<int>(3)), b.send(std::make_unique<int>(4)));
  if (r2.index() != 0) co_return "a should win";
  if (co_await h != 3) co_return "wrong value through a";
  auto v = b.try_recv();
  if (!v || **v != 2) co_return "b lost its value";
  co_return "ok";
}

TEST_CASE("move-only values in send cases: the loser's value is not lost into a channel") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(move_only_send_cases()) == "ok");
}

// -- Stress (Go's TestSelectStress, with never-ready channels for nil) ---------

mpg::task<std::string> select_stress() {
  const int n = 2000 * kScale;
  std::array<mpg::chan<int>, 4> c = {mpg::chan<int>(0), mpg::chan<int>(0), mpg::chan<int>(2),
                                     mpg::chan<int>(3)};
  std::vector<mpg::join_handle<void>> hs;
  for (int k = 0; k < 4; ++k) {
    hs.push_back(mpg::spawn([](mpg::chan<int> c, int n) -> mpg::task<void> {
      for (int i = 0; i < n; ++i) co_await c.send(0);
    }(c[static_cast<std::size_t>(k)], n)));
    hs.push_back(mpg::spawn([](mpg::chan<int> c, int n) -> mpg::task<void> {
      for (int i = 0; i < n; ++i) (void)co_await c.recv();
    }(c[static_cast<std::size_t>(k)], n)));
  }
  hs.push_back(mpg::spawn([](std::array<mpg::chan<int>, 4> c, int n) -> mpg::task<void> {
    std::array<int, 4> cnt{};
    mpg::chan<int> never;
    for (int i = 0; i < 4 * n; ++i) {
      auto r = co_await mpg::select(c[3].send(0), c[2].send(0), c[0].send(0), c[1].send(0));
      const std::size_t k = std::array<std::size_t, 4>{3, 2, 0, 1}[r.index()];
      if (++cnt[k] == n) c[k] = never;  // Go: c1[k] = nil
    }
  }(c, n)));
  hs.push_back(mpg::spawn([](std::array<mpg::chan<int>, 4> c, int n) -> mpg::task<void> {
    std::array<int, 4> cnt{};
    mpg::chan<int> never;
    for (int i = 0; i < 4 * n; ++i) {
      auto r = co_await mpg::select(c[0].recv(), c[1].recv(), c[2].recv(), c[3].recv());
      if (++cnt[r.index()] == n) c[r.index()] = never;
    }
  }(c, n)));
  for (auto& h : hs) co_await h;
  co_return "ok";
}

TEST_CASE("select stress: plain and select senders and receivers on four channels") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(select_stress()) == "ok");
}

// -- Timers as cases ---------------------------------------------------------------

mpg::task<std::string> timeout_case() {
  using namespace std::chrono_literals;
  mpg::chan<int> never;
  const auto start = std::chrono::steady_clock::now();
  auto r = co_await mpg::select(never.recv(), mpg::after(2ms).recv());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (r.index() != 1) co_return "timer case not chosen";
  if (!std::get<1>(r) || *std::get<1>(r) < start + 2ms) co_return "timer value too early";
  if (elapsed < 2ms) co_return "timer fired early";
  // A ready channel beats a pending timer; the timer is dropped unfired.
  mpg::chan<int> ready(1);
  co_await ready.send(1);
  auto r2 = co_await mpg::select(ready.recv(), mpg::after(1h).recv());
  if (r2.index() != 0) co_return "pending timer beat a ready channel";
  co_return "ok";
}

TEST_CASE("after() as a select case: fires no earlier than its deadline") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(timeout_case()) == "ok");
}

}  // namespace

// ~runtime kills the younger task first: its channel and wait group detach
// the select's waiters, its dropped receiver readies the select; then the
// select is killed. AddressSanitizer sees no use of the freed objects.
namespace {

// What a younger task owns in its frame and an older one selects on.
struct borrowed {
  mpg::chan<std::unique_ptr<int>>* ch = nullptr;
  mpg::oneshot_receiver<std::string>* rx = nullptr;
  mpg::oneshot_sender<std::string>* tx = nullptr;
  mpg::wait_group* wg = nullptr;
};

mpg::task<void> owner_of_objects(borrowed* b, mpg::chan<int> never) {
  mpg::chan<std::unique_ptr<int>> ch;  // unbuffered
  auto [tx, rx] = mpg::oneshot<std::string>();
  b->ch = &ch;
  b->rx = &rx;
  b->tx = &tx;
  mpg::wait_group wg;
  wg.add(1);
  b->wg = &wg;
  (void)co_await never.recv();  // parked until killed
}

mpg::task<void> older_selector(mpg::chan<int> never) {
  borrowed b;
  mpg::go(owner_of_objects(&b, never));  // younger: killed first, newest first
  while (b.ch == nullptr) co_await mpg::yield();
  mpg::chan<int> own;  // in this frame
  auto r = co_await mpg::select(b.ch->recv(), b.ch->send(std::make_unique<int>(1)), *b.rx,
                                own.recv(), own.send(2), never.recv(), b.wg->wait(),
                                *b.rx);
  (void)r;
}

}  // namespace

TEST_CASE("a select parked on a younger task's objects and on its own: both killed at shutdown") {
  mpg::chan<int> never;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on([](mpg::chan<int> never) -> mpg::task<void> {
      mpg::go(older_selector(never));
      co_await yield_some(20);
    }(never));
    CHECK(mpg_test::dump_shows(rt, "select"));
  }
}

// A select may name both ends of one channel: it never meets itself, and a
// close ends every select (a send case chosen on the closed channel throws,
// a recv case gets nullopt). Everything sent is received or drained.
namespace {

struct tally {
  std::atomic<long> sent{0}, sent_sum{0}, got{0}, got_sum{0}, closed_seen{0};
};

mpg::task<void> self_selector(mpg::chan<long> ch, tally* t, long base) {
  for (long i = 1;; ++i) {
    const long v = base + i;
    try {
      auto r = co_await mpg::select(ch.send(v), ch.recv());
      if (r.index() == 0) {
        t->sent.fetch_add(1);
        t->sent_sum.fetch_add(v);
      } else if (auto& o = std::get<1>(r); o.has_value()) {
        t->got.fetch_add(1);
        t->got_sum.fetch_add(*o);
      } else {
        t->closed_seen.fetch_add(1);
        co_return;
      }
    } catch (const mpg::closed_channel_error&) {
      t->closed_seen.fetch_add(1);
      co_return;
    }
  }
}
}  // namespace

TEST_CASE("selects sending and receiving on one channel race its close: nothing lost or doubled") {
  for (std::size_t cap : {std::size_t{0}, std::size_t{1}, std::size_t{3}}) {
    CAPTURE(cap);
    mpg::runtime rt({.procs = 2});
    mpg_test::watchdog dog(std::chrono::seconds(60), "self selects vs close", &rt);
    tally t;
    long drained = 0, drained_sum = 0;
    rt.block_on([](mpg::chan<long> ch, tally* t, long* dn, long* ds) -> mpg::task<void> {
      std::vector<mpg::join_handle<void>> hs;
      for (long k = 0; k < 6; ++k) hs.push_back(mpg::spawn(self_selector(ch, t, k << 40)));
      while (t->sent.load() + t->got.load() < 20000) co_await mpg::yield();
      ch.close();
      for (auto& h : hs) co_await h;
      while (auto v = ch.try_recv()) {  // what the ring still held
        ++*dn;
        *ds += *v;
      }
    }(mpg::chan<long>(cap), &t, &drained, &drained_sum));
    CHECK(t.sent.load() == t.got.load() + drained);
    CHECK(t.sent_sum.load() == t.got_sum.load() + drained_sum);
    CHECK(t.closed_seen.load() == 6);
  }
}
