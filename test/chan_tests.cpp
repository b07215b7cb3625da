// test/chan_tests.cpp: chan<T> against Go's channel semantics (the
// checklist of Go's runtime/chan_test.go): rendezvous on unbuffered
// channels, FIFO order and blocking on full buffers, close (drain, then
// nullopt; blocked senders throw; close twice throws), try_send/try_recv,
// size/capacity, move-only elements, handle sharing; and stress: MPMC where
// every item arrives exactly once, close racing sends and receives, the
// cooperative budget. Results are computed in tasks and checked here.
#include <doctest/doctest.h>

#include "test_support.hpp"

#include <mpg/mpg.hpp>

#include <algorithm>
#include <atomic>
#include <coroutine>
#include <exception>
#include <memory>
#include <optional>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kScale = mpg_test::kSanitized ? 1 : 4;

using mpg_test::yield_some;

mpg::task<void> send_one(mpg::chan<int> c, int v, std::atomic<bool>* sent) {
  co_await c.send(v);
  sent->store(true);
}

// -- Rendezvous -------------------------------------------------------------

mpg::task<std::string> unbuffered_rendezvous() {
  mpg::chan<int> c;  // capacity 0
  std::atomic<bool> sent{false};
  auto h = mpg::spawn(send_one(c, 42, &sent));
  co_await yield_some(20);
  if (sent.load()) co_return "send completed without a receiver";
  if (c.try_send(1)) co_return "try_send succeeded without a receiver";
  std::optional<int> v = co_await c.recv();
  co_await h;
  if (!sent.load()) co_return "sender not done after join";
  if (v != 42) co_return "wrong value";
  co_return "ok";
}

TEST_CASE("unbuffered send waits for a receiver and hands the value over") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(unbuffered_rendezvous()) == "ok");
}

mpg::task<std::string> recv_blocks_until_send(std::size_t cap) {
  mpg::chan<int> c(cap);
  std::atomic<int> got{-1};
  auto h = mpg::spawn([](mpg::chan<int> c, std::atomic<int>* got) -> mpg::task<void> {
    std::optional<int> v = co_await c.recv();
    got->store(v ? *v : -2);
  }(c, &got));
  co_await yield_some(20);
  if (got.load() != -1) co_return "receive from empty channel completed";
  if (c.try_recv()) co_return "try_recv on empty channel returned a value";
  co_await c.send(7);
  co_await h;
  if (got.load() != 7) co_return "receiver got " + std::to_string(got.load());
  co_return "ok";
}

TEST_CASE("receive from an empty channel waits for a send") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 1u, 8u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(recv_blocks_until_send(cap)) == "ok");
  }
}

// -- Buffered channels --------------------------------------------------------

mpg::task<std::string> buffered_fifo_and_full(std::size_t cap) {
  mpg::chan<int> c(cap);
  if (c.capacity() != cap || c.size() != 0) co_return "bad size/capacity when empty";
  for (int i = 0; i < static_cast<int>(cap); ++i) co_await c.send(i);
  if (c.size() != cap) co_return "bad size when full";
  if (c.try_send(-1)) co_return "try_send on a full channel succeeded";
  std::atomic<bool> sent{false};
  auto h = mpg::spawn(send_one(c, 1000, &sent));
  co_await yield_some(20);
  if (sent.load()) co_return "send to a full channel completed";
  // The ring drains in order; the blocked sender's value comes last.
  for (int i = 0; i < static_cast<int>(cap); ++i) {
    std::optional<int> v = co_await c.recv();
    if (v != i) co_return "out of order at " + std::to_string(i);
  }
  std::optional<int> last = co_await c.recv();
  co_await h;
  if (last != 1000) co_return "blocked sender's value lost";
  if (c.size() != 0) co_return "not empty at the end";
  co_return "ok";
}

TEST_CASE("buffered channel: FIFO order, size, and send to a full channel waits") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {1u, 2u, 3u, 16u, 100u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(buffered_fifo_and_full(cap)) == "ok");
  }
}

mpg::task<void> send_range(mpg::chan<int> c, int from, int to) {
  for (int i = from; i < to; ++i) co_await c.send(i);
}

mpg::task<std::string> hundred_in_order(std::size_t cap) {
  mpg::chan<int> c(cap);
  auto h = mpg::spawn(send_range(c, 0, 100));
  for (int i = 0; i < 100; ++i) {
    std::optional<int> v = co_await c.recv();
    if (v != i) co_return "received out of order";
  }
  co_await h;
  co_return "ok";
}

TEST_CASE("values arrive uncorrupted and in FIFO order, for capacities 0..40") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap = 0; cap <= 40; ++cap) {
    CAPTURE(cap);
    CHECK(rt.block_on(hundred_in_order(cap)) == "ok");
  }
}

// -- close --------------------------------------------------------------------

mpg::task<std::string> close_drains_then_nullopt(std::size_t cap) {
  mpg::chan<int> c(cap);
  for (int i = 0; i < static_cast<int>(cap); ++i) co_await c.send(i);
  c.close();
  for (int i = 0; i < static_cast<int>(cap); ++i) {
    std::optional<int> v = co_await c.recv();
    if (v != i) co_return "buffered value lost by close";
  }
  if (co_await c.recv()) co_return "value from a closed, drained channel";
  if (co_await c.recv()) co_return "second receive after close returned a value";
  if (c.try_recv()) co_return "try_recv after close returned a value";
  co_return "ok";
}

TEST_CASE("close: receivers drain the buffer, then get nullopt") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 1u, 5u, 64u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(close_drains_then_nullopt(cap)) == "ok");
  }
}

mpg::task<int> recv_count_nullopt(mpg::chan<int> c) {
  std::optional<int> v = co_await c.recv();
  co_return v ? 0 : 1;
}

mpg::task<std::string> close_wakes_receivers(std::size_t cap) {
  mpg::chan<int> c(cap);
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < 50; ++i) hs.push_back(mpg::spawn(recv_count_nullopt(c)));
  co_await yield_some(10);
  c.close();
  int n = 0;
  for (auto& h : hs) n += co_await h;
  if (n != 50) co_return "only " + std::to_string(n) + " receivers saw the close";
  co_return "ok";
}

TEST_CASE("close wakes every blocked receiver with nullopt") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 4u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(close_wakes_receivers(cap)) == "ok");
  }
}

mpg::task<int> send_expect_closed(mpg::chan<int> c) {
  try {
    co_await c.send(1);
  } catch (const mpg::closed_channel_error&) {
    co_return 1;
  }
  co_return 0;
}

mpg::task<std::string> close_fails_blocked_senders() {
  mpg::chan<int> c(2);
  co_await c.send(1);
  co_await c.send(2);
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < 20; ++i) hs.push_back(mpg::spawn(send_expect_closed(c)));
  co_await yield_some(10);
  c.close();
  int n = 0;
  for (auto& h : hs) n += co_await h;
  if (n != 20) co_return "blocked senders not failed: " + std::to_string(20 - n);
  // The two buffered values are still delivered.
  if (co_await c.recv() != 1 || co_await c.recv() != 2) co_return "buffer lost";
  if (co_await c.recv()) co_return "value after drain";
  co_return "ok";
}

TEST_CASE("close makes blocked senders throw closed_channel_error") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(close_fails_blocked_senders()) == "ok");
}

mpg::task<std::string> closed_channel_errors() {
  mpg::chan<int> c(1);
  c.close();
  std::string r;
  try {
    co_await c.send(1);
    r += "send-did-not-throw ";
  } catch (const mpg::closed_channel_error&) {
  }
  try {
    c.try_send(1);
    r += "try_send-did-not-throw ";
  } catch (const mpg::closed_channel_error&) {
  }
  try {
    c.close();
    r += "close-twice-did-not-throw ";
  } catch (const mpg::closed_channel_error&) {
  }
  co_return r.empty() ? "ok" : r;
}

TEST_CASE("send, try_send and close on a closed channel throw closed_channel_error") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(closed_channel_errors()) == "ok");
  // closed_channel_error is a std::logic_error (a programming error).
  mpg::chan<int> c;
  c.close();
  CHECK_THROWS_AS(c.close(), std::logic_error);
  CHECK_THROWS_AS(c.try_send(1), mpg::closed_channel_error);
}

TEST_CASE("try_send and try_recv never wait, also outside any task") {
  mpg::chan<int> c(2);
  CHECK_FALSE(c.try_recv().has_value());
  CHECK(c.try_send(1));
  int two = 2;
  CHECK(c.try_send(two));
  CHECK_FALSE(c.try_send(3));
  CHECK(c.size() == 2);
  CHECK(c.try_recv() == 1);
  CHECK(c.try_recv() == 2);
  CHECK_FALSE(c.try_recv().has_value());
  mpg::chan<int> u;  // unbuffered: nobody waits, so neither can proceed
  CHECK_FALSE(u.try_send(1));
  CHECK_FALSE(u.try_recv().has_value());
  CHECK(u.capacity() == 0);
  CHECK(u.size() == 0);
}

TEST_CASE("copies of a handle share one channel") {
  mpg::chan<int> a(4);
  mpg::chan<int> b = a;
  mpg::chan<int> c;
  c = b;
  CHECK(a == b);
  CHECK(a == c);
  CHECK_FALSE(a == mpg::chan<int>(4));
  CHECK(a.try_send(5));
  CHECK(c.size() == 1);
  CHECK(b.try_recv() == 5);
  mpg::chan<int> moved = std::move(a);
  CHECK(moved == b);
}

// A moved-from handle is a closed, empty channel of its own (chan.hpp,
// moved_from_state): every operation is defined (none may dereference a
// null state), and the ones Go would panic on throw runtime_misuse_error.
mpg::task<std::string> moved_from_in_task(mpg::chan<int> from) {
  std::string r;
  mpg::chan<int> live(1);
  mpg::chan<int> gone = std::move(from);
  if (gone == live) r += " gone is live;";
  const std::optional<int> got = co_await from.recv();
  if (got.has_value()) r += " recv gave a value;";
  try {
    co_await from.send(1);
    r += " send did not throw;";
  } catch (const mpg::runtime_misuse_error& e) {
    if (std::string(e.what()).find("send on a moved-from chan") == std::string::npos)
      r += " send's message;";
  }
  // A select: its two moved-from receives are ready at once (nullopt), the
  // empty live one is not.
  auto v = co_await mpg::select(from.recv(), live.recv(), from.recv());
  if (v.index() == 1) r += " select took the empty channel;";
  if (v.index() == 0 && std::get<0>(v).has_value()) r += " select case 0 gave a value;";
  if (v.index() == 2 && std::get<2>(v).has_value()) r += " select case 2 gave a value;";
  try {
    (void)co_await mpg::select(from.send(2), live.recv());
    r += " select send did not throw;";
  } catch (const mpg::runtime_misuse_error&) {
  }
  co_return r.empty() ? "ok" : r;
}

TEST_CASE("a moved-from handle reads as closed; send, try_send and close throw misuse") {
  mpg::chan<int> a(4);
  mpg::chan<int> b = std::move(a);
  CHECK_FALSE(a.try_recv().has_value());
  CHECK(a.size() == 0);
  CHECK(a.capacity() == 0);
  CHECK_THROWS_AS(a.try_send(1), mpg::runtime_misuse_error);
  CHECK_THROWS_AS(a.close(), mpg::runtime_misuse_error);
  // Copies and moves of it are moved-from handles too; none is b.
  mpg::chan<int> c = a;
  mpg::chan<int> d = std::move(c);
  CHECK(c == a);
  CHECK(d == a);
  CHECK_FALSE(d == b);
  CHECK_THROWS_AS(d.close(), mpg::runtime_misuse_error);
  // Assigned a channel, a moved-from handle is a handle again.
  a = b;
  CHECK(a.try_send(7));
  CHECK(b.try_recv() == 7);
  b.close();  // the channel: not closed by any of the above
  CHECK_THROWS_AS(a.close(), mpg::closed_channel_error);
  // Another element type has a moved-from state of its own.
  mpg::chan<std::unique_ptr<int>> u;
  mpg::chan<std::unique_ptr<int>> v = std::move(u);
  auto p = std::make_unique<int>(1);
  CHECK_THROWS_AS(u.try_send(std::move(p)), mpg::runtime_misuse_error);
  CHECK(p);  // a failed try_send leaves the value with the caller
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(moved_from_in_task(mpg::chan<int>())) == "ok");
  // Threads at once on moved-from handles (one shared state, which TSan
  // watches): none of it writes to the state but its lock.
  auto hammer = [] {
    for (int i = 0; i < 1000; ++i) {
      mpg::chan<int> live;
      mpg::chan<int> from = std::move(live);
      mpg::chan<int> copy = live;
      if (copy.try_recv().has_value() || copy.size() != 0) return false;
      try {
        (void)live.try_send(i);
        return false;
      } catch (const mpg::runtime_misuse_error&) {
      }
    }
    return true;
  };
  bool other_ok = false;
  std::thread t([&] { other_ok = hammer(); });
  const bool this_ok = hammer();
  t.join();
  CHECK(this_ok);
  CHECK(other_ok);
  // The shared state is as it was made: unlocked, closed, never counted.
  auto* state = mpg::detail::moved_from_state<int>();
  bool unlocked = false;
  if (state->lock_.try_lock()) {
    state->lock_.unlock();
    unlocked = true;
  }
  CHECK(unlocked);
  CHECK(state->refs_.load() == 1);
  CHECK(state->size() == 0);
}

// -- Element types --------------------------------------------------------------

mpg::task<std::string> move_only_elements(std::size_t cap) {
  mpg::chan<std::unique_ptr<int>> c(cap);
  auto h = mpg::spawn([](mpg::chan<std::unique_ptr<int>> c) -> mpg::task<void> {
    for (int i = 0; i < 50; ++i) co_await c.send(std::make_unique<int>(i));
    c.close();
  }(c));
  int expect = 0;
  while (auto v = co_await c.recv()) {
    if (!*v || **v != expect) co_return "bad element";
    ++expect;
  }
  co_await h;
  if (expect != 50) co_return "lost elements";
  // try_send of an rvalue that fails leaves it with the caller.
  mpg::chan<std::unique_ptr<int>> full(1);
  auto p = std::make_unique<int>(1);
  if (!full.try_send(std::move(p)) || p) co_return "try_send did not take the value";
  auto q = std::make_unique<int>(2);
  if (full.try_send(std::move(q)) || !q) co_return "failed try_send consumed the value";
  // Left in the ring: freed with the channel (ASan checks).
  co_return "ok";
}

TEST_CASE("move-only elements (unique_ptr), buffered and unbuffered") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 1u, 7u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(move_only_elements(cap)) == "ok");
  }
}

TEST_CASE("elements left in a dropped channel are destroyed") {
  auto counter = std::make_shared<int>(0);
  {
    mpg::chan<std::shared_ptr<int>> c(8);
    for (int i = 0; i < 5; ++i) CHECK(c.try_send(counter));
    CHECK(counter.use_count() == 6);
  }
  CHECK(counter.use_count() == 1);
}

mpg::task<std::string> strings_through_channel() {
  mpg::chan<std::string> c(3);
  auto h = mpg::spawn([](mpg::chan<std::string> c) -> mpg::task<void> {
    for (int i = 0; i < 200; ++i) co_await c.send(std::string(static_cast<std::size_t>(i), 'x'));
    c.close();
  }(c));
  std::size_t i = 0;
  while (auto s = co_await c.recv()) {
    if (s->size() != i) co_return "corrupted string";
    ++i;
  }
  co_await h;
  co_return i == 200 ? "ok" : "lost strings";
}

TEST_CASE("non-trivial elements (std::string) survive the ring and hand-offs") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(strings_through_channel()) == "ok");
}

// -- Stress ---------------------------------------------------------------------

mpg::task<void> mpmc_consumer(mpg::chan<int> c, std::vector<std::atomic<int>>* seen) {
  while (auto v = co_await c.recv()) (*seen)[static_cast<std::size_t>(*v)].fetch_add(1);
}

mpg::task<std::string> mpmc_exactly_once(std::size_t cap, int producers, int consumers,
                                         int per_producer) {
  mpg::chan<int> c(cap);
  const int total = producers * per_producer;
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
  std::vector<mpg::join_handle<void>> prod, cons;
  for (int i = 0; i < consumers; ++i) cons.push_back(mpg::spawn(mpmc_consumer(c, &seen)));
  for (int p = 0; p < producers; ++p)
    prod.push_back(mpg::spawn(send_range(c, p * per_producer, (p + 1) * per_producer)));
  for (auto& h : prod) co_await h;
  c.close();
  for (auto& h : cons) co_await h;
  for (int i = 0; i < total; ++i)
    if (seen[static_cast<std::size_t>(i)].load() != 1)
      co_return "item " + std::to_string(i) + " seen " +
          std::to_string(seen[static_cast<std::size_t>(i)].load()) + " times";
  co_return "ok";
}

TEST_CASE("MPMC stress: every item is received exactly once") {
  mpg::runtime rt({.procs = 2});
  for (std::size_t cap : {0u, 1u, 16u, 1024u}) {
    CAPTURE(cap);
    CHECK(rt.block_on(mpmc_exactly_once(cap, 4, 4, 5000 * kScale)) == "ok");
  }
  CHECK(rt.block_on(mpmc_exactly_once(3, 16, 3, 500 * kScale)) == "ok");
}

// Go's TestMultiConsumer: workers forward from q to r; sums must match.
mpg::task<std::string> multi_consumer() {
  const int pn[] = {2, 3, 7, 11, 13, 17, 19, 23, 27, 31};
  constexpr int kWorkers = 23;
  const int iters = 10000 * kScale;
  mpg::chan<int> q(kWorkers * 3), r(kWorkers * 3);
  mpg::wait_group wg;
  wg.add(kWorkers);
  for (int w = 0; w < kWorkers; ++w) {
    mpg::go([](mpg::chan<int> q, mpg::chan<int> r, mpg::wait_group* wg, int w,
               const int* pn) -> mpg::task<void> {
      while (auto v = co_await q.recv()) {
        if (pn[w % 10] == *v) co_await mpg::yield();
        co_await r.send(*v);
      }
      wg->done();
    }(q, r, &wg, w, pn));
  }
  long expect = 0;
  auto feeder = mpg::spawn([](mpg::chan<int> q, mpg::chan<int> r, mpg::wait_group* wg,
                              const int* pn, int iters, long* expect) -> mpg::task<void> {
    for (int i = 0; i < iters; ++i) {
      int v = pn[i % 10];
      *expect += v;
      co_await q.send(v);
    }
    q.close();
    co_await wg->wait();
    r.close();
  }(q, r, &wg, pn, iters, &expect));
  long n = 0, s = 0;
  while (auto v = co_await r.recv()) {
    ++n;
    s += *v;
  }
  co_await feeder;
  if (n != iters || s != expect) co_return "sum or count mismatch";
  co_return "ok";
}

TEST_CASE("multi-consumer pipeline (Go's TestMultiConsumer)") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(multi_consumer()) == "ok");
}

// Close racing sends and receives: a send that returned normally delivered
// its value (received exactly once); a send that threw delivered nothing.
struct race_result {
  std::vector<std::atomic<int>> received;
  std::vector<std::atomic<int>> sent_ok;
  explicit race_result(std::size_t n) : received(n), sent_ok(n) {}
};

mpg::task<void> race_sender(mpg::chan<int> c, race_result* r, int from, int to) {
  for (int i = from; i < to; ++i) {
    try {
      co_await c.send(i);
      r->sent_ok[static_cast<std::size_t>(i)].store(1);
    } catch (const mpg::closed_channel_error&) {
      co_return;
    }
  }
}

mpg::task<void> race_receiver(mpg::chan<int> c, race_result* r) {
  while (auto v = co_await c.recv()) r->received[static_cast<std::size_t>(*v)].fetch_add(1);
}

mpg::task<void> race_closer(mpg::chan<int> c, int yields) {
  for (int i = 0; i < yields; ++i) co_await mpg::yield();
  c.close();
}

mpg::task<std::string> close_races(std::size_t cap, int round) {
  constexpr int kSenders = 4, kPer = 200;
  mpg::chan<int> c(cap);
  race_result r(kSenders * kPer);
  std::vector<mpg::join_handle<void>> hs;
  for (int i = 0; i < 3; ++i) hs.push_back(mpg::spawn(race_receiver(c, &r)));
  for (int s = 0; s < kSenders; ++s)
    hs.push_back(mpg::spawn(race_sender(c, &r, s * kPer, (s + 1) * kPer)));
  hs.push_back(mpg::spawn(race_closer(c, round % 37)));
  for (auto& h : hs) co_await h;
  for (int i = 0; i < kSenders * kPer; ++i) {
    const int got = r.received[static_cast<std::size_t>(i)].load();
    const int ok = r.sent_ok[static_cast<std::size_t>(i)].load();
    if (got != ok)
      co_return "value " + std::to_string(i) + ": sent_ok=" + std::to_string(ok) +
          " received=" + std::to_string(got);
  }
  co_return "ok";
}

TEST_CASE("close racing sends and receives loses and duplicates nothing") {
  mpg::runtime rt({.procs = 2});
  for (int round = 0; round < 30 * kScale; ++round) {
    for (std::size_t cap : {0u, 1u, 8u}) {
      CAPTURE(round);
      CAPTURE(cap);
      REQUIRE(rt.block_on(close_races(cap, round)) == "ok");
    }
  }
}

// -- Cooperative budget -----------------------------------------------------------

mpg::task<std::string> budget_lets_others_run() {
  // One P: the loop below never waits (the channel always has room and a
  // value), so only the budget can let the flag-setter run.
  std::atomic<bool> flag{false};
  mpg::go([](std::atomic<bool>* f) -> mpg::task<void> {
    f->store(true);
    co_return;
  }(&flag));
  mpg::chan<int> c(1);
  for (int i = 0; i < 1'000'000; ++i) {
    if (flag.load()) co_return "ok";
    co_await c.send(i);
    (void)co_await c.recv();
  }
  co_return "a task looping on ready channel operations never yielded";
}

TEST_CASE("operations that complete at once still yield when the budget runs out") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(budget_lets_others_run()) == "ok");
}

mpg::task<std::string> values_survive_budget_yields() {
  // Every 128th completed operation spends the slice and yields after
  // completing (chan.hpp: await_ready clears ch_, await_suspend requeues):
  // each value must still arrive once, in order, on both kinds of channel.
  mpg::chan<int> buffered(1);
  for (int i = 0; i < 1000; ++i) {
    co_await buffered.send(i);
    std::optional<int> v = co_await buffered.recv();
    if (v != i) co_return "buffered: sent " + std::to_string(i) + ", got another value";
  }
  mpg::chan<int> ping, pong;
  auto echo = mpg::spawn([](mpg::chan<int> in, mpg::chan<int> out) -> mpg::task<void> {
    while (auto v = co_await in.recv()) co_await out.send(*v + 1);
  }(ping, pong));
  for (int i = 0; i < 1000; ++i) {
    co_await ping.send(i);
    std::optional<int> v = co_await pong.recv();
    if (v != i + 1) co_return "unbuffered: sent " + std::to_string(i) + ", got another value";
  }
  ping.close();
  co_await echo;
  co_return "ok";
}

TEST_CASE("values arrive once and in order across budget yields") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(values_survive_budget_yields()) == "ok");
}

// -- Outside the runtime --------------------------------------------------------

// The feeder holds an external_work guard from before it starts until it
// has closed the channel: a plain thread that will try_send() is no
// possible wake-up for block_on's deadlock check unless a guard stands for
// it (runtime_handle.hpp). Without one, a feeder kept off the CPUs for the
// check's looks (several, 50 ms apart) on a loaded machine makes block_on
// throw deadlock_error.
TEST_CASE("a foreign thread can feed a channel with try_send and close it") {
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c(1024);
  auto guard = std::make_unique<mpg::external_work>(rt.handle());
  std::thread feeder([c, guard = std::move(guard)]() mutable {
    for (int i = 0; i < 1000; ++i)
      while (!c.try_send(i)) std::this_thread::yield();
    c.close();
    guard.reset();
  });
  long sum = rt.block_on([](mpg::chan<int> c) -> mpg::task<long> {
    long s = 0;
    while (auto v = co_await c.recv()) s += *v;
    co_return s;
  }(c));
  feeder.join();
  CHECK(sum == 999L * 1000 / 2);
}

// A coroutine of no runtime: a channel await inside it must wait, finds no
// task to park (detail::park throws), and must leave the channel unlocked
// (the lock taken in await_ready is released by the throwing await_suspend).
struct bare_coroutine {
  struct promise_type {
    std::exception_ptr failure;
    bare_coroutine get_return_object() {
      return {std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { failure = std::current_exception(); }
  };
  std::coroutine_handle<promise_type> h;
};

bool lock_is_free(mpg::detail::spinlock& l) {
  if (l.try_lock()) {
    l.unlock();
    return true;
  }
  return false;
}

bare_coroutine receive_outside_any_task(mpg::chan<int> c) { (void)co_await c.recv(); }
bare_coroutine send_outside_any_task(mpg::chan<int> c) { co_await c.send(1); }

TEST_CASE("a channel await that must wait outside any task throws and releases the lock") {
  mpg::chan<int> c;
  for (bool send : {false, true}) {
    bare_coroutine co = send ? send_outside_any_task(c) : receive_outside_any_task(c);
    REQUIRE(co.h.done());
    CHECK(co.h.promise().failure != nullptr);
    bool misuse = false;
    try {
      std::rethrow_exception(co.h.promise().failure);
    } catch (const mpg::runtime_misuse_error&) {
      misuse = true;
    } catch (...) {
    }
    CHECK(misuse);
    co.h.destroy();
    CHECK(lock_is_free(c.state_for_internal_use()->lock_));
    CHECK(!c.try_recv().has_value());  // and nothing was queued
  }
}

}  // namespace

namespace {

// The task dump once it contains `needle` (after at most 1000 yields).
mpg::task<std::string> dump_once_it_shows(mpg::runtime* rt, std::string needle) {
  std::string dump;
  for (int i = 0; i < 1000; ++i) {
    co_await mpg::yield();
    std::ostringstream os;
    rt->dump(os);
    dump = os.str();
    if (dump.find(needle) != std::string::npos) break;
  }
  co_return dump;
}

constexpr int kRecvLine = __LINE__ + 5;
constexpr int kSelectLine = __LINE__ + 5;
mpg::task<std::string> dump_names_the_wait(mpg::runtime* rt) {
  mpg::chan<int> c;
  auto h = mpg::spawn([](mpg::chan<int> c) -> mpg::task<void> {
    (void)co_await c.recv();  // the call site the dump must name
    (void)co_await mpg::select(c.recv(), c.recv());
  }(c), "blocked_receiver");
  const std::string dump = co_await dump_once_it_shows(rt, "chan receive");
  co_await c.send(1);
  const std::string select_dump = co_await dump_once_it_shows(rt, "select at");
  co_await c.send(2);
  co_await h;
  if (dump.find("blocked_receiver") == std::string::npos) co_return "task not in dump: " + dump;
  if (dump.find("chan receive at " __FILE__ ":" + std::to_string(kRecvLine)) == std::string::npos)
    co_return "wait reason or call site missing: " + dump;
  if (select_dump.find("select at " __FILE__ ":" + std::to_string(kSelectLine)) ==
      std::string::npos)
    co_return "select's call site missing: " + select_dump;
  co_return "ok";
}

TEST_CASE("a parked receive is named in the task dump with its call site") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(dump_names_the_wait(&rt)) == "ok");
}

}  // namespace
