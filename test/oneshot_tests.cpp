// test/oneshot_tests.cpp: mpg::oneshot<T>: a value sent from a plain thread
// or a task, before and after the receiver waits; a sender destroyed unsent
// (kAborted); a receiver gone (send returns false); move-only T and void; a
// second await (kFailedPrecondition); select with a oneshot case and a
// channel case, in both orders, with either winning; the deadlock check,
// which counts a live sender whose receiver waits as a possible wake-up and
// fires again once no receiver waits (the count is given back exactly); a TSan
// stress of many threads sending to many receivers; the receiving task
// destroying the state as soon as it resumes; a runtime destroyed with a
// receiver parked, its sender dropped afterwards on a plain thread; and an
// await of a moved-from receiver (runtime_misuse_error).
#include <doctest/doctest.h>

#include <absl/strings/str_cat.h>

#include "test_support.hpp"
#include "watchdog.hpp"

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using namespace std::chrono_literals;

// wait_until(): polls pred from a plain thread, yielding, for up to 10 s.
template <class Pred>
bool wait_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

template <class T>
mpg::task<absl::StatusOr<T>> receive(mpg::oneshot_receiver<T> rx) {
  co_return co_await rx;
}
mpg::task<void> receive_discard(mpg::oneshot_receiver<int> rx) { (void)co_await rx; }
mpg::task<absl::Status> receive_void(mpg::oneshot_receiver<void> rx) { co_return co_await rx; }

}  // namespace

TEST_CASE("a value sent from a plain thread before the await is received") {
  mpg::runtime rt({.procs = 2});
  auto [tx, rx] = mpg::oneshot<int>();
  std::thread th([tx = std::move(tx)]() mutable { CHECK(tx.send(42)); });
  th.join();
  absl::StatusOr<int> v = rt.block_on(receive(std::move(rx)));
  REQUIRE(v.ok());
  CHECK(*v == 42);
}

TEST_CASE("a value sent from a plain thread after the receiver parked wakes it") {
  mpg::runtime rt({.procs = 2});
  auto [tx, rx] = mpg::oneshot<int>();
  auto h = rt.spawn(receive(std::move(rx)), "receiver");
  REQUIRE(wait_until([&] { return mpg_test::dump_shows(rt, "oneshot receive"); }));
  std::thread th([tx = std::move(tx)]() mutable { CHECK(tx.send(7)); });
  th.join();
  absl::StatusOr<int> v = rt.block_on(std::move(h));
  REQUIRE(v.ok());
  CHECK(*v == 7);
}

namespace {

mpg::task<void> send_later(mpg::oneshot_sender<int> tx, int v) {
  co_await mpg_test::yield_some(10);
  CHECK(tx.send(v));
}
mpg::task<int> send_from_task(bool send_first) {
  auto [tx, rx] = mpg::oneshot<int>();
  if (send_first) {
    CHECK(tx.send(5));
  } else {
    mpg::go(send_later(std::move(tx), 5), "sender");
  }
  absl::StatusOr<int> v = co_await rx;
  co_return v.ok() ? *v : -1;
}

}  // namespace

TEST_CASE("a value sent from a task, before or after the await, is received") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(send_from_task(true)) == 5);
  CHECK(rt.block_on(send_from_task(false)) == 5);
}

TEST_CASE("a sender destroyed unsent gives kAborted, before or after the await") {
  mpg::runtime rt({.procs = 2});
  {
    auto [tx, rx] = mpg::oneshot<int>();
    { auto drop = std::move(tx); }
    absl::StatusOr<int> v = rt.block_on(receive(std::move(rx)));
    CHECK(v.status().code() == absl::StatusCode::kAborted);
  }
  {
    auto [tx, rx] = mpg::oneshot<int>();
    auto h = rt.spawn(receive(std::move(rx)), "receiver");
    REQUIRE(wait_until([&] { return mpg_test::dump_shows(rt, "oneshot receive"); }));
    std::thread th([tx = std::move(tx)]() mutable { auto drop = std::move(tx); });
    th.join();
    absl::StatusOr<int> v = rt.block_on(std::move(h));
    CHECK(v.status().code() == absl::StatusCode::kAborted);
  }
}

TEST_CASE("send returns false once the receiver is gone, and on an empty sender") {
  auto [tx, rx] = mpg::oneshot<std::string>();
  { auto drop = std::move(rx); }
  CHECK_FALSE(tx.send("lost"));
  CHECK_FALSE(tx);
  CHECK_FALSE(tx.send("again"));  // already used

  auto [tx2, rx2] = mpg::oneshot<int>();
  CHECK(tx2.send(1));
  CHECK_FALSE(tx2.send(2));
}

namespace {

mpg::task<int> receive_twice(mpg::oneshot_receiver<std::unique_ptr<int>> rx) {
  absl::StatusOr<std::unique_ptr<int>> a = co_await rx;
  absl::StatusOr<std::unique_ptr<int>> b = co_await rx.recv();
  CHECK(b.status().code() == absl::StatusCode::kFailedPrecondition);
  co_return a.ok() ? **a : -1;
}

}  // namespace

TEST_CASE("a move-only value is received once; a second await fails") {
  mpg::runtime rt({.procs = 2});
  auto [tx, rx] = mpg::oneshot<std::unique_ptr<int>>();
  std::thread th([tx = std::move(tx)]() mutable { CHECK(tx.send(std::make_unique<int>(11))); });
  CHECK(rt.block_on(receive_twice(std::move(rx))) == 11);
  th.join();
}

namespace {

// A value whose move throws when taken stays in the oneshot: the await that
// threw took nothing, and the next await receives it. Whichever of the
// value's moves inside the await throws: absl::StatusOr's move is noexcept
// whatever T's is, so a value moved a second time, inside a StatusOr,
// would terminate the process (oneshot.hpp, R4: take_with).
struct fuse {  // throws on the countdown-th move from arming (0: never)
  static inline int countdown = 0;
  static inline int moves = 0;
  int v = 0;
  explicit fuse(int x) : v(x) {}
  fuse(fuse&& o) : v(o.v) {
    ++moves;
    if (countdown > 0 && --countdown == 0) throw std::runtime_error("move refused");
  }
};

// await_with_fuse(): a oneshot holding fuse(5), awaited (plainly, or as a
// select case) with the k-th move of the value armed to throw; if it
// threw, awaited again. parked: the await parks first, and a task sends.
// k == 0: counts the value's moves in the await (into *moves).
mpg::task<std::string> await_with_fuse(bool by_select, bool parked, int k, int* moves) {
  auto [tx, rx] = mpg::oneshot<fuse>();
  fuse::countdown = 0;
  mpg::chan<int> never;
  if (parked) {
    mpg::go([](mpg::oneshot_sender<fuse> tx, int k) -> mpg::task<void> {
      co_await mpg_test::yield_some(3);  // the receiver parks first (one P)
      CHECK(tx.send(fuse(5)));
      fuse::moves = 0;
      fuse::countdown = k;
    }(std::move(tx), k));
  } else {
    if (!tx.send(fuse(5))) co_return "send refused";
    fuse::moves = 0;
    fuse::countdown = k;
  }
  bool threw = false;
  try {
    if (by_select) {
      auto r = co_await mpg::select(rx, never.recv());
      if (moves != nullptr) *moves = fuse::moves;
      if (r.index() != 0) co_return "the never-ready case won";
      const absl::StatusOr<fuse>& v = std::get<0>(r);
      if (!v.ok() || v->v != 5) co_return "first await: " + v.status().ToString();
    } else {
      absl::StatusOr<fuse> v = co_await rx;
      if (moves != nullptr) *moves = fuse::moves;
      if (!v.ok() || v->v != 5) co_return "first await: " + v.status().ToString();
    }
  } catch (const std::runtime_error&) {
    threw = true;
  }
  fuse::countdown = 0;
  if (threw != (k > 0)) co_return absl::StrCat("move ", k, threw ? " threw" : " did not throw");
  if (!threw) co_return "ok";
  absl::StatusOr<fuse> again = co_await rx;
  if (!again.ok()) co_return absl::StrCat("value lost after a throw at move ", k, ": ",
                                          again.status().ToString());
  if (again->v != 5) co_return "a wrong value after the throw";
  co_return "ok";
}

void fuse_matrix(bool by_select, bool parked) {
  mpg::runtime rt({.procs = 1});
  int moves = 0;
  CHECK(rt.block_on(await_with_fuse(by_select, parked, 0, &moves)) == "ok");
  MESSAGE(moves << " moves of the value in the await");
  CHECK(moves == 1);  // from the state straight into the result
  for (int k = 1; k <= moves; ++k) {
    CAPTURE(k);
    CHECK(rt.block_on(await_with_fuse(by_select, parked, k, nullptr)) == "ok");
  }
}

}  // namespace

TEST_CASE("a throwing move of the value leaves it for the next await: await completing at once") {
  fuse_matrix(false, false);
}
TEST_CASE("a throwing move of the value leaves it for the next await: parked await") {
  fuse_matrix(false, true);
}
TEST_CASE("a throwing move of the value leaves it for the next await: ready select case") {
  fuse_matrix(true, false);
}
TEST_CASE("a throwing move of the value leaves it for the next await: parked select case") {
  fuse_matrix(true, true);
}

mpg::task<std::string> two_tasks_await_one_receiver() {
  auto [tx, rx] = mpg::oneshot<int>();
  std::atomic<int> waiting{0};
  auto awaiter = [](mpg::oneshot_receiver<int>* rx, std::atomic<int>* waiting) -> mpg::task<int> {
    waiting->fetch_add(1);
    absl::StatusOr<int> v = co_await *rx;
    co_return v.ok() ? *v : (v.status().code() == absl::StatusCode::kFailedPrecondition ? -1 : -2);
  };
  auto a = mpg::spawn(awaiter(&rx, &waiting));
  auto b = mpg::spawn(awaiter(&rx, &waiting));
  while (waiting.load() < 2) co_await mpg::yield();
  co_await mpg_test::yield_some(10);  // both park (one P)
  tx.send(7);
  const int ra = co_await a;
  const int rb = co_await b;
  // One gets the value, the other "already received"; neither waits for ever.
  if (!((ra == 7 && rb == -1) || (ra == -1 && rb == 7)))
    co_return "results " + std::to_string(ra) + ", " + std::to_string(rb);
  co_return "ok";
}

TEST_CASE("two tasks awaiting one receiver at once both end") {
  mpg::runtime rt({.procs = 1});
  mpg_test::watchdog dog(std::chrono::seconds(20), "two awaits of one oneshot", &rt);
  CHECK(rt.block_on(two_tasks_await_one_receiver()) == "ok");
}

namespace {

mpg::task<std::string> await_moved_from_receiver() {
  auto [tx, rx] = mpg::oneshot<int>();
  auto moved = std::move(rx);
  int thrown = 0;
  try {
    (void)co_await rx;
  } catch (const mpg::runtime_misuse_error&) {
    ++thrown;
  }
  try {
    (void)co_await rx.recv();
  } catch (const mpg::runtime_misuse_error&) {
    ++thrown;
  }
  mpg::chan<int> never;
  try {
    (void)co_await mpg::select(never.recv(), rx);
  } catch (const mpg::runtime_misuse_error&) {
    ++thrown;
  }
  if (thrown != 3) co_return absl::StrCat(thrown, " of 3 awaits threw");
  // The receiver it was moved to still works.
  CHECK(tx.send(4));
  absl::StatusOr<int> v = co_await moved;
  if (!v.ok() || *v != 4) co_return "the moved-to receiver lost the value";
  co_return "ok";
}

}  // namespace

TEST_CASE("awaiting a moved-from receiver throws runtime_misuse_error") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(await_moved_from_receiver()) == "ok");
}

TEST_CASE("a value left unreceived is freed with the state (ASan)") {
  auto [tx, rx] = mpg::oneshot<std::unique_ptr<int>>();
  CHECK(tx.send(std::make_unique<int>(3)));
}

TEST_CASE("oneshot<void>: send, and a sender dropped unsent") {
  mpg::runtime rt({.procs = 2});
  {
    auto [tx, rx] = mpg::oneshot<void>();
    auto h = rt.spawn(receive_void(std::move(rx)), "receiver");
    std::thread th([tx = std::move(tx)]() mutable { CHECK(tx.send()); });
    th.join();
    CHECK(rt.block_on(std::move(h)).ok());
  }
  {
    auto [tx, rx] = mpg::oneshot<void>();
    { auto drop = std::move(tx); }
    CHECK(rt.block_on(receive_void(std::move(rx))).code() == absl::StatusCode::kAborted);
  }
}

namespace {

// select over a oneshot and a channel, the oneshot first or second; which
// side completes first is chosen by the test. Returns the winning index and
// what it got; when the channel wins, the oneshot is awaited afterwards to
// check that the losing case took nothing.
struct select_outcome {
  std::size_t index = 99;
  int value = -1;
  int later = -1;
};

mpg::task<select_outcome> select_one(bool oneshot_first, bool channel_wins) {
  auto [tx, rx] = mpg::oneshot<int>();
  mpg::chan<int> ch;
  select_outcome out;
  std::thread th;
  auto fire = [&] {
    // From a plain thread once the select is parked (or not: both are fine).
    th = std::thread([&, tx = std::move(tx)]() mutable {
      if (channel_wins) {
        while (!ch.try_send(2)) std::this_thread::yield();  // needs the parked select
        CHECK(tx.send(1));
      } else {
        CHECK(tx.send(1));
      }
    });
  };
  fire();
  if (oneshot_first) {
    auto r = co_await mpg::select(rx, ch.recv());
    out.index = r.index() == 0 ? 0 : 1;
    if (r.index() == 0) {
      out.value = std::get<0>(r).ok() ? *std::get<0>(r) : -2;
    } else {
      out.value = std::get<1>(r).value_or(-3);
    }
  } else {
    auto r = co_await mpg::select(ch.recv(), rx.recv());
    out.index = r.index() == 1 ? 0 : 1;  // 0: the oneshot won
    if (r.index() == 1) {
      out.value = std::get<1>(r).ok() ? *std::get<1>(r) : -2;
    } else {
      out.value = std::get<0>(r).value_or(-3);
    }
  }
  if (out.index == 1) {
    absl::StatusOr<int> v = co_await rx;
    out.later = v.ok() ? *v : -4;
  }
  co_await mpg::blocking([&] { th.join(); });
  co_return out;
}

}  // namespace

TEST_CASE("select with a oneshot case and a channel case, in both orders") {
  mpg::runtime rt({.procs = 2});
  for (bool oneshot_first : {true, false}) {
    CAPTURE(oneshot_first);
    select_outcome a = rt.block_on(select_one(oneshot_first, false));
    CHECK(a.index == 0);
    CHECK(a.value == 1);
    select_outcome b = rt.block_on(select_one(oneshot_first, true));
    CHECK(b.index == 1);
    CHECK(b.value == 2);
    CHECK(b.later == 1);  // the losing oneshot case left the value in place
  }
}

namespace {

mpg::task<int> select_ready(bool aborted) {
  auto [tx, rx] = mpg::oneshot<int>();
  mpg::chan<int> ch;
  if (aborted) {
    auto drop = std::move(tx);
  } else {
    tx.send(9);
  }
  auto r = co_await mpg::select(ch.recv(), rx, mpg::default_case);
  CHECK(r.index() == 1);
  if (r.index() != 1) co_return -1;
  const absl::StatusOr<int>& v = std::get<1>(r);
  co_return v.ok() ? *v : (v.status().code() == absl::StatusCode::kAborted ? -2 : -3);
}
mpg::task<std::size_t> select_not_ready() {
  auto [tx, rx] = mpg::oneshot<int>();
  auto r = co_await mpg::select(rx, mpg::default_case);
  co_return r.index();
}

}  // namespace

TEST_CASE("a completed oneshot is a ready select case; an empty one is not") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(select_ready(false)) == 9);
  CHECK(rt.block_on(select_ready(true)) == -2);
  CHECK(rt.block_on(select_not_ready()) == 1);
}

namespace {

// A receiver that the awaiting task reaches through a reference, and that
// another task destroys whenever the awaiting one is requeued.
struct receiver_slot {
  std::optional<mpg::oneshot_receiver<int>> rx;
  bool done = false;
};

// await_sent_values(): 1,000 rounds of an await (or a select) of a
// receiver whose value was sent before it: each completes at once, and
// every kBudget-th spends the task's slice, which requeues the task inside
// the await, between taking its reference on the state and taking the
// value (oneshot.hpp, R5). On one P the destroyer runs only then, and
// destroys the receiver, the state's last end: the await must still
// deliver the value.
mpg::task<std::string> await_sent_values(bool by_select) {
  receiver_slot slot;
  auto destroyer = mpg::spawn([](receiver_slot* s) -> mpg::task<void> {
    while (!s->done) {
      s->rx.reset();
      co_await mpg::yield();
    }
  }(&slot));
  mpg::chan<int> never;
  std::string outcome = "ok";
  for (int i = 0; i < 1000 && outcome == "ok"; ++i) {
    {
      auto [tx, rx] = mpg::oneshot<int>();
      if (!tx.send(i)) outcome = absl::StrCat("send ", i, " refused");
      slot.rx.emplace(std::move(rx));
    }  // the sender is gone: the receiver holds the state alone
    absl::StatusOr<int> v;
    if (by_select) {
      auto r = co_await mpg::select(*slot.rx, never.recv());
      if (r.index() == 0) v = std::get<0>(std::move(r));
    } else {
      v = co_await *slot.rx;
    }
    if (!v.ok() || *v != i) outcome = absl::StrCat("round ", i, ": ", v.status().ToString());
  }
  slot.done = true;
  co_await destroyer;  // it reads the slot, in this frame
  co_return outcome;
}

}  // namespace

TEST_CASE("an await that completes at once keeps the state while a spent budget requeues it") {
  // Without R5's reference on that path, the destroyer frees the state and
  // the await takes the value from freed memory (ASan: heap-use-after-free).
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(await_sent_values(false)) == "ok");
  CHECK(rt.block_on(await_sent_values(true)) == "ok");
}

TEST_CASE("a live sender is a possible wake-up: a send after 300 ms is no deadlock") {
  // Without the receiver's external-waker count, block_on throws
  // deadlock_error after about 150 ms of quiet (three looks 50 ms apart).
  mpg::runtime rt({.procs = 2});
  for (bool select_case : {false, true}) {
    CAPTURE(select_case);
    auto [tx, rx] = mpg::oneshot<int>();
    std::thread th([tx = std::move(tx)]() mutable {
      std::this_thread::sleep_for(300ms);  // the scenario, not synchronisation
      CHECK(tx.send(3));
    });
    absl::StatusOr<int> v;
    if (select_case) {
      v = rt.block_on([](mpg::oneshot_receiver<int> r) -> mpg::task<absl::StatusOr<int>> {
        mpg::chan<int> never;
        auto s = co_await mpg::select(never.recv(), r);
        if (s.index() != 1) co_return absl::InternalError("channel won");
        co_return std::get<1>(std::move(s));
      }(std::move(rx)));
    } else {
      v = rt.block_on(receive(std::move(rx)));
    }
    th.join();
    REQUIRE(v.ok());
    CHECK(*v == 3);
  }
}

namespace {

// The count a receiver holds while it waits is given back exactly: after a
// plain receive, and after a select whose oneshot case lost to a channel,
// a task blocked forever (with a live sender whose receiver does not wait)
// is reported as a deadlock.
mpg::task<void> count_returns_then_block(bool via_select) {
  {
    auto [tx, rx] = mpg::oneshot<int>();
    std::thread th([tx = std::move(tx)]() mutable { tx.send(1); });
    if (via_select) {
      mpg::chan<int> ch(1);
      std::thread th2([ch]() mutable {
        while (!ch.try_send(2)) std::this_thread::yield();
      });
      auto r = co_await mpg::select(rx, ch.recv());
      (void)r;
      co_await mpg::blocking([&] { th2.join(); });
    } else {
      (void)co_await rx;
    }
    co_await mpg::blocking([&] { th.join(); });
  }
  auto [idle_tx, idle_rx] = mpg::oneshot<int>();  // live, but nobody waits on it
  mpg::chan<int> never;
  (void)co_await never.recv();
}

}  // namespace

TEST_CASE("the deadlock check still fires once no receiver waits") {
  // The contract (docs/api.md) counts a live sender whose receiver waits as
  // a possible wake-up; a sender whose receiver does not wait is not one.
  mpg::runtime rt({.procs = 2});
  for (bool via_select : {false, true}) {
    CAPTURE(via_select);
    bool threw = false;
    try {
      rt.block_on(count_returns_then_block(via_select));
    } catch (const mpg::deadlock_error& e) {
      threw = true;
      CHECK(std::string(e.what()).find("chan receive") != std::string::npos);
    }
    CHECK(threw);
  }
}

namespace {

// Receivers await in tasks; plain threads send, each to its share. Every
// value arrives exactly once.
mpg::task<void> collect(std::vector<mpg::oneshot_receiver<int>>* rxs, std::size_t from,
                        std::size_t step, std::atomic<long>* sum, std::atomic<int>* got) {
  for (std::size_t i = from; i < rxs->size(); i += step) {
    absl::StatusOr<int> v = co_await (*rxs)[i];
    if (v.ok()) {
      sum->fetch_add(*v);
      got->fetch_add(1);
    }
    // Drop the end at once: the sender may still hold its reference.
    auto drop = std::move((*rxs)[i]);
  }
}

}  // namespace

TEST_CASE("stress: many threads send to many receiving tasks") {
  constexpr int kThreads = 4;
  constexpr int kReceivers = 8;
  const int n = mpg_test::kSanitized ? 4000 : 40000;
  mpg::runtime rt({.procs = 2});
  std::vector<mpg::oneshot_sender<int>> txs;
  std::vector<mpg::oneshot_receiver<int>> rxs;
  for (int i = 0; i < n; ++i) {
    auto [tx, rx] = mpg::oneshot<int>();
    txs.push_back(std::move(tx));
    rxs.push_back(std::move(rx));
  }
  std::atomic<long> sum{0};
  std::atomic<int> got{0};
  std::vector<mpg::join_handle<void>> hs;
  for (int r = 0; r < kReceivers; ++r)
    hs.push_back(rt.spawn(collect(&rxs, r, kReceivers, &sum, &got), "collector"));
  std::vector<std::thread> ths;
  for (int t = 0; t < kThreads; ++t) {
    ths.emplace_back([&, t] {
      for (int i = t; i < n; i += kThreads) {
        if (i % 5 == 0) {
          auto drop = std::move(txs[i]);  // aborted: counts nothing
        } else {
          txs[i].send(i);
        }
      }
    });
  }
  for (auto& th : ths) th.join();
  for (auto& h : hs) rt.block_on(std::move(h));
  long want = 0;
  int want_n = 0;
  for (int i = 0; i < n; ++i)
    if (i % 5 != 0) {
      want += i;
      ++want_n;
    }
  CHECK(got.load() == want_n);
  CHECK(sum.load() == want);
}

namespace {

// The receiving task frees the state (drops its end, and the sender has
// already dropped its own) the moment it resumes, while the sending thread
// returns from send(): ASan reports a send that touches the state after its
// unlock, TSan one that is not ordered before the free.
mpg::task<void> receive_and_free_rounds(int rounds, std::atomic<mpg::oneshot_sender<int>*>* slot,
                                        std::atomic<bool>* stop) {
  for (int r = 0; r < rounds; ++r) {
    auto [tx, fresh] = mpg::oneshot<int>();
    auto* rx = new mpg::oneshot_receiver<int>(std::move(fresh));
    auto* held = new mpg::oneshot_sender<int>(std::move(tx));
    slot->store(held, std::memory_order_release);
    absl::StatusOr<int> v = co_await *rx;
    CHECK(v.ok());
    delete rx;
  }
  stop->store(true);
}

}  // namespace

TEST_CASE("the receiver may free the state as soon as it resumes") {
  mpg::runtime rt({.procs = 2});
  std::atomic<mpg::oneshot_sender<int>*> slot{nullptr};
  std::atomic<bool> stop{false};
  std::thread th([&] {
    while (!stop.load()) {
      mpg::oneshot_sender<int>* tx = slot.exchange(nullptr, std::memory_order_acquire);
      if (!tx) continue;
      tx->send(1);
      delete tx;
    }
  });
  rt.block_on(receive_and_free_rounds(mpg_test::kSanitized ? 2000 : 20000, &slot, &stop));
  th.join();
}

TEST_CASE("a runtime destroyed with a receiver parked; the sender dropped after it") {
  std::optional<mpg::oneshot_sender<int>> tx;
  std::optional<mpg::oneshot_sender<int>> tx2;
  {
    mpg::runtime rt({.procs = 2});
    auto [a, rx] = mpg::oneshot<int>();
    auto [b, rx2] = mpg::oneshot<int>();
    tx.emplace(std::move(a));
    tx2.emplace(std::move(b));
    rt.go(receive_discard(std::move(rx)), "parked");
    rt.go([](mpg::oneshot_receiver<int> r) -> mpg::task<void> {
      mpg::chan<int> never;
      (void)co_await mpg::select(never.recv(), r);
    }(std::move(rx2)), "parked-select");
    REQUIRE(wait_until([&] {
      return rt.stats().live == 2 && mpg_test::dump_shows(rt, "oneshot receive") &&
             mpg_test::dump_shows(rt, "select");
    }));
  }  // kills both: their awaiters unlink and give back the waker count
  // The receivers are gone; these touch only the states.
  std::thread th([&] {
    CHECK_FALSE(tx->send(1));
    tx2.reset();
  });
  th.join();
}

// select(rx, ctx.done()) with the send and the cancel from two plain
// threads at once: whichever case wins, the value is delivered exactly once
// (a losing oneshot case takes nothing: a later await gets the value).
namespace {
mpg::task<std::string> oneshot_vs_cancel(int rounds) {
  mpg::external_work alive(mpg::runtime_handle::current());
  for (int r = 0; r < rounds; ++r) {
    auto [tx, rx] = mpg::oneshot<int>();
    auto [ctx, cancel] = mpg::with_cancel(mpg::background());
    std::atomic<int> finished{0};
    std::atomic<bool> sent{false};
    std::thread t1([&, tx = std::move(tx)]() mutable {
      sent.store(tx.send(r));
      finished.fetch_add(1);
    });
    std::thread t2([&, cancel = cancel]() mutable {
      cancel();
      finished.fetch_add(1);
    });
    auto res = co_await mpg::select(rx, ctx.done().recv());
    while (finished.load() != 2) co_await mpg::yield();
    t1.join();
    t2.join();
    if (!sent.load()) co_return "send refused in round " + std::to_string(r);
    if (res.index() == 0) {
      auto& v = std::get<0>(res);
      if (!v.ok() || *v != r) co_return "oneshot case: wrong value in round " + std::to_string(r);
      auto again = co_await rx;
      if (again.ok()) co_return "value delivered twice in round " + std::to_string(r);
    } else {
      auto v = co_await rx;
      if (!v.ok() || *v != r) co_return "value lost in round " + std::to_string(r);
    }
  }
  co_return "ok";
}
}  // namespace

TEST_CASE("oneshot select case racing a context cancel: the value is delivered exactly once") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(oneshot_vs_cancel(mpg_test::kSanitized ? 100 : 500)) == "ok");
}
