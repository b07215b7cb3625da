// reactor_tests: the per-P io_uring reactor driven directly, without a
// scheduler: ops complete through custom callbacks instead of ready().
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include "flush_split.hpp"
#include "io/reactor.hpp"

using namespace std::chrono_literals;
using mpg::detail::io_op;
using mpg::detail::io_opcode;
using mpg::detail::io_request;
using mpg::detail::io_slot;
using mpg::detail::prep_request;
using mpg::detail::reactor;

namespace {

struct counter {
  std::atomic<int> done{0};
};

// An op whose completion bumps a counter.
struct counted_op : io_op {
  counter* counts = nullptr;
};

void count_completion(io_op* op) noexcept {
  static_cast<counted_op*>(op)->counts->done.fetch_add(1, std::memory_order_release);
}

std::unique_ptr<reactor> make_reactor(unsigned entries = 64) {
  auto r = reactor::create(entries);
  REQUIRE_MESSAGE(r.ok(), r.status().ToString());
  return std::move(*r);
}

struct pipe_fds {
  int rd = -1, wr = -1;
  pipe_fds() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rd = fds[0];
    wr = fds[1];
  }
  ~pipe_fds() {
    ::close(rd);
    ::close(wr);
  }
};

// Runs the reactor (wait with a bound) until `c` reaches n or 5 s pass.
void run_until(reactor& r, counter& c, int n) {
  auto give_up = std::chrono::steady_clock::now() + 5s;
  while (c.done.load(std::memory_order_acquire) < n && std::chrono::steady_clock::now() < give_up) {
    r.wait(std::chrono::steady_clock::now() + 100ms);
  }
  REQUIRE(c.done.load() == n);
}

// A read of an empty pipe (it stays in flight) published in a slot, as
// io_start does on a P, and submitted.
struct slotted_read {
  pipe_fds p;
  char buf[8];
  io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
  counter c;
  counted_op op;
  io_slot slot;
  explicit slotted_read(reactor& r) {
    op.complete = count_completion;
    op.counts = &c;
    slot.lock.lock();
    slot.owner = &r;
    op.slot = &slot;
    slot.op.store(&op);
    r.start(&op, prep_request, &rd);
    slot.lock.unlock();
    r.flush();
  }
};

}  // namespace

TEST_CASE("nops complete through their callbacks and busy() tracks them") {
  auto r = make_reactor();
  CHECK_FALSE(r->busy());
  counter c;
  io_request nop{};
  std::vector<counted_op> ops(10);
  for (auto& op : ops) {
    op.complete = count_completion;
    op.counts = &c;
    r->start(&op, prep_request, &nop);
  }
  CHECK(r->busy());
  CHECK(r->has_unsubmitted());
  r->flush();
  CHECK_FALSE(r->has_unsubmitted());
  run_until(*r, c, 10);
  for (auto& op : ops) CHECK(op.res == 0);
  CHECK_FALSE(r->busy());
}

TEST_CASE("reap never blocks and returns 0 when nothing completed") {
  auto r = make_reactor();
  CHECK(r->reap() == 0);
  CHECK(r->try_reap());
}

TEST_CASE("wait with a deadline and nothing in flight returns at the deadline") {
  auto r = make_reactor();
  auto t0 = std::chrono::steady_clock::now();
  CHECK(r->wait(t0 + 20ms) == 0);
  CHECK(std::chrono::steady_clock::now() - t0 >= 19ms);
  CHECK(r->wait(t0) == 0);  // a past deadline does not sleep
}

// A multishot op's CQE that carries more to come (F_MORE) is delivered to
// its callback, which may ready a task (recv_queue.cpp). If the reap that
// wait() makes before it sleeps delivers one, wait() must return instead of
// sleeping: the scheduler's M that sleeps in its ring holding its parked P
// runs the tasks that reap readied only once wait() returns (a server on
// receive() stalled until some other completion came).
TEST_CASE("wait returns without sleeping when its first reap delivers a multishot CQE") {
  auto r = make_reactor();
  pipe_fds p;
  counter c;
  counted_op op;
  op.multishot = true;
  op.complete = count_completion;
  op.counts = &c;
  auto prep_poll = [](io_uring_sqe* sqe, const void* ctx) noexcept {
    io_uring_prep_poll_multishot(sqe, *static_cast<const int*>(ctx), POLLIN);
  };
  r->start(&op, prep_poll, &p.rd);
  r->flush();
  CHECK(r->reap() == 0);  // armed, nothing ready yet
  REQUIRE(::write(p.wr, "x", 1) == 1);
  // The poll CQE (F_MORE set) is in the CQ, or posted by the task_work the
  // reap runs: the reap before the sleep finds it. Before the fix wait()
  // slept to its deadline after delivering it and returned 0.
  const unsigned n = r->wait(std::chrono::steady_clock::now() + 2s);
  CHECK(c.done.load() == 1);
  CHECK(n >= 1);
  // The op stays armed until the reactor's destructor cancels it.
}

TEST_CASE("wake before wait makes the next wait return; no lost wake-ups across threads") {
  auto r = make_reactor();
  r->wake();
  r->wait(std::nullopt);  // must not block: the notification was pending

  // Ping-pong: a waiter (alternating between two threads, so the wake read
  // is sometimes armed by the other one) and a waker. A lost wake-up hangs.
  constexpr int kRounds = 2000;
  std::atomic<int> round{0};
  std::atomic<int> woken{0};
  auto waiter = [&](int parity) {
    for (int i = parity; i < kRounds; i += 2) {
      while (woken.load(std::memory_order_acquire) != i) std::this_thread::yield();
      round.store(i + 1, std::memory_order_release);
      r->wait(std::nullopt);  // returns after the wake (or spuriously earlier)
      woken.store(i + 1, std::memory_order_release);
    }
  };
  std::thread a(waiter, 0), b(waiter, 1);
  std::thread waker([&] {
    for (int i = 1; i <= kRounds; ++i) {
      while (round.load(std::memory_order_acquire) < i) std::this_thread::yield();
      r->wake();
      while (woken.load(std::memory_order_acquire) < i) {
        // A spurious return of the waiter is fine; a lost wake is not. Keep
        // the waker honest: exactly one wake per round.
        std::this_thread::yield();
      }
    }
  });
  a.join();
  b.join();
  waker.join();
  CHECK(woken.load() == kRounds);
}

TEST_CASE("a waiter whose wake reads are both other threads' arms one of its own") {
  // A wake read completes only once the thread that submitted it runs its
  // task_work, which a thread busy in user space does at its next tick. So
  // a waiter that found both reads armed by other threads (its P came to it
  // from two Ms that waited before) must arm one of its own, or a wake()
  // reaches it only a tick late (reactor_wake.cpp, "Waking a waiting M").
  auto r = make_reactor();  // this thread submitted the first read
  std::atomic<bool> stop{false};
  std::atomic<int> armed_tid{0};
  std::thread busy([&] {
    r->wait(std::chrono::steady_clock::now());  // arms the second read, returns at once
    armed_tid.store(static_cast<int>(::gettid()), std::memory_order_release);
    while (!stop.load(std::memory_order_acquire)) {
    }
  });
  while (armed_tid.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  REQUIRE(r->has_own_wake_read(armed_tid.load()));
  // The waiter waits as an M with nothing to run does: again after every
  // return, until told to stop.
  std::atomic<int> waiter_tid{0};
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    waiter_tid.store(static_cast<int>(::gettid()), std::memory_order_release);
    while (!done.load(std::memory_order_acquire)) r->wait(std::nullopt);
  });
  while (waiter_tid.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  // Bounded: a read cancelled for the waiter completes at its armer's next
  // tick at the latest.
  const auto give_up = std::chrono::steady_clock::now() + 10s;
  bool own = false;
  while (!own && std::chrono::steady_clock::now() < give_up) {
    own = r->has_own_wake_read(waiter_tid.load());
    std::this_thread::yield();
  }
  CHECK(own);
  done.store(true, std::memory_order_release);
  r->wake();
  waiter.join();
  stop.store(true, std::memory_order_release);
  busy.join();
}

TEST_CASE("a link timeout ends an op at its deadline with -ETIME") {
  auto r = make_reactor();
  pipe_fds p;
  char buf[8];
  io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
  counter c;
  counted_op op;
  op.complete = count_completion;
  op.counts = &c;
  op.has_deadline = true;
  op.deadline = std::chrono::steady_clock::now() + 30ms;
  r->start(&op, prep_request, &rd);
  run_until(*r, c, 1);
  CHECK(op.outcome() == -ETIME);
  CHECK(std::chrono::steady_clock::now() >= op.deadline);
  // The link timeout's own CQE is accounted for too.
  auto give_up = std::chrono::steady_clock::now() + 2s;
  while (r->busy() && std::chrono::steady_clock::now() < give_up) r->wait(give_up);
  CHECK_FALSE(r->busy());
}

TEST_CASE("an op that completes before its deadline keeps its result") {
  auto r = make_reactor();
  pipe_fds p;
  REQUIRE(::write(p.wr, "hi", 2) == 2);
  char buf[8];
  io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
  counter c;
  counted_op op;
  op.complete = count_completion;
  op.counts = &c;
  op.has_deadline = true;
  op.deadline = std::chrono::steady_clock::now() + 10s;
  r->start(&op, prep_request, &rd);
  run_until(*r, c, 1);
  CHECK(op.outcome() == 2);
  auto give_up = std::chrono::steady_clock::now() + 2s;
  while (r->busy() && std::chrono::steady_clock::now() < give_up) r->wait(give_up);
  CHECK_FALSE(r->busy());
}

TEST_CASE("an op published in a slot is cancelled from another thread") {
  auto r = make_reactor();
  slotted_read read(*r);
  counted_op& op = read.op;
  io_slot& slot = read.slot;
  counter& c = read.c;
  std::thread canceller([&] { mpg::detail::io_cancel(&slot, /*close=*/true); });
  run_until(*r, c, 1);
  canceller.join();
  CHECK(op.outcome() == -ECANCELED);
  CHECK(slot.op.load() == nullptr);
  CHECK(slot.closed.load());
}

// A deadline kick (io_deadline::set) reaches only an op armed later than the
// new deadline: clearing a deadline (kNone) leaves an op that has none in
// flight, while a deadline set on it kicks it (-EINTR, which the op's loop
// issues again). Each kick is followed by a nop through the same ring: once
// the nop has completed, the kick's cancel has been issued and its target's
// completion delivered.
TEST_CASE("a deadline kick skips an op with no deadline when the deadline is cleared") {
  auto r = make_reactor();
  slotted_read read(*r);
  std::atomic<std::int64_t> live{mpg::detail::io_deadline::kNone};
  read.op.live_deadline = &live;  // read only under the reactor's lock, after this
  auto nop_after = [&] {
    counter nc;
    counted_op nop_op;
    nop_op.complete = count_completion;
    nop_op.counts = &nc;
    io_request nop{};
    r->start(&nop_op, prep_request, &nop);
    r->flush();
    run_until(*r, nc, 1);
    r->reap();
  };
  mpg::detail::io_stop_in_flight(&read.slot, {.why = mpg::detail::io_stop::kick,
                                              .deadline_ns = mpg::detail::io_deadline::kNone});
  nop_after();
  CHECK(read.c.done.load() == 0);
  CHECK(read.slot.op.load() == &read.op);
  mpg::detail::io_stop_in_flight(&read.slot,
                                 {.why = mpg::detail::io_stop::kick, .deadline_ns = 1});
  run_until(*r, read.c, 1);
  CHECK(read.op.outcome() == -EINTR);
}

// io_try_stop_in_flight (a move's stop, recv_queue.hpp R6) never waits for
// the ring's lock: while another thread holds it (here a completion
// callback that blocks inside that thread's reap), the stop is refused at
// once and nothing is asked of the op; once the lock is free it is made.
// (A stop that waited would hang here: the holder lets go only after it.)
TEST_CASE("a stop that is only tried is refused while the ring's lock is held, made once free") {
  auto r = make_reactor();
  std::atomic<bool> entered{false};
  std::atomic<bool> release{false};
  struct holding_op : io_op {
    std::atomic<bool>* entered;
    std::atomic<bool>* release;
  };
  holding_op holder;
  holder.entered = &entered;
  holder.release = &release;
  // Runs under the reactor lock (reactor.hpp, "Completion dispatch").
  holder.complete = [](io_op* op) noexcept {
    auto* h = static_cast<holding_op*>(op);
    h->entered->store(true, std::memory_order_release);
    while (!h->release->load(std::memory_order_acquire)) std::this_thread::yield();
  };
  io_request nop{};
  r->start(&holder, prep_request, &nop);
  slotted_read read(*r);  // submits the holder's nop too
  counted_op& op = read.op;
  io_slot& slot = read.slot;
  counter& c = read.c;

  std::thread reaper([&] {
    while (!entered.load(std::memory_order_acquire)) {
      r->wait(std::chrono::steady_clock::now() + 100ms);
    }
  });
  while (!entered.load(std::memory_order_acquire)) std::this_thread::yield();
  const mpg::detail::io_stop_request move{.why = mpg::detail::io_stop::move};
  CHECK_FALSE(mpg::detail::io_try_stop_in_flight(&slot, move));
  CHECK(op.stop == mpg::detail::io_stop::none);  // nothing asked
  CHECK(slot.op.load() == &op);                  // still in flight
  release.store(true, std::memory_order_release);
  reaper.join();

  CHECK(mpg::detail::io_try_stop_in_flight(&slot, move));
  run_until(*r, c, 1);
  CHECK(op.outcome() == -EINTR);  // a move's stop reads -EINTR
  CHECK(slot.op.load() == nullptr);
}

TEST_CASE("a full completion queue overflows into the kernel and nothing is lost") {
  auto r = make_reactor(4);  // SQ 4, CQ 16
  counter c;
  io_request nop{};
  constexpr int kOps = 300;
  std::vector<counted_op> ops(kOps);
  for (auto& op : ops) {
    op.complete = count_completion;
    op.counts = &c;
    r->start(&op, prep_request, &nop);  // flushes itself when the SQ is full
  }
  r->flush();
  run_until(*r, c, kOps);
  CHECK_FALSE(r->busy());
}

TEST_CASE("cancel_all completes every op in flight and refuses new ones") {
  auto r = make_reactor();
  std::vector<std::unique_ptr<pipe_fds>> pipes;
  counter c;
  constexpr int kOps = 8;
  std::vector<counted_op> ops(kOps);
  std::vector<io_request> reqs(kOps);
  char buf[kOps][8];
  for (int i = 0; i < kOps; ++i) {
    pipes.push_back(std::make_unique<pipe_fds>());
    reqs[i] = io_request{.op = io_opcode::read, .fd = pipes.back()->rd, .addr = buf[i], .len = 8};
    ops[i].complete = count_completion;
    ops[i].counts = &c;
    r->start(&ops[i], prep_request, &reqs[i]);
  }
  r->flush();
  r->cancel_all();
  CHECK(c.done.load() == kOps);
  for (auto& op : ops) CHECK(op.outcome() == -ECANCELED);
  CHECK_FALSE(r->busy());
  counted_op late;
  late.complete = count_completion;
  late.counts = &c;
  io_request nop{};
  r->start(&late, prep_request, &nop);
  CHECK(late.outcome() == -ECANCELED);
  CHECK(c.done.load() == kOps + 1);
}

TEST_CASE("destroying a reactor with ops in flight neither hangs nor touches them") {
  pipe_fds p;
  char buf[8];
  io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
  auto op = std::make_unique<counted_op>();
  counter c;
  op->complete = count_completion;
  op->counts = &c;
  {
    auto r = make_reactor();
    r->start(op.get(), prep_request, &rd);
    r->flush();
  }
  CHECK(c.done.load() == 0);
}

TEST_CASE("sysmon-style reaping from another thread completes ops") {
  auto r = make_reactor();
  counter c;
  io_request nop{};
  std::vector<counted_op> ops(50);
  for (auto& op : ops) {
    op.complete = count_completion;
    op.counts = &c;
    r->start(&op, prep_request, &nop);
  }
  r->flush();
  std::thread sysmon([&] {
    auto give_up = std::chrono::steady_clock::now() + 5s;
    while (c.done.load() < 50 && std::chrono::steady_clock::now() < give_up) {
      r->try_reap();
      std::this_thread::yield();
    }
  });
  sysmon.join();
  CHECK(c.done.load() == 50);
}

// submit_now_locked() takes the op's SQEs back out of the
// SQ as "the last n" when the kernel keeps refusing the flush. But the reap
// it runs between its attempts may append SQEs (a multishot op's
// backpressure cancel, dispatch_multishot; a wake read re-armed, dispatch):
// then the take-back removes those and leaves the op's own SQE in the SQ,
// while the op is completed with -EBUSY. The next flush submits it, and its
// CQE would complete the op a second time (in a runtime: a frame already
// resumed and maybe freed, its G readied twice).
namespace {
std::atomic<bool> refuse_flushes{false};
bool refuse_flushes_fn() { return refuse_flushes.load(); }
struct pausing_op : io_op {
  int more = 0;
};
}  // namespace

TEST_CASE("a submit_now op refused by the kernel completes once, also with SQEs queued behind it") {
  auto r = make_reactor();
  pipe_fds p;
  REQUIRE(::write(p.wr, "x", 1) == 1);  // the multishot poll fires at once
  pausing_op m;
  m.multishot = true;
  m.complete = [](io_op* o) noexcept {
    if (o->cqe_flags & mpg::detail::kCqeMore) {
      ++static_cast<pausing_op*>(o)->more;
      o->stop_more = true;  // backpressure: the reactor prepares a cancel
    }
  };
  auto prep_poll = [](io_uring_sqe* sqe, const void* ctx) noexcept {
    io_uring_prep_poll_multishot(sqe, *static_cast<const int*>(ctx), POLLIN);
  };
  r->start(&m, prep_poll, &p.rd);
  r->flush();  // the poll's F_MORE CQE is now posted (or its task_work due)
  mpg::detail::g_flush_refuse_hook.store(&refuse_flushes_fn);
  refuse_flushes.store(true);
  counter c;
  counted_op f;
  f.complete = count_completion;
  f.counts = &c;
  f.submit_now = true;
  io_request nop{};
  r->start(&f, prep_request, &nop);  // refused: completes with -EBUSY
  refuse_flushes.store(false);
  mpg::detail::g_flush_refuse_hook.store(nullptr);
  REQUIRE(m.more >= 1);  // the reap inside submit_now_locked delivered the poll CQE
  CHECK(c.done.load() == 1);
  CHECK(f.res == -EBUSY);
  r->flush();
  for (int i = 0; i < 5; ++i) r->wait(std::chrono::steady_clock::now() + 20ms);
  CHECK(c.done.load() == 1);  // not completed again by its SQE left in the SQ
}

// The kernel may take an op without its link timeout (it stops a batch at
// the first SQE it cannot allocate a request for): the reactor turns the
// stranded timeout into a cancel of the op, which reads -EINTR (issued
// again by its caller) unless it completed first (reactor.cpp, "An op split
// from its link timeout"). g_flush_split_hook makes the kernel stop there.
namespace {
using mpg_test::split_hook_scope;
using mpg_test::split_next;
}  // namespace

TEST_CASE("an op the kernel takes without its link timeout is cancelled, or keeps its result") {
  auto r = make_reactor();
  std::optional<split_hook_scope> hook(std::in_place);  // reset even when a REQUIRE fails
  const auto t0 = std::chrono::steady_clock::now();
  // Starts op (a request with a deadline a minute away) in a flush that is
  // split after it, and waits for its completion (bounded: 5 s).
  const auto start_split = [&](counted_op& op, counter& c, const io_request& rq) {
    op.complete = count_completion;
    op.counts = &c;
    op.has_deadline = true;
    op.deadline = t0 + 60s;
    split_next.store(true);
    r->start(&op, prep_request, &rq);
    r->flush();
    CHECK_FALSE(split_next.load());  // split
    run_until(*r, c, 1);
  };
  {
    pipe_fds p;  // empty: the read stays in flight until cancelled
    char buf[8];
    io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
    counter c;
    counted_op op;
    start_split(op, c, rd);
    CHECK(op.outcome() == -EINTR);
    CHECK(op.stop == mpg::detail::io_stop::kick);
  }
  {
    io_request nop{};
    counter c;
    counted_op op;
    start_split(op, c, nop);
    // Completed before the cancel came (-ENOENT), or cancelled while the
    // kernel's io-wq still held it.
    CHECK((op.outcome() == 0 || op.outcome() == -EINTR));
    for (int i = 0; i < 3 && r->busy(); ++i) r->wait(std::chrono::steady_clock::now() + 20ms);
    CHECK(c.done.load() == 1);
  }
  hook.reset();
  CHECK_FALSE(r->busy());  // the cancels' CQEs took the timeouts' places
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
}
