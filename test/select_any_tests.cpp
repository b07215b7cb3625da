// test/select_any_tests.cpp: select over events other than channel
// operations: join handles, oneshot receivers, wait_group::wait() and a
// context's done() channel, alone and mixed with channel cases. Each kind
// ready and waiting; the choice among ready cases of every kind uniform;
// a case that loses takes nothing (a join handle stays unjoined, a
// wait_group's waiter count stays right); completions racing the select
// from other tasks and plain threads (run under TSan); a select parked on a
// join killed at shutdown (ASan).
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <array>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using mpg_test::yield_some;

constexpr int kScale = mpg_test::kSanitized ? 1 : 4;

mpg::task<int> value_after(mpg::chan<int> gate, int v) {
  (void)co_await gate.recv();
  co_return v;
}

mpg::task<int> value_now(int v) { co_return v; }

// -- Join cases --------------------------------------------------------------

mpg::task<std::string> join_ready_and_waiting() {
  // Ready: the task has finished.
  mpg::join_handle<int> h = mpg::spawn(value_now(7));
  while (!h.done()) co_await mpg::yield();
  mpg::chan<int> never;
  auto r = co_await mpg::select(never.recv(), h);
  if (r.index() != 1 || std::get<1>(r) != 7) co_return "ready join not chosen";
  if (h.valid()) co_return "a winning join case left the handle joinable";

  // Waiting: the select parks, the task's completion wakes it.
  mpg::chan<int> gate;
  mpg::join_handle<int> w = mpg::spawn(value_after(gate, 11));
  mpg::chan<int> other;
  auto sel = mpg::spawn([](mpg::join_handle<int>& w, mpg::chan<int> other) -> mpg::task<int> {
    auto r = co_await mpg::select(other.recv(), w.join());
    co_return r.index() == 1 ? std::get<1>(r) : -1;
  }(w, other));
  co_await yield_some(20);
  co_await gate.send(0);
  if (co_await sel != 11) co_return "waiting join case not woken with the result";
  // The losing channel case is gone from `other`.
  if (other.try_send(1)) co_return "losing recv case still queued";
  co_return "ok";
}

TEST_CASE("a join case: ready without waiting, or woken by the task's completion") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(join_ready_and_waiting()) == "ok");
}

mpg::task<std::string> join_loser_takes_nothing() {
  // Both ready: whichever loses keeps what it had.
  int join_wins = 0, chan_wins = 0;
  for (int i = 0; i < 200; ++i) {
    mpg::join_handle<int> h = mpg::spawn(value_now(i));
    while (!h.done()) co_await mpg::yield();
    mpg::chan<int> ch(1);
    co_await ch.send(-i);
    auto r = co_await mpg::select(h, ch.recv());
    if (r.index() == 0) {
      ++join_wins;
      if (std::get<0>(r) != i) co_return "wrong join result";
      if (ch.try_recv() != -i) co_return "the losing recv case took the value";
    } else {
      ++chan_wins;
      if (std::get<1>(r) != -i) co_return "wrong channel value";
      if (!h.valid()) co_return "the losing join case consumed the handle";
      if (co_await h != i) co_return "the unjoined handle lost its result";
    }
  }
  if (join_wins == 0 || chan_wins == 0) co_return "one side never won";
  // Waiting, and another case wins: the handle stays unjoined and the task
  // finishes later without waking anyone.
  mpg::chan<int> gate, ch;
  mpg::join_handle<int> h = mpg::spawn(value_after(gate, 5));
  auto sel = mpg::spawn([](mpg::join_handle<int>& h, mpg::chan<int> ch) -> mpg::task<int> {
    auto r = co_await mpg::select(h, ch.recv());
    co_return static_cast<int>(r.index());
  }(h, ch));
  co_await yield_some(20);
  co_await ch.send(1);
  if (co_await sel != 1) co_return "channel case did not win";
  co_await gate.send(0);
  if (co_await h != 5) co_return "the handle of a losing join case lost its result";
  co_return "ok";
}

TEST_CASE(
    "a join case that loses leaves the handle unjoined; a recv case that loses takes nothing") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(join_loser_takes_nothing()) == "ok");
}

mpg::task<void> fail_after(mpg::chan<int> gate) {
  (void)co_await gate.recv();
  throw std::runtime_error("boom");
}
mpg::task<void> nothing_after(mpg::chan<int> gate) { (void)co_await gate.recv(); }

mpg::task<std::string> join_void_and_exceptions() {
  mpg::chan<int> gate, gate2, never;
  mpg::join_handle<void> v = mpg::spawn(nothing_after(gate));
  co_await gate.send(0);
  auto r = co_await mpg::select(never.recv(), v);
  if (r.index() != 1) co_return "void join case not chosen";
  static_assert(std::is_same_v<std::variant_alternative_t<1, decltype(r)>, std::monostate>);
  mpg::join_handle<void> f = mpg::spawn(fail_after(gate2));
  auto sel = mpg::spawn([](mpg::join_handle<void>& f, mpg::chan<int> never) -> mpg::task<int> {
    try {
      (void)co_await mpg::select(never.recv(), f);
    } catch (const std::runtime_error&) {
      co_return 1;
    }
    co_return 0;
  }(f, never));
  co_await yield_some(10);
  co_await gate2.send(0);
  if (co_await sel != 1) co_return "the task's exception was not rethrown by the select";
  co_return "ok";
}

TEST_CASE("a join case of task<void> gives monostate; a failed task's exception is rethrown") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(join_void_and_exceptions()) == "ok");
}

mpg::task<std::string> two_joins() {
  // Two joins in one select (only lock-free cases): the first to finish
  // wins, the other stays joinable.
  mpg::chan<int> g1, g2;
  mpg::join_handle<int> a = mpg::spawn(value_after(g1, 1));
  mpg::join_handle<int> b = mpg::spawn(value_after(g2, 2));
  auto sel = mpg::spawn([](mpg::join_handle<int>& a, mpg::join_handle<int>& b) -> mpg::task<int> {
    auto r = co_await mpg::select(a, b);
    co_return r.index() == 0 ? std::get<0>(r) : 10 + std::get<1>(r);
  }(a, b));
  co_await yield_some(20);
  co_await g2.send(0);
  if (co_await sel != 12) co_return "the finished join did not win";
  co_await g1.send(0);
  if (co_await a != 1) co_return "the losing join lost its result";
  co_return "ok";
}

TEST_CASE("a select over two joins only") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(two_joins()) == "ok");
}

mpg::task<std::string> same_join_twice() {
  // The same running task named twice in one select (select.hpp: "the same
  // object more than once"): the second case finds the first one's waiter in
  // the join word, which is not the task's end. The select waits for the
  // task and takes its result once.
  mpg::chan<int> gate;
  mpg::join_handle<int> h = mpg::spawn(value_after(gate, 7));
  auto sel = mpg::spawn([](mpg::join_handle<int>& h) -> mpg::task<int> {
    auto r = co_await mpg::select(h, h.join());
    co_return r.index() == 0 ? std::get<0>(r) : 10 + std::get<1>(r);
  }(h));
  co_await yield_some(20);
  if (sel.done()) co_return "the select did not wait for the task";
  co_await gate.send(0);
  const int got = co_await sel;
  if (got != 7 && got != 17) co_return "wrong result: " + std::to_string(got);
  if (h.valid()) co_return "the handle was not joined";
  co_return "ok";
}

TEST_CASE("a select naming one running task twice waits for it and joins it once") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(same_join_twice()) == "ok");
}

// -- wait_group and context cases -------------------------------------------

mpg::task<std::string> wait_group_cases() {
  mpg::wait_group wg;
  mpg::chan<int> never;
  // Ready: zero counter.
  auto r0 = co_await mpg::select(never.recv(), wg.wait());
  if (r0.index() != 1) co_return "zero wait_group not ready";
  // Not ready: default.
  wg.add(1);
  auto r1 = co_await mpg::select(wg.wait(), mpg::default_case);
  if (r1.index() != 1) co_return "non-zero wait_group was ready";
  // Waiting, woken by done().
  auto sel = mpg::spawn([](mpg::wait_group& wg, mpg::chan<int> never) -> mpg::task<int> {
    auto r = co_await mpg::select(never.recv(), wg.wait());
    co_return static_cast<int>(r.index());
  }(wg, never));
  co_await yield_some(20);
  wg.done();
  if (co_await sel != 1) co_return "waiting wait_group case not woken";
  // Waiting, and a channel case wins: the wait_group case is taken off and
  // its waiter count undone, so the next round's zero wakes only real
  // waiters and a plain wait still works.
  wg.add(1);
  mpg::chan<int> ch;
  auto sel2 = mpg::spawn([](mpg::wait_group& wg, mpg::chan<int> ch) -> mpg::task<int> {
    auto r = co_await mpg::select(ch.recv(), wg.wait());
    co_return static_cast<int>(r.index());
  }(wg, ch));
  co_await yield_some(20);
  co_await ch.send(3);
  if (co_await sel2 != 0) co_return "channel case did not win";
  auto plain = mpg::spawn([](mpg::wait_group& wg) -> mpg::task<int> {
    co_await wg.wait();
    co_return 1;
  }(wg));
  co_await yield_some(20);
  wg.done();
  if (co_await plain != 1) co_return "plain wait after a lost select case";
  if (wg.count() != 0) co_return "counter";
  co_return "ok";
}

TEST_CASE(
    "a wait_group case: ready at zero, woken by the done() that reaches zero, taken off when it "
    "loses") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(wait_group_cases()) == "ok");
}

mpg::task<std::string> context_cases() {
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  mpg::chan<int> work;
  auto r0 = co_await mpg::select(work.recv(), ctx.done().recv(), mpg::default_case);
  if (r0.index() != 2) co_return "live context was ready";
  auto sel = mpg::spawn([](mpg::context ctx, mpg::chan<int> work) -> mpg::task<int> {
    auto r = co_await mpg::select(work.recv(), ctx.done().recv());
    if (r.index() != 1 || std::get<1>(r).has_value()) co_return -1;
    co_return ctx.err().code() == absl::StatusCode::kCancelled ? 1 : -2;
  }(ctx, work));
  co_await yield_some(20);
  cancel();
  if (co_await sel != 1) co_return "cancel did not wake the done() case";
  auto r1 = co_await mpg::select(work.recv(), ctx.done().recv());
  if (r1.index() != 1) co_return "cancelled context not ready";
  co_return "ok";
}

TEST_CASE("ctx.done().recv() as a case: ready once cancelled, woken by cancel()") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(context_cases()) == "ok");
}

mpg::task<std::string> oneshot_and_join_mixed() {
  auto [tx, rx] = mpg::oneshot<int>();
  mpg::chan<int> gate;
  mpg::join_handle<int> h = mpg::spawn(value_after(gate, 4));
  std::thread th;
  auto sel = mpg::spawn([](mpg::oneshot_receiver<int>& rx,
                           mpg::join_handle<int>& h) -> mpg::task<int> {
    auto r = co_await mpg::select(h, rx);
    co_return r.index() == 0 ? std::get<0>(r) : (std::get<1>(r).ok() ? 100 + *std::get<1>(r) : -1);
  }(rx, h));
  co_await yield_some(20);
  th = std::thread([tx = std::move(tx)]() mutable { tx.send(9); });
  const int got = co_await sel;
  co_await mpg::blocking([&] { th.join(); });
  if (got != 109) co_return "the oneshot sent from a thread did not win: " + std::to_string(got);
  co_await gate.send(0);
  if (co_await h != 4) co_return "losing join";
  co_return "ok";
}

TEST_CASE("a oneshot sent from a plain thread wakes a select that also waits on a join") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(oneshot_and_join_mixed()) == "ok");
}

// -- Fairness ----------------------------------------------------------------

mpg::task<std::string> fairness_across_kinds() {
  // Six ready cases of six kinds; none is used up by winning except the
  // join (re-spawned) and the channel value (re-sent).
  constexpr int kRounds = 6000;
  std::array<int, 6> wins{};
  mpg::wait_group wg;                               // zero: ready
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  cancel();                                         // done() closed: ready
  auto [tx, rx] = mpg::oneshot<int>();
  tx.send(1);                                       // ready (then kFailedPrecondition: still ready)
  mpg::chan<int> closed;
  closed.close();                                   // recv: nullopt, ready
  mpg::chan<int> buf(1);
  co_await buf.send(0);
  mpg::join_handle<int> h = mpg::spawn(value_now(0));
  for (int i = 0; i < kRounds; ++i) {
    while (!h.done()) co_await mpg::yield();
    auto r = co_await mpg::select(wg.wait(), ctx.done().recv(), rx, closed.recv(), buf.recv(), h);
    ++wins[r.index()];
    if (r.index() == 4) co_await buf.send(0);
    if (r.index() == 5) h = mpg::spawn(value_now(0));
  }
  // Expected 1000 each; the standard deviation is about 29: [820, 1180] is
  // beyond six of them.
  for (std::size_t k = 0; k < wins.size(); ++k)
    if (wins[k] < 820 || wins[k] > 1180)
      co_return "case " + std::to_string(k) + " won " + std::to_string(wins[k]) + " times";
  co_return "ok";
}

TEST_CASE("fairness: a uniform choice among ready cases of every kind") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(fairness_across_kinds()) == "ok");
}

// -- Races -------------------------------------------------------------------

// Two tasks released by one close finish concurrently on different Ps;
// a select on both joins and a wait_group that both done(): exactly one
// case wins, each handle that lost still gives its result.
mpg::task<std::string> racing_joins(int rounds) {
  for (int i = 0; i < rounds; ++i) {
    mpg::chan<int> gate;
    mpg::wait_group wg;
    wg.add(2);
    auto worker = [](mpg::chan<int> gate, mpg::wait_group& wg, int v) -> mpg::task<int> {
      (void)co_await gate.recv();
      wg.done();
      co_return v;
    };
    mpg::join_handle<int> a = mpg::spawn(worker(gate, wg, 1));
    mpg::join_handle<int> b = mpg::spawn(worker(gate, wg, 2));
    if (i % 2 == 0) co_await yield_some(2);
    gate.close();
    auto r = co_await mpg::select(a, wg.wait(), b);
    int sum = 0;
    switch (r.index()) {
      case 0:
        sum = std::get<0>(r) + co_await b;
        break;
      case 1:
        sum = co_await a + co_await b;
        break;
      default:
        sum = std::get<2>(r) + co_await a;
    }
    if (sum != 3) co_return "a result was lost: " + std::to_string(sum);
    co_await wg.wait();
  }
  co_return "ok";
}

TEST_CASE("race: joins and a wait_group completing concurrently with the select (TSan)") {
  mpg::runtime rt({.procs = 4});
  CHECK(rt.block_on(racing_joins(1500 * kScale)) == "ok");
}

// Many selects, each on a join and a channel; the task and a sender race.
mpg::task<std::string> racing_join_and_send(int rounds) {
  int join_wins = 0, chan_wins = 0;
  for (int i = 0; i < rounds; ++i) {
    mpg::chan<int> ch(1);
    mpg::join_handle<int> h = mpg::spawn(value_now(i));
    auto sender = mpg::spawn([](mpg::chan<int> ch, int i) -> mpg::task<void> {
      co_await ch.send(i);
    }(ch, i));
    auto r = co_await mpg::select(ch.recv(), h);
    if (r.index() == 0) {
      ++chan_wins;
      if (co_await h != i) co_return "join lost its result";
    } else {
      ++join_wins;
      if (std::get<1>(r) != i) co_return "join result";
      if (co_await ch.recv() != i) co_return "the value was lost";
    }
    co_await sender;
  }
  if (join_wins + chan_wins != rounds) co_return "count";
  co_return "ok";
}

TEST_CASE("race: a join and a send completing concurrently with the select (TSan)") {
  mpg::runtime rt({.procs = 4});
  CHECK(rt.block_on(racing_join_and_send(2000 * kScale)) == "ok");
}

// Plain threads complete a wait_group and a oneshot while a task finishes
// on another P, all racing one select per round; the events that lost are
// then awaited directly, so each round checks that exactly one case won and
// the others kept their event.
mpg::task<std::string> racing_threads(int rounds, std::atomic<int>* round,
                                      mpg::oneshot_sender<int>* senders,
                                      mpg::wait_group* wg) {
  std::array<int, 3> wins{};
  for (int i = 0; i < rounds; ++i) {
    auto [tx, rx] = mpg::oneshot<int>();
    senders[i] = std::move(tx);
    wg->add(2);
    mpg::chan<int> gate;
    mpg::join_handle<int> h = mpg::spawn(value_after(gate, i));
    // Release: the threads read senders[i] and use *wg after seeing it.
    round->store(i + 1, std::memory_order_release);
    gate.close();
    auto r = co_await mpg::select(wg->wait(), rx, h);
    ++wins[r.index()];
    if (r.index() != 0) co_await wg->wait();
    if (r.index() != 1) {
      absl::StatusOr<int> v = co_await rx;
      if (!v.ok() || *v != i) co_return "oneshot value lost";
    } else if (!std::get<1>(r).ok() || *std::get<1>(r) != i) {
      co_return "oneshot value";
    }
    if (r.index() != 2) {
      if (co_await h != i) co_return "join result lost";
    } else if (std::get<2>(r) != i) {
      co_return "join result";
    }
  }
  co_return "ok";
}

TEST_CASE("race: wait_group done() and a oneshot send from plain threads against a join (TSan)") {
  constexpr int kRounds = 400 * kScale;
  std::atomic<int> round{0};
  std::vector<mpg::oneshot_sender<int>> senders;
  for (int i = 0; i < kRounds; ++i) senders.push_back(mpg::oneshot<int>().first);
  mpg::wait_group wg;
  auto worker = [&](bool sends) {
    for (int i = 1; i <= kRounds; ++i) {
      while (round.load(std::memory_order_acquire) < i) std::this_thread::yield();
      if (sends) senders[i - 1].send(i - 1);
      wg.done();
    }
  };
  std::thread t1(worker, true), t2(worker, false);
  {
    mpg::runtime rt({.procs = 2});
    // The plain threads' done() calls are wake-ups from outside the runtime,
    // which block_on's deadlock check counts only through a guard: without
    // one, the wg.wait() after a round that the oneshot or the join won
    // (no live sender left) threw deadlock_error whenever the threads were
    // kept off the CPUs for the check's looks on a loaded machine.
    mpg::external_work outside(rt.handle());
    CHECK(rt.block_on(racing_threads(kRounds, &round, senders.data(), &wg)) == "ok");
  }
  t1.join();
  t2.join();
}

// -- The arming phase, deterministically --------------------------------------

// These tests also guard fastrand.hpp's out-of-line draw: clang inlines the
// select's await_suspend into their loops, and with an inlined generator
// it kept the address of the first thread's thread_local state in the
// coroutine frame across suspensions, so a later select, resumed on
// another M, wrote that M's state while it drew from it (TSan: a data race
// on "TLS of thread T<n>", 8 runs in 10 before the fix).
//
// arming_probe: a lock-free case written against select.hpp's contract
// (public hooks), which stands in for a waker that acts while the select is
// still queueing its cases. mode::claim: its sel_enqueue queues it and then
// claims the select, as a join whose task finishes during arming does;
// mode::late: its sel_enqueue reports it ready instead of queueing, as a
// join whose task finished between the poll and the queueing does.
struct arming_probe : mpg::detail::waiter {
  enum class mode { claim, late };
  using result_type = int;

  arming_probe(mode m, int value) : m(m), value(value) {}

  std::nullptr_t sel_lock() const noexcept { return nullptr; }
  bool sel_poll(mpg::detail::g*&) noexcept { return false; }
  bool sel_enqueue(mpg::detail::select_state* st) noexcept {
    if (m == mode::late) return false;
    set_select(st);
    queued = true;
    claimed = st->claim(this);
    return true;
  }
  void sel_dequeue() noexcept { queued = false; }
  mpg::detail::waiter* sel_node() noexcept { return this; }
  int sel_result() noexcept { return value; }
  std::source_location sel_where() const noexcept { return std::source_location::current(); }

  mode m;
  int value;
  bool queued = false;
  // The probe never readies the select: had its claim found kOpen (won),
  // the select would sleep for good and block_on report a deadlock.
  mpg::detail::select_state::claim_result claimed = mpg::detail::select_state::claim_result::lost;
};

mpg::task<std::string> arming_decided(arming_probe::mode m, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    mpg::chan<int> a, gate;
    mpg::wait_group wg;
    wg.add(1);
    mpg::join_handle<int> h = mpg::spawn(value_after(gate, 6));
    auto r = co_await mpg::select(a.recv(), h, arming_probe(m, 42), wg.wait());
    if (r.index() != 2 || std::get<2>(r) != 42) co_return "the probe did not win";
    // Every other case was taken off again: a has no receiver, the handle
    // is joinable, the wait_group counts no waiter (a plain waiter is woken
    // by the next done()).
    if (a.try_send(1)) co_return "a recv case stayed queued";
    if (!h.valid() || h.done()) co_return "join case";
    auto plain = mpg::spawn([](mpg::wait_group& wg) -> mpg::task<int> {
      co_await wg.wait();
      co_return 1;
    }(wg));
    co_await yield_some(3);
    wg.done();
    if (co_await plain != 1) co_return "wait_group";
    co_await gate.send(0);
    if (co_await h != 6) co_return "the join case's handle lost its result";
  }
  co_return "ok";
}

TEST_CASE(
    "arming: a claim made while the select queues its cases wins without parking, the rest are "
    "taken off") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(arming_decided(arming_probe::mode::claim, 100)) == "ok");
}

TEST_CASE(
    "arming: a case that becomes ready while queued wins without parking, the rest are taken off") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(arming_decided(arming_probe::mode::late, 100)) == "ok");
}

mpg::task<std::string> claim_against_late(int rounds) {
  // Both in one select: whichever sel_enqueue runs first decides. The claim
  // first: it wins and the late case loses its own claim (taking nothing).
  // The late case first: it wins and the queueing stops there.
  int claim_first = 0, late_first = 0;
  for (int i = 0; i < rounds; ++i) {
    mpg::chan<int> a;
    auto r = co_await mpg::select(a.recv(), arming_probe(arming_probe::mode::claim, 1),
                                  arming_probe(arming_probe::mode::late, 2));
    if (r.index() == 1) {
      ++claim_first;
      if (std::get<1>(r) != 1) co_return "value";
    } else if (r.index() == 2) {
      ++late_first;
      if (std::get<2>(r) != 2) co_return "value";
    } else {
      co_return "the empty channel won";
    }
    if (a.try_send(1)) co_return "a recv case stayed queued";
  }
  if (claim_first == 0 || late_first == 0) co_return "one order never happened";
  co_return "ok";
}

TEST_CASE("arming: a claim and a late case in one select: one winner, by queueing order") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(claim_against_late(200)) == "ok");
}

// -- Shutdown ----------------------------------------------------------------

TEST_CASE("a select parked on a join, killed at shutdown, leaves nothing behind (ASan)") {
  mpg::chan<int> gate;
  {
    mpg::runtime rt({.procs = 2});
    rt.block_on([](mpg::chan<int> gate) -> mpg::task<void> {
      mpg::go([](mpg::chan<int> gate) -> mpg::task<void> {
        mpg::join_handle<int> h = mpg::spawn(value_after(gate, 1));
        mpg::wait_group wg;
        wg.add(1);
        (void)co_await mpg::select(h, wg.wait(), gate.recv());
      }(gate));
      co_await yield_some(20);
    }(gate));
    CHECK(mpg_test::dump_shows(rt, "select"));
  }
}

}  // namespace
