// test/boundary_tests.cpp: the runtime's boundary with the outside world:
// mpg::blocking, posts, foreign awaiters, several runtimes.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>

#include "mpg/mpg.hpp"
#include "sched/scheduler.hpp"
#include "child_process.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

mpg::task<int> bt_wait_forever(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<int> bt_join_other(mpg::join_handle<int> h) { co_return co_await h; }

mpg::task<int> bt_select_join_other(mpg::join_handle<int> h, mpg::chan<int> other) {
  auto r = co_await mpg::select(h.join(), other.recv());
  co_return r.index() == 0 ? std::get<0>(r) : -1;
}

// 1: returned, 2: runtime_misuse_error (the documented error for a join of
// a task the runtime killed), 3: deadlock_error, 4: anything else.
template <class F>
int bt_outcome(F&& f) {
  try {
    f();
    return 1;
  } catch (const mpg::deadlock_error&) {
    return 3;
  } catch (const mpg::runtime_misuse_error&) {
    return 2;
  } catch (...) {
    return 4;
  }
}

mpg::task<void> bt_block_on_inside_blocking(mpg::runtime* rt, mpg::chan<int> c,
                                              std::atomic<int>* inner) {
  // Named, not a temporary of the co_await's full-expression: it holds a
  // chan, and g++ 12 may destroy such a temporary twice (README).
  auto call = [rt, c, inner] {
    inner->store(bt_outcome([&] { (void)rt->block_on(bt_wait_forever(c)); }));
  };
  co_await mpg::blocking(call);
}

}  // namespace

// A task of runtime A parked on the join of a task of runtime B; ~B kills
// that task. The join should fail as a join made after the kill does
// (runtime_misuse_error, docs/api.md ~runtime); the joiner is never woken.
TEST_CASE("a cross-runtime joiner of a task killed by ~runtime is woken") {
  mpg::runtime a({.procs = 1});
  auto b = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::chan<int> c;  // nobody sends
  auto hb = b->spawn(bt_wait_forever(c), "b.victim");
  auto ha = a.spawn(bt_join_other(std::move(hb)), "a.joiner");
  REQUIRE(mpg_test::wait_until([&] {
    return mpg_test::dump_shows(a, "join") && mpg_test::dump_shows(*b, "chan receive");
  }, 10s));
  b.reset();
  // Without the fix: block_on's deadlock check throws deadlock_error after
  // ~150 ms (with any external_work guard alive, it hangs for ever).
  const int got = bt_outcome([&] { (void)a.block_on(std::move(ha)); });
  CHECK(got == 2);
}

// The same with the join as a select case (J1-J4 of spawn.hpp).
TEST_CASE("a cross-runtime select on the join of a task killed by ~runtime is woken") {
  mpg::runtime a({.procs = 1});
  auto b = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::chan<int> c, other;  // nobody sends
  auto hb = b->spawn(bt_wait_forever(c), "b.victim");
  auto ha = a.spawn(bt_select_join_other(std::move(hb), other), "a.selector");
  REQUIRE(mpg_test::wait_until([&] {
    return mpg_test::dump_shows(a, "select") && mpg_test::dump_shows(*b, "chan receive");
  }, 10s));
  b.reset();
  CHECK(bt_outcome([&] { (void)a.block_on(std::move(ha)); }) == 2);
}

namespace {
mpg::task<int> bt_join_through(mpg::join_handle<int>* h) { co_return co_await *h; }
}  // namespace

// The other way round: a task of runtime A parks on the join of a task of
// runtime B through a handle that lives outside A (here, on the test's
// stack), and ~A kills the joiner. The joined task's word must not keep
// the killed joiner: B's task then ends, and its join must give its value
// (not ready the freed G), so the handle can still be joined, on B.
TEST_CASE("a cross-runtime joiner killed by its own ~runtime leaves the joined task sound") {
  mpg::runtime b({.procs = 1});
  mpg::chan<int> c(1);
  auto hb = b.spawn(bt_wait_forever(c), "b.task");
  {
    mpg::runtime a({.procs = 1});
    a.spawn(bt_join_through(&hb), "a.joiner").detach();
    REQUIRE(mpg_test::wait_until([&] {
      return mpg_test::dump_shows(a, "join") && mpg_test::dump_shows(b, "chan receive");
    }, 10s));
  }  // ~a kills the joiner
  REQUIRE(c.try_send(7));
  CHECK(b.block_on(bt_join_through(&hb)) == 7);
}

// The same join made after the kill: the documented runtime_misuse_error.
TEST_CASE("(reference) a join after ~runtime killed the task throws runtime_misuse_error") {
  mpg::runtime a({.procs = 1});
  auto b = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  mpg::chan<int> c;
  auto hb = b->spawn(bt_wait_forever(c), "b.victim");
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*b, "chan receive"); }, 10s));
  b.reset();
  CHECK(bt_outcome([&] { (void)a.block_on(bt_join_other(std::move(hb))); }) == 2);
}

// block_on called inside mpg::blocking (documented: "inside mpg::blocking it
// may wait") on the same runtime, for a task that can never finish: the only
// blocking call counted as a possible wake-up is the one waiting in this very
// block_on, so the check never fires: a hang instead of deadlock_error.
TEST_CASE("block_on inside mpg::blocking still reports a deadlock") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c;  // nobody sends (until the test unsticks a hang)
  std::atomic<int> inner{0};
  std::atomic<int> outer{0};
  std::thread t([&] {
    outer.store(bt_outcome([&] { rt.block_on(bt_block_on_inside_blocking(&rt, c, &inner)); }));
  });
  const bool ended = mpg_test::wait_until([&] { return inner.load() != 0; }, 5s);
  if (!ended) (void)c.try_send(1);  // unstick the hang (inner then returns: 1)
  t.join();
  CHECK(ended);
  CHECK(inner.load() == 3);
  CHECK(outer.load() == 1);  // the outer task goes on once the inner block_on threw
}

namespace {

mpg::task<int> bt_child_one() { co_return 1; }

// A blocking call made while another task is queued on the only P: the P
// is handed to a new M (blocking.cpp, T5).
mpg::task<int> bt_blocking_beside_a_queued_task() {
  auto h = mpg::spawn(bt_child_one());
  int v = co_await mpg::blocking([] { return 1; });
  co_return v + co_await h;
}

}  // namespace

// (reference) At runtime_options::max_threads, the hand-off finds no M and
// the P waits for the blocking call to come back: the program runs on.
TEST_CASE("(reference) at max_threads a blocking hand-off degrades and the task ends") {
  mpg::runtime rt({.procs = 1, .max_threads = 1});
  CHECK(rt.block_on(bt_blocking_beside_a_queued_task()) == 2);
}

// The same program when the OS refuses the new thread (EAGAIN: RLIMIT_NPROC,
// a cgroup pids limit, memory): std::thread throws inside assign_m(), which
// is noexcept, under mu_: std::terminate, where the thread limit above
// degrades gracefully.
TEST_CASE("an OS refusal of a new M is not a crash") {
  if (::geteuid() != 0) return;  // needs root to drop to a uid RLIMIT_NPROC binds
  auto r = mpg_test::run_child([] {
    mpg::runtime rt({.procs = 1});
    (void)rt.block_on(bt_child_one());  // the first M exists
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) _exit(3);
    rlimit one{1, 1};
    if (::setrlimit(RLIMIT_NPROC, &one) != 0) _exit(4);
    const int v = rt.block_on(bt_blocking_beside_a_queued_task());
    _exit(v == 2 ? 0 : 5);
  }, 20s);
  INFO(r.output);
  CHECK_FALSE(r.timed_out);
  CHECK(WIFEXITED(r.status));
  CHECK(WEXITSTATUS(r.status) == 0);
}

namespace {

// A plain (non-mpg) coroutine, as a library's event loop run inside
// mpg::blocking would resume one (docs/api.md: an io_context runs "on a
// thread of its own, or inside mpg::blocking"), that hops onto runtime `to`.
// *out: 1 hopped and runs on `to`, 2 schedule() threw runtime_misuse_error,
// 3 ran elsewhere.
mpg_test::eager_coroutine bt_hop(mpg::runtime_handle to, std::atomic<int>* out) {
  try {
    co_await to.schedule();
  } catch (const mpg::runtime_misuse_error&) {
    out->store(2);
    co_return;
  }
  out->store(to.running_in_this_thread() && mpg::detail::current_m() != nullptr &&
                     mpg::detail::current_m()->p() != nullptr
                 ? 1
                 : 3);
}

mpg::task<void> bt_hop_from_blocking(mpg::runtime_handle to, std::atomic<int>* out) {
  // Named: g++ 12 may destroy a temporary of a co_await's full-expression
  // twice (README), and this lambda holds a handle, whose second
  // destruction would free the runtime's control block while it is in use.
  auto call = [to, out] {
    bt_hop(to, out);
    // Bounded: the hop runs as a posted function of `to`.
    CHECK(mpg_test::wait_until([out] { return out->load() != 0; }, 10s));
  };
  co_await mpg::blocking(std::move(call));
}

}  // namespace

// schedule() from a plain coroutine inside mpg::blocking: the thread is not
// a task (it holds no P), but in_mpg_task() still sees the blocking task's G.
TEST_CASE("schedule() from a plain coroutine inside mpg::blocking hops to another runtime") {
  mpg::runtime a({.procs = 1});
  mpg::runtime b({.procs = 1});
  std::atomic<int> out{0};
  a.block_on(bt_hop_from_blocking(b.handle(), &out));
  CHECK(out.load() == 1);
}

// The same hop to the blocking call's own runtime: the thread is one of its
// Ms, but holds no P, so it posts as any other thread does.
TEST_CASE("schedule() from a plain coroutine inside mpg::blocking hops onto a P of its runtime") {
  mpg::runtime rt({.procs = 1});
  std::atomic<int> out{0};
  rt.block_on([](std::atomic<int>* out) -> mpg::task<void> {
    co_await bt_hop_from_blocking(mpg::runtime_handle::current(), out);
  }(&out));
  CHECK(out.load() == 1);
}

namespace {

mpg::task<void> bt_two_blocking_block_ons(mpg::runtime* rt, mpg::chan<int> c1,
                                          mpg::chan<int> c2, std::atomic<int>* in1,
                                          std::atomic<int>* in2) {
  auto h1 = mpg::spawn(bt_block_on_inside_blocking(rt, c1, in1));
  auto h2 = mpg::spawn(bt_block_on_inside_blocking(rt, c2, in2));
  co_await h1;
  co_await h2;
}

}  // namespace

// Two blocking calls side by side, each waiting in a block_on for a task
// that never ends: the later one's check takes neither call for a possible
// wake-up and reports; then the earlier one's (lib/runtime.cpp,
// block_on_state).
TEST_CASE("two blocking calls each waiting in block_on of a stuck task: both report") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c1, c2;  // nobody sends (until the test unsticks a hang)
  std::atomic<int> in1{0}, in2{0}, outer{0};
  std::thread t([&] {
    outer.store(bt_outcome(
        [&] { rt.block_on(bt_two_blocking_block_ons(&rt, c1, c2, &in1, &in2)); }));
  });
  const bool ended =
      mpg_test::wait_until([&] { return in1.load() != 0 && in2.load() != 0; }, 10s);
  if (in1.load() == 0) (void)c1.try_send(1);
  if (in2.load() == 0) (void)c2.try_send(1);
  t.join();
  CHECK(ended);
  CHECK(in1.load() == 3);
  CHECK(in2.load() == 3);
  // The plain thread's check counts both calls as possible wake-ups (they
  // may throw): their throws let the outer task end.
  CHECK(outer.load() == 1);
}

namespace {

// A blocking call that, once ~runtime has begun (its handle refuses posts),
// runs block_on on the same runtime, of a task that waits on c, which
// nobody sends on: it cannot end by itself (the Ms may still run it until
// ~runtime stops them, and a task that could end would then return).
mpg::task<void> bt_block_on_during_shutdown(mpg::runtime* rt, mpg::chan<int> c,
                                            std::atomic<int>* stage, std::atomic<int>* result) {
  mpg::runtime_handle h = mpg::runtime_handle::current();
  // Named: it holds a chan and a handle (see bt_block_on_inside_blocking).
  auto call = [rt, c, h, stage, result] {
    stage->store(1);
    // Bounded: the test destroys the runtime once stage is 1.
    if (!mpg_test::wait_until([&] { return !h.post([] {}); }, 10s)) return;
    stage->store(2);
    result->store(bt_outcome([&] { (void)rt->block_on(bt_wait_forever(c)); }));
  };
  co_await mpg::blocking(call);
}

}  // namespace

// ~runtime waits for every M, one inside mpg::blocking included, and runs
// no task: a block_on made there meanwhile throws runtime_misuse_error
// (runtime.hpp) rather than wait for ever, with ~runtime waiting for it.
TEST_CASE("block_on inside mpg::blocking while ~runtime runs throws, and ~runtime returns") {
  auto rt = std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
  std::atomic<int> stage{0}, result{0};
  mpg::chan<int> c;
  rt->go(bt_block_on_during_shutdown(rt.get(), c, &stage, &result));
  REQUIRE(mpg_test::wait_until([&] { return stage.load() == 1; }, 10s));
  std::atomic<bool> destroyed{false};
  std::thread killer([&] {
    rt.reset();
    destroyed.store(true);
  });
  const bool ok = mpg_test::wait_until([&] { return destroyed.load(); }, 10s);
  if (!ok) {
    MESSAGE("stage " << stage.load() << ", ~runtime still running after 10 s");
    CHECK(ok);
    std::fflush(nullptr);
    std::_Exit(1);  // the destructor cannot be unstuck
  }
  killer.join();
  CHECK(stage.load() == 2);
  // runtime_misuse_error; or deadlock_error, should the deadlock check's
  // looks (150 ms) all come before ~runtime stops the Ms.
  CHECK((result.load() == 2 || result.load() == 3));
}

// --- A hand-off readied for a task that its ~runtime kills before it ran ----
//
// Two runtimes share a sync object (docs/api.md allows it). A task of A
// parks on it; the object is released before ~A begins, readying that task,
// while A's only M is held by a task (bt_hold_m) that ends only once ~A has
// set stopping_: the readied task never runs, and ~A kills it. What was
// handed to it (a mutex's wake-up claim or the mutex itself, a permit, a
// read or write lock) must come back, or B's tasks wait for ever.

namespace {

// Holds A's only M: returns once the runtime stops (bounded).
mpg::task<void> bt_hold_m_until_stopping(std::atomic<int>* started) {
  mpg::detail::scheduler* s = mpg::detail::current_g()->sched;
  started->store(1);
  (void)mpg_test::wait_until([s] { return s->stopping(); }, 20s);
  co_return;
}

// Holds A's only M until *go is set (bounded).
mpg::task<void> bt_hold_m_until(std::atomic<int>* started, std::atomic<int>* go) {
  started->store(1);
  (void)mpg_test::wait_until([go] { return go->load() != 0; }, 20s);
  co_return;
}

mpg::task<void> bt_lock_once(mpg::mutex* m, std::atomic<int>* got) {
  co_await m->lock();
  got->fetch_add(1);
  m->unlock();
}

mpg::task<void> bt_acquire_once(mpg::semaphore* s, std::atomic<int>* got) {
  co_await s->acquire();
  got->fetch_add(1);
  s->release();
}

mpg::task<void> bt_rw_once(mpg::rwmutex* rw, bool writer, std::atomic<int>* got) {
  if (writer) {
    co_await rw->lock();
    got->fetch_add(1);
    rw->unlock();
  } else {
    co_await rw->lock_shared();
    got->fetch_add(1);
    rw->unlock_shared();
  }
}

std::unique_ptr<mpg::runtime> bt_one_proc() {
  return std::make_unique<mpg::runtime>(mpg::runtime_options{.procs = 1});
}

// Parks a task on A with park_a (checked with the dump: reason_a), then one
// on B behind it with park_b (reason_b), then holds A's M with
// bt_hold_m_until_stopping.
template <class ParkA, class ParkB>
void bt_park_both_and_hold(mpg::runtime& a, mpg::runtime& b, const char* reason_a,
                           const char* reason_b, ParkA park_a, ParkB park_b,
                           std::atomic<int>* started) {
  park_a();
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(a, reason_a); }, 10s));
  park_b();
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(b, reason_b); }, 10s));
  a.go(bt_hold_m_until_stopping(started));
  REQUIRE(mpg_test::wait_until([&] { return started->load() != 0; }, 10s));
}

}  // namespace

TEST_CASE("mutex: a wake-up readied for a task ~runtime kills passes to the next waiter") {
  mpg::mutex m;
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  std::atomic<int> started{0}, a_got{0}, b_got{0};
  REQUIRE(m.try_lock());
  bt_park_both_and_hold(
      *a, b, "mutex lock", "mutex lock", [&] { a->go(bt_lock_once(&m, &a_got)); },
      [&] { b.go(bt_lock_once(&m, &b_got)); }, &started);
  m.unlock();  // normal mode: sets kWoken and readies A's waiter, which cannot run
  a.reset();   // kills it before it ran
  CHECK(a_got.load() == 0);
  // Without the undo, kWoken stays set and B's waiter is never woken.
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
}

TEST_CASE("mutex: a starvation hand-off to a task ~runtime kills is given back") {
  mpg::mutex m;
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  std::atomic<int> started1{0}, go1{0}, started2{0}, a_got{0}, b_got{0};
  REQUIRE(m.try_lock());
  a->go(bt_lock_once(&m, &a_got));
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "mutex lock"); }, 10s));
  a->go(bt_hold_m_until(&started1, &go1));
  REQUIRE(mpg_test::wait_until([&] { return started1.load() != 0; }, 10s));
  m.unlock();  // readies A's waiter (it cannot run yet)
  mpg_test::busy_for(2ms);  // its wait passes the 1 ms starvation threshold
  REQUIRE(m.try_lock());    // and it loses to this barging lock
  // Queued on A behind the waiter: runs once the waiter has retried and
  // parked again, setting kStarving.
  a->go(bt_hold_m_until_stopping(&started2));
  go1.store(1);
  REQUIRE(mpg_test::wait_until([&] { return started2.load() != 0; }, 10s));
  m.unlock();  // starvation mode: hands the mutex to A's waiter
  REQUIRE_FALSE(m.try_lock());  // it was handed over, not released
  a.reset();   // kills the waiter before it ran
  CHECK(a_got.load() == 0);
  // Without the undo, the mutex stays locked for ever.
  b.go(bt_lock_once(&m, &b_got));
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
}

TEST_CASE("semaphore: a permit handed to a task ~runtime kills is released again") {
  mpg::semaphore s(1);
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  std::atomic<int> started{0}, a_got{0}, b_got{0};
  REQUIRE(s.try_acquire());
  bt_park_both_and_hold(
      *a, b, "semaphore acquire", "semaphore acquire", [&] { a->go(bt_acquire_once(&s, &a_got)); },
      [&] { b.go(bt_acquire_once(&s, &b_got)); }, &started);
  s.release();  // hands the permit to A's waiter, which cannot run
  a.reset();    // kills it before it ran
  CHECK(a_got.load() == 0);
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
  // B's task counts its acquire before it releases the permit.
  CHECK(mpg_test::wait_until([&] { return s.available() == 1; }, 5s));
}

TEST_CASE("rwmutex: a read lock handed to a task ~runtime kills is released again") {
  mpg::rwmutex rw;
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  std::atomic<int> started{0}, a_got{0}, b_got{0};
  REQUIRE(rw.try_lock());
  bt_park_both_and_hold(
      *a, b, "rwmutex lock_shared", "rwmutex lock", [&] { a->go(bt_rw_once(&rw, false, &a_got)); },
      [&] { b.go(bt_rw_once(&rw, true, &b_got)); }, &started);
  rw.unlock();  // admits A's reader, which cannot run
  a.reset();    // kills it before it ran
  CHECK(a_got.load() == 0);
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
}

TEST_CASE("rwmutex: a write lock handed to a task ~runtime kills is released again") {
  mpg::rwmutex rw;
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  std::atomic<int> started{0}, a_got{0}, b_got{0};
  REQUIRE(rw.try_lock());
  bt_park_both_and_hold(
      *a, b, "rwmutex lock", "rwmutex lock", [&] { a->go(bt_rw_once(&rw, true, &a_got)); },
      [&] { b.go(bt_rw_once(&rw, true, &b_got)); }, &started);
  rw.unlock();  // hands the write lock to A's writer, which cannot run
  a.reset();    // kills it before it ran
  CHECK(a_got.load() == 0);
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
}

namespace {

// Locks m through a guard, says so, and waits on c for ever: the guard
// unlocks when ~runtime kills the task.
mpg::task<void> bt_hold_guard(mpg::mutex* m, std::atomic<int>* locked, mpg::chan<int> c) {
  auto guard = co_await m->scoped_lock();
  locked->store(1);
  (void)co_await c.recv();
}

mpg::task<void> bt_lock_after(mpg::chan<int> go, mpg::mutex* m, std::atomic<int>* got) {
  (void)co_await go.recv();
  co_await m->lock();
  got->fetch_add(1);
  m->unlock();
}

}  // namespace

// The hand-off made during the kill: ~A kills the younger task first, whose
// guard unlocks and readies A's older waiter (a wake-up it never takes up:
// it is killed next). The claim must reach B's waiter queued behind it.
TEST_CASE("mutex: an unlock by a killed task's guard reaches another runtime's waiter") {
  mpg::mutex m;
  mpg::runtime b({.procs = 1});
  auto a = bt_one_proc();
  mpg::chan<int> go(1), never;
  std::atomic<int> locked{0}, a_got{0}, b_got{0};
  a->go(bt_lock_after(go, &m, &a_got));  // older: killed after the holder
  a->go(bt_hold_guard(&m, &locked, never));
  REQUIRE(mpg_test::wait_until([&] { return locked.load() != 0; }, 10s));
  REQUIRE(go.try_send(1));
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(*a, "mutex lock"); }, 10s));
  b.go(bt_lock_once(&m, &b_got));
  REQUIRE(mpg_test::wait_until([&] { return mpg_test::dump_shows(b, "mutex lock"); }, 10s));
  a.reset();
  CHECK(a_got.load() == 0);
  CHECK(mpg_test::wait_until([&] { return b_got.load() == 1; }, 5s));
}

namespace {

// Owns a semaphore (one permit, taken) and a mutex (locked) in its frame,
// publishes them and waits on c for ever.
mpg::task<void> bt_own_primitives(std::atomic<mpg::semaphore*>* sp, std::atomic<mpg::mutex*>* mp,
                                  mpg::chan<int>* c) {
  mpg::semaphore s(1);
  mpg::mutex m;
  (void)s.try_acquire();
  (void)m.try_lock();
  sp->store(&s);
  mp->store(&m);
  (void)co_await c->recv();
}

// The same at the bottom of a chain of `depth` awaits (killed on a thread of
// its own when deeper than 8192: shutdown.cpp, destroy_root).
mpg::task<void> bt_own_deep(int depth, std::atomic<mpg::semaphore*>* sp,
                            std::atomic<mpg::mutex*>* mp, mpg::chan<int>* c) {
  if (depth == 0)
    co_await bt_own_primitives(sp, mp, c);
  else
    co_await bt_own_deep(depth - 1, sp, mp, c);
}

mpg::task<void> bt_wait_on_published(std::atomic<mpg::semaphore*>* sp, mpg::chan<int> go) {
  (void)co_await go.recv();
  co_await sp->load()->acquire();
  sp->load()->release();
}

mpg::task<void> bt_lock_published(std::atomic<mpg::mutex*>* mp, mpg::chan<int> go) {
  (void)co_await go.recv();
  co_await mp->load()->lock();
  mp->load()->unlock();
}

// The primitive is freed before the waiter it handed over to: it lives in
// the frame of a younger task, killed first. The waiter, killed next, must
// not give back to freed memory (ASan reports a use after free otherwise).
void bt_hand_off_from_younger(int depth) {
  auto a = bt_one_proc();
  mpg::chan<int> go(2), never;
  std::atomic<mpg::semaphore*> sp{nullptr};
  std::atomic<mpg::mutex*> mp{nullptr};
  std::atomic<int> started{0};
  a->go(bt_wait_on_published(&sp, go));  // older than the owner
  a->go(bt_lock_published(&mp, go));
  a->go(bt_own_deep(depth, &sp, &mp, &never));
  REQUIRE(mpg_test::wait_until([&] { return mp.load() != nullptr; }, 10s));
  REQUIRE(go.try_send(1));
  REQUIRE(go.try_send(1));
  REQUIRE(mpg_test::wait_until([&] {
    return mpg_test::dump_shows(*a, "semaphore acquire") && mpg_test::dump_shows(*a, "mutex lock");
  }, 10s));
  a->go(bt_hold_m_until_stopping(&started));
  REQUIRE(mpg_test::wait_until([&] { return started.load() != 0; }, 10s));
  sp.load()->release();  // hands the permit to the waiter, which cannot run
  mp.load()->unlock();   // readies the locker with the wake-up claim
  a.reset();
}

}  // namespace

TEST_CASE("a hand-off from a primitive in a younger killed frame is not given back") {
  bt_hand_off_from_younger(0);
}

// The chain is destroyed on a thread of its own, which must report the
// primitives it destroys to the same kill.
TEST_CASE("a hand-off from a primitive in a younger killed deep chain is not given back") {
  bt_hand_off_from_younger(9000);
}
