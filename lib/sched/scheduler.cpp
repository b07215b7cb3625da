// lib/sched/scheduler.cpp: G lifecycle, the run queues, and waking Ms.
//
// Design (Go's M-P-G, see proc.go). A G is a spawned task; a P owns a local
// run queue, a runnext slot, timers, an io_uring ring and a free-G pool; an M
// is an OS thread that runs Gs while it holds a P. The number of Ps bounds
// parallelism; Ms are created lazily when a P has work and no M, and park
// when there is nothing to run. A global run queue, under the scheduler lock,
// takes overflow from full local queues and Gs readied by threads that hold
// no P (foreign spawns, timers fired by sysmon, block_on). Functions posted
// through a runtime_handle wait in a queue of their own beside it, under the
// same protocol (post.cpp).
//
// Who holds a P, and how a P changes hands, is p_ownership.cpp's alone.
//
// Rejected designs: a single locked queue (serialises every spawn); one M per
// P pinned forever (a blocking call would stall the P); waking an M for every
// readied G (thundering herd: Go measured it, hence the spinning protocol).
//
// Parking protocol (no lost wakeups). Writers of work follow:
//   S1. publish the G (into the P's runnext slot, or a push onto the P's
//       ring or spawn deque, or the global queue under the lock),
//       or a posted function (a seq_cst CAS onto its inbox, post.cpp); the
//       pushes onto a P's own queue have no fence before S2 (below, "Own-P
//       pushes");
//   S2. read npidle_ and nmspinning_ (seq_cst); if some P idles and no M
//       spins, CAS nmspinning_ 0->1 and start a spinning M (wake_p).
// An M that finds nothing follows (find_runnable.cpp):
//   P1. under the lock, recheck the global queue (and keep the P while
//       functions are posted), then put its P on the idle list (npidle_
//       += 1, seq_cst): released (T2 of p_ownership.cpp), or parked and
//       still held when it has timers or I/O in flight (T3);
//   P2. if it was spinning, decrement nmspinning_ (seq_cst);
//   P3. if it was spinning, recheck the global and posted queues and every
//       P's local queue and runnext for more than one G (seq_cst loads: a
//       single G is its holder's next, find_runnable.cpp any_surplus_work);
//       if not, recheck the posted queues only (below);
//       on finding work, take its parked P back and spin again, or, with no
//       P, wake_p() (which may hand this very M a P);
//   P4. sleep until handed a P (futex), or, holding a parked P, until its
//       next timer or I/O completion (futex with a deadline, or its ring).
// Runnext hand-offs leave S2 out unless they displace a G. ready() on an M
// holding a P puts the G in that P's runnext slot, which no thief may take
// until sysmon finds the P stuck on one G for a period (runnext_stealable),
// and then sysmon wakes an M itself. So a G alone in runnext is its
// holder's next, as in P3 below, and waking an M for it only makes one
// spin against this P's queue lines and find nothing (pingpong on two Ps:
// 119.5 against 68.5 ns per round trip, perf/ab.py). So the G goes in with
// no fence (a plain store when the slot is empty: run_queue.hpp,
// put_runnext). When it displaces the G that was there, that one goes to
// the ring, which thieves may take: push, then S2, as for any own-P push.
// Another writer leaves S2 out: the M holding a P, for Gs it readies onto
// that P while it reaps the P's ring and then looks for work on it. It runs
// S2 once after the reap when more than the one G it takes next is queued
// (end_reap, find_runnable.cpp "Waking after a reap").
// Own-P pushes. Only a P's holder pushes onto its ring and spawn deque
// (run_queue::owner), and it runs S2 after such a push with no fence
// between (spawn_root, local_put): the push may still sit in the store
// buffer when S2 reads nmspinning_, and a spinner may decrement and
// recheck (P2, P3) without seeing it; then neither wakes an M. The G is not
// lost: it is on the pusher's own P, whose holder is awake and reaches it
// (a running P reaches its own work, below), so what a miss costs is
// parallelism: an idle P while Gs queue on a running one. Sysmon bounds
// that: a P seen with two or more Gs queued on two samples in a row (1 ms
// apart) while a P idles gets a spinning M (sysmon.cpp). Go's runqput
// makes the same trade (a release store, then wakep's loads). The fence
// cost a spawn-join tree (fib, skynet) 6-9% of its wall time on two Ps,
// and yield_ping 23%. The global queue and the posted functions, which any
// M may be the one to serve, keep S1 in full.
// Because S1/S2 and P2/P3 are each a store followed by loads, all seq_cst,
// either the writer sees nmspinning_ == 0 after the last spinner's decrement
// (and wakes an M), or that spinner's recheck sees the work (one G alone on
// a local queue it sees and leaves to that P's holder, which pushed it and
// is awake, as a running P reaches its own work below). A non-spinning M
// that parks rechecks the posted functions alone: the global queue's
// writers take the lock that P1 holds, and a P's own pushes are reached by
// that P's holder, but posts take no lock, and a non-spinning M may park
// while no M spins and its P idles (an M with I/O in flight sleeps in its
// ring without spinning: find_runnable.cpp, spin_for_work). Either the
// poster's S2 sees P1's npidle_ increment, or the recheck sees the post.
// When a spinning M finds work it stops spinning and, if it was the last
// spinner, wakes another (reset_spinning), so new work keeps finding an M
// as Go's does.
// test/park_stress_tests.cpp checks this under TSan.
#include "sched/scheduler.hpp"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "absl/base/attributes.h"
#include "mpg/errors.hpp"
#include "mpg/detail/sched/frame.hpp"
#include "mpg/spawn.hpp"
#include "io/reactor.hpp"
#include "mpg/task.hpp"
#include "sched/trace.hpp"

// MPG_INLINE_INTO_TASKS: the task-facing entries that every spawn, join,
// task end and parking switch calls (spawn_root, join_suspend,
// finish_root, switch_after_park) are inlined by clang's link-time
// optimisation into the coroutines that call them. Those are split into
// their resume parts by then, so a thread_local read stays within one
// resumption (frame.hpp). That saves the call and the saved registers:
// callgrind on 1 P, clang 16, LTO: fib 402 -> 392, skynet 361 -> 330,
// spawn_join 377 -> 356, pingpong 508 -> 498 instructions per op. g++ 12
// warns that such a function might not be inlinable, and ran more
// instructions with the attribute (fib 542 -> 558), so it keeps the calls.
#if defined(__clang__)
#define MPG_INLINE_INTO_TASKS [[gnu::always_inline]]
#else
#define MPG_INLINE_INTO_TASKS
#endif

namespace mpg::detail {

namespace {
// initial-exec: see frame_allocator.cpp.
__attribute__((tls_model("initial-exec"))) thread_local g* tls_g = nullptr;
__attribute__((tls_model("initial-exec"))) thread_local machine* tls_m = nullptr;
}  // namespace

constinit __attribute__((tls_model("initial-exec"))) thread_local int tls_budget = 0;

machine* current_m() noexcept { return tls_m; }
void set_current_m(machine* m) noexcept {
  tls_m = m;
  tls_budget = 0;  // an M starts with its first G's slice (execute())
}
void set_current_g(g* gp) noexcept { tls_g = gp; }

g* current_g() noexcept { return tls_g; }

scheduler* current_scheduler() noexcept {
  machine* m = tls_m;
  return m != nullptr ? m->sched : nullptr;
}

processor* current_p_of(scheduler* s) noexcept {
  machine* m = tls_m;
  return (m != nullptr && m->sched == s) ? m->p() : nullptr;
}

// current_reactor() (io/reactor.hpp): the ring of the P that runs the
// calling task; I/O awaiters submit there.
reactor* current_reactor() noexcept {
  machine* m = tls_m;
  if (m == nullptr || m->p() == nullptr || tls_g == nullptr) return nullptr;
  return m->p()->io.get();
}

const char* to_string(g_status s) noexcept {
  switch (s) {
    case g_status::dead: return "dead";
    case g_status::runnable: return "runnable";
    case g_status::running: return "running";
    case g_status::waiting: return "waiting";
  }
  return "?";
}

// ---------------------------------------------------------------------------
// The task-facing interface of g.hpp.

namespace {
[[noreturn, maybe_unused]] void report_untagged_awaiter(g* gp) noexcept {
  const char* name = gp->name.load(std::memory_order_relaxed);
  std::fprintf(stderr,
               "mpg: task %llu%s%s%s parked twice in one await: an awaiter that parks through the "
               "runtime lacks `using mpg_awaiter = mpg::detail::runtime_awaiter_tag;` "
               "(mpg/detail/sched/g.hpp) and was awaited as a foreign awaitable\n",
               static_cast<unsigned long long>(gp->id.load(std::memory_order_relaxed)),
               name ? " (" : "", name ? name : "", name ? ")" : "");
  std::fflush(stderr);
  std::abort();
}

// A root frame finished on a thread that does not run its G: some awaiter
// resumed the task's handle itself (on a thread of its own, or inline inside
// another task) instead of readying the G.
[[noreturn]] void report_resumed_outside(std::uint64_t gid, const char* name) noexcept {
  std::fprintf(stderr,
               "mpg: task %llu%s%s%s was resumed outside its runtime: an awaiter resumed the "
               "task's coroutine handle itself instead of through the runtime\n",
               static_cast<unsigned long long>(gid), name ? " (" : "", name ? name : "",
               name ? ")" : "");
  std::fflush(stderr);
  std::abort();
}
}  // namespace

void park(std::coroutine_handle<> h, const char* reason, std::source_location where) {
  g* gp = tls_g;
  if (gp == nullptr) throw runtime_misuse_error("mpg: a runtime await was used outside a task");
#ifndef NDEBUG
  // A G parks once per await. Parking a G that is already waiting means an
  // awaiter that parks through the runtime went through await_transform as
  // a foreign one (which parked first): it lacks the tag (g.hpp).
  if (gp->status.load(std::memory_order_relaxed) == g_status::waiting) report_untagged_awaiter(gp);
#endif
  gp->resume = h;
  // Relaxed: diagnostics only (dump); see g.hpp.
  gp->wait_reason.store(reason, std::memory_order_relaxed);
  gp->wait_where.store(where, std::memory_order_relaxed);
  gp->status.store(g_status::waiting, std::memory_order_relaxed);
  if (trace_on()) [[unlikely]] trace_park(gp, reason, where);
}

// Relaxed, as park()'s own store: the site is diagnostics only, and it is
// written and read back by the G's own thread.
void note_wait_site(std::source_location where) noexcept {
  if (g* gp = tls_g) gp->wait_where.store(where, std::memory_order_relaxed);
}
std::source_location noted_wait_site() noexcept {
  g* gp = tls_g;
  return gp != nullptr ? gp->wait_where.load(std::memory_order_relaxed) : std::source_location{};
}

void external_waker_add(scheduler* s) noexcept { s->external_waker_add(); }
void external_waker_remove(scheduler* s) noexcept { s->external_waker_remove(); }

void cancel_park() noexcept {
  g* gp = tls_g;
  gp->wait_reason.store(nullptr, std::memory_order_relaxed);
  gp->status.store(g_status::running, std::memory_order_relaxed);
}

void ready(g* gp) noexcept {
  scheduler* s = gp->sched;
  machine* m = tls_m;
  if (m != nullptr && m->sched == s && m->p() != nullptr) [[likely]] {
    // S1 of the parking protocol. S2 (wake_p) only when it displaced a G
    // to the ring: a G alone in runnext is its holder's next, which no
    // other M may take (the top of the file, "Runnext hand-offs").
    gp->status.store(g_status::runnable, std::memory_order_relaxed);
    if (g* displaced = m->local_runq().put_runnext(gp)) [[unlikely]] {
      s->local_put_tail(m, displaced);
      s->wake_p();
    }
  } else {
    gp->status.store(g_status::runnable, std::memory_order_relaxed);
    s->global_put(gp);
  }
}

void ready_tail(g* gp) noexcept {
  scheduler* s = gp->sched;
  machine* m = tls_m;
  if (m != nullptr && m->sched == s && m->p() != nullptr) {
    if (m->reap_readied >= 0) {  // an I/O completion this M reaps on its P
      gp->status.store(g_status::runnable, std::memory_order_relaxed);
      s->local_put_tail(m, gp);  // S2 once the reap ends (end_reap)
      ++m->reap_readied;
      return;
    }
    s->make_runnable(m, gp, queue_slot::tail);
  } else {
    gp->status.store(g_status::runnable, std::memory_order_relaxed);
    s->global_put(gp);
  }
}

// The slow path of consume_budget_now(): the count reached 0. On an M's
// thread the slice is spent. Any other thread has no slice: its count
// restarts from the top, so that it comes here once per 2^31 charges.
ABSL_ATTRIBUTE_NOINLINE static bool budget_count_ran_out() noexcept {
  // A G's slice is spent: its await yields (requeue_current). Outside a G
  // there is nothing to requeue: a plain thread never runs out; a posted
  // function (or a foreign coroutine hopped onto a P, runtime_handle::
  // schedule) on an M keeps a budget of 1, so that a G that inherits it
  // still yields at its first charge (find_runnable.cpp).
  if (tls_g != nullptr) return true;
  tls_budget = tls_m != nullptr ? 1 : std::numeric_limits<int>::max();
  return false;
}

// Always inline: every runtime await that completes without suspending
// charges the budget here, from task bodies in other files (link-time
// inlining; the thread_local read stays within one resumption: frame.hpp).
// g++ 12's link-time inliner otherwise keeps or drops the call with the
// size of unrelated code, and warns that such a function "might not be
// inlinable".
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wattributes"
[[gnu::always_inline]] bool consume_budget_now() noexcept {
  if (--tls_budget > 0) [[likely]]
    return false;
  return budget_count_ran_out();
}
#pragma GCC diagnostic pop

static bool budget_exhausted() noexcept { return tls_m != nullptr && tls_budget <= 0; }

void requeue_current(std::coroutine_handle<> h) noexcept {
  g* gp = tls_g;
#ifndef NDEBUG
  if (gp->status.load(std::memory_order_relaxed) == g_status::waiting) report_untagged_awaiter(gp);
#endif
  gp->resume = h;
  gp->wait_reason.store(nullptr, std::memory_order_relaxed);
  gp->status.store(g_status::runnable, std::memory_order_relaxed);
  machine* m = tls_m;
  m->sched->local_put_tail(m, gp);
  m->sched->wake_p();
}

namespace {
// Out of line, so that yield_current() builds no exception and keeps no
// frame for it on the path of every yield.
[[noreturn, gnu::noinline]] void throw_yield_outside_task() {
  throw runtime_misuse_error("mpg::yield() awaited outside a task");
}
}  // namespace

void yield_current(std::coroutine_handle<> h) {
  if (tls_g == nullptr) [[unlikely]]
    throw_yield_outside_task();
  requeue_current(h);
}

void requeue_current_next(std::coroutine_handle<> h) noexcept {
  g* gp = tls_g;
  gp->resume = h;
  gp->wait_reason.store(nullptr, std::memory_order_relaxed);
  ready(gp);  // this M holds a P of gp's runtime: into its runnext slot
}

namespace {
// Off the fast path: a spawn from outside the caller's runtime's Ps.
[[gnu::noinline]] void spawn_root_elsewhere(std::coroutine_handle<> root, const char* name,
                                            scheduler* s, promise_base* promise) {
  if (s == nullptr) {
    s = current_scheduler();
    if (s == nullptr || tls_g == nullptr) {
      root.destroy();
      throw runtime_misuse_error("mpg::spawn/go called outside a task of a runtime");
    }
  }
  processor* p = current_p_of(s);
  g* gp = p != nullptr ? s->new_g_local(p, root, name) : s->new_g(root, name);
  promise->gid_ = gp->id.load(std::memory_order_relaxed);
  if (p != nullptr) {
    processor::bump(p->spawned);
    s->make_runnable(tls_m, gp, queue_slot::spawn);
  } else {
    gp->status.store(g_status::runnable, std::memory_order_relaxed);
    s->global_put(gp);
  }
}

// The rest of a spawn on the caller's own P, from its G: publish the id,
// count the spawn and queue the G at the bottom of the spawn deque (at the
// ring's tail if the deque is full), noting its position in the frame's
// header for a join that finds it under younger siblings (join_take_buried).
// The header is written before the push publishes the G, and read by a
// joiner that got the handle from this task.
inline void spawn_local(machine* m, processor* p, g* gp, promise_base* promise,
                        std::coroutine_handle<> root) noexcept {
  promise->gid_ = gp->id.load(std::memory_order_relaxed);
  processor::bump(p->spawned);
  gp->status.store(g_status::runnable, std::memory_order_relaxed);
  if (m->local_runq().push_spawn(gp, &header_of(root.address())->spawn_slot)) [[likely]] {
    // S2 without a fence after the push: the G is on this P, whose holder
    // (we) runs it if no other M takes it, so a wake missed on a stale
    // count costs parallelism for a while, never progress; sysmon bounds
    // the while (the top of the file, "Own-P pushes").
    m->sched->wake_p();
  } else {
    m->sched->make_runnable(m, gp, queue_slot::tail);  // the deque is full
  }
}

// A spawn on the caller's own P whose P has no pooled G or no id left in
// its batch: out of line, so that the fast path makes no call before its
// last one.
[[gnu::noinline]] void spawn_root_refill(machine* m, std::coroutine_handle<> root,
                                         const char* name, promise_base* promise) {
  processor* p = m->p();
  spawn_local(m, p, m->sched->new_g_local(p, root, name), promise, root);
}
}  // namespace

MPG_INLINE_INTO_TASKS void spawn_root(std::coroutine_handle<> root, const char* name,
                                      scheduler* s, promise_base* promise) {
  // The fast path: a task spawning on its own runtime, on the P it runs on.
  machine* m = tls_m;
  if (m == nullptr || tls_g == nullptr || m->p() == nullptr || (s != nullptr && s != m->sched))
      [[unlikely]]
    return spawn_root_elsewhere(root, name, s, promise);
  processor* p = m->p();
  if (!m->sched->can_new_g_local(p)) [[unlikely]]
    return spawn_root_refill(m, root, name, promise);
  spawn_local(m, p, m->sched->new_g_local(p, root, name), promise, root);
}

namespace {
// wake_joiner(): finish_root's step for a joiner found in the join word
// (a parked task, or a select case), out of line so that the paths
// without one save fewer registers.
[[gnu::noinline]] void wake_joiner(std::uintptr_t old) noexcept {
  if (is_select_joiner(old)) {
    wake_select_joiner(old);  // spawn.hpp, J3
  } else {
    g* joiner = reinterpret_cast<g*>(old);
    joiner->joined = nullptr;
    ready(joiner);
  }
}
}  // namespace

MPG_INLINE_INTO_TASKS std::coroutine_handle<> finish_root(std::coroutine_handle<> root,
                                                          promise_base* promise) noexcept {
  g* gp = tls_g;
  if (gp == nullptr || gp->id.load(std::memory_order_relaxed) != promise->gid_) [[unlikely]]
    report_resumed_outside(promise->gid_, promise->name_);
  scheduler* s = gp->sched;
  machine* m = tls_m;
  if (m != nullptr && m->sched == s && m->p() != nullptr) [[likely]]
    s->retire_g_local(m->p(), gp);
  else
    s->retire_g_elsewhere(gp);
  frame_header* hdr = header_of(root.address());
  // A detached task (go(), or a dropped handle) needs no exchange: nobody
  // but its finisher (we) moves the word from kJoinDetached (frame.hpp; the
  // shutdown's kill runs with no M running), so the word stays as loaded.
  // Acquire: pairs with the acq_rel exchange of drop_join(), so the
  // handle's last use happens before we destroy the frame. Otherwise
  // acq_rel: release publishes the result (written before final_suspend)
  // to the joiner; acquire sees the joiner's park before we ready it.
  std::uintptr_t old = hdr->join.load(std::memory_order_acquire);
  if (old != kJoinDetached) old = hdr->join.exchange(kJoinDone, std::memory_order_acq_rel);
  if (old == kJoinDetached) {
    if (promise->exception_) [[unlikely]]
      report_lost_exception(promise->exception_, promise->gid_, promise->name_);
    root.destroy();
  } else if (old != kJoinRunning) {
    wake_joiner(old);
  }
  // The P again, after the destructors that destroy() ran.
  if (m != nullptr && m->sched == s && m->p() != nullptr) return s->next_after_finish(m);
  return std::noop_coroutine();
}

// Switching at finish. When a G ends on an M that holds a P, the next G of
// that P starts at once by symmetric transfer from the finished frame's
// final await, without returning to the M's loop: the joiner just readied
// into runnext (the parent of a stolen child resumes at the child's end,
// on the thief), else the newest spawned G, else the ring's head
// (pop_local's order; when the newest spawns are public ones, the switch
// leaves them to the loop, as taking them back is a call: run_queue.hpp,
// pop_switch). The loop's own checks are only put off, never
// skipped: each switch spends one unit of the G budget (kBudget), so at
// most kBudget switches separate two passes through find_runnable, and a
// switch never crosses a fairness tick (every 61st: the global queue and
// the ring go first there) or runs while the runtime stops or traces (the
// trace's spans are drawn by execute()).
std::coroutine_handle<> scheduler::next_after_finish(machine* m) noexcept {
  processor* p = m->p();
  if (--tls_budget <= 0 || m->trace != nullptr || stopping()) return std::noop_coroutine();
  // find_runnable's fairness turns come when the tick is a multiple of 61
  // (processor.hpp, fair_tick).
  const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
  if (tick >= p->fair_tick) return std::noop_coroutine();
  bool from_next = false;
  g* gp = m->local_runq().pop_switch(runnext_policy::take, &from_next);
  if (gp == nullptr) return std::noop_coroutine();
  // Single writer (the owner); relaxed: sampled by sysmon, as in execute().
  p->schedtick.store(tick + 1, std::memory_order_relaxed);
  begin_run(m, gp);
  return gp->resume;
}

// Switching at park. A G that parks on a channel operation, or on a
// stream's read, write or receive (lib/io/net.cpp, recv_queue.cpp), hands
// its M straight to the next G of its P, by symmetric transfer from the
// parking await_suspend, instead of returning to the M's loop; a ping-pong
// pair then runs as one chain of transfers, each readying the other into
// runnext and parking, and a server's connections that a reap readied run
// one after another, their SQEs batched into one submission. The protocol,
// in the parking awaiter:
//   K1. under the sync object's lock, park() the G (its resume point,
//       status and wait reason) and queue its waiter (for a stream
//       operation: park, then publish the op in its slot and ring,
//       io_park_start, or the waiter in the stream's receive queue);
//   K2. unlock: the release publishes the parked G and its waiter. From
//       here a waker may take the waiter and ready() the G, and another M
//       may resume it, finish it and free its frame (with the awaiter in
//       it) at once;
//   K3. switch_after_park(): reads only the M (tls_m), the P it holds and
//       that P's run queue, which belong to this thread; nothing of the
//       parked G, its frame or its awaiter;
//   K4. return the handle: the compiler's code for the suspend point
//       resumes it as a tail call, as for join_suspend's return after its
//       CAS publishes the park (the frame is suspended before
//       await_suspend runs and is not touched after it returns).
// No memory order beyond the unlock's release is needed: the waker's
// ready() and the resuming M's queue operations order the parked G's
// writes (g.hpp), and K3 reads no shared state but the P's own queue
// (whose owner-side operations argue their orders in run_queue.hpp).
//
// The switch is one pass of the loop's pop_local (find_runnable.cpp,
// step 3), so Go's order and fairness hold: runnext first unless a
// runnext chain has kept it kMaxRunnextStreak turns, then the newest
// spawned G (private ones: pop_switch), then the ring's head; a runnext G
// inherits the time slice (the tick stays), any other starts a new tick.
// The loop's other steps (the global queue, timers and I/O, posted
// functions) are put off, never skipped: each switch spends one unit of
// the G budget (kBudget), so at most kBudget switches separate two passes
// through find_runnable; no switch runs on a fairness tick (every 61st,
// where the loop serves the global queue and the ring first) until the
// loop has taken that tick's turn, while the runtime stops, or while it
// traces (execute() draws the trace's spans). The I/O step's turn, due 16
// ticks after the last, is not kept by a switch: a chain of connections'
// parks leaves its SQEs in the ring, and once the chain ends (the P's
// queue empty, the budget spent, or a fairness tick) the loop's next pass
// through step 2 takes the turn that came due meanwhile and submits them
// together (the turn is counted from the last one for this: a chain
// carries the tick past the multiples of 16). A switch that stopped at
// that turn made tcp_echo (64 connections, 2 Ps) flush as often as the
// loop alone did, at 0.92-0.95x the io_uring floor's rate; without the
// stop, 0.98-1.00x in one state of the machine and 0.94-0.95x in another,
// where the loop alone made 0.92x (about a quarter fewer io_uring_enter
// calls per message), with http_hello unchanged (perf/servers/
// run_servers.py, medians of 5 and 7 interleaved rounds).
std::coroutine_handle<> scheduler::next_after_park(machine* m) noexcept {
  processor* p = m->p();
  if (--tls_budget <= 0 || m->trace != nullptr || stopping()) return std::noop_coroutine();
  const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
  if (tick >= p->fair_tick) return std::noop_coroutine();  // the loop's fairness turn is due
  const runnext_policy policy =
      m->runnext_streak >= kMaxRunnextStreak ? runnext_policy::skip : runnext_policy::take;
  bool from_next = false;
  g* gp = m->local_runq().pop_switch(policy, &from_next);
  if (gp == nullptr) return std::noop_coroutine();
  // The streak counts turns that kept other local work waiting: under
  // skip, runnext comes last, so none waits (pop_local's rule).
  m->runnext_streak = from_next && policy == runnext_policy::take ? m->runnext_streak + 1 : 0;
  // Single writer (the owner); relaxed: sampled by sysmon, as in execute().
  if (!from_next) p->schedtick.store(tick + 1, std::memory_order_relaxed);
  begin_run(m, gp);
  return gp->resume;
}

MPG_INLINE_INTO_TASKS std::coroutine_handle<> switch_after_park() noexcept {
  machine* m = tls_m;
  if (m == nullptr || m->p() == nullptr) [[unlikely]]
    return std::noop_coroutine();
  return m->sched->next_after_park(m);
}

namespace {
[[noreturn, gnu::noinline]] void throw_join_outside_task() {
  throw runtime_misuse_error("mpg: a join_handle was awaited outside a task");
}

// take_child_inline(): the join's work-first step. A child that no M has
// taken yet is the newest entry of this P's spawn deque when spawns and
// joins nest (run_queue.hpp); pop it and retire its G, so that the joiner
// runs its frame inline: no trip through the scheduler. A thief may race
// us for it; the deque's pop decides.
//
// Which G is the child: the newest entry's id (an atomic; ids are never
// reused) must be the child's. The entry may be stolen, finished and its G
// reused meanwhile, giving another id (then the joiner parks), but while
// it is still in our deque, where only this thread puts Gs, its id cannot
// change; so if the pop still finds it there, it is the child's G, or, ids
// being per runtime, a G of this runtime with the id of a child spawned on
// another one. The popped G's root tells (it is ours now, and we wrote it
// at its spawn); a stranger goes back where it was.
// kPrivate: the caller saw the newest spawn in the deque's private part
// (run_queue.hpp, spawns_private). There match runs after the claim
// (work_deque.hpp, try_pop_private), when the G is ours, and the deque
// puts a stranger back itself: the inline path makes no call. The root
// alone tells there: the joiner's handle keeps the child's frame, so no
// other live frame has its address, and only one G was ever made with it
// as its root; a G in the deque is a spawned, unstarted one, whose root
// its spawn wrote (a retired G keeps a stale root, but is in no deque).
// has_id(): reads only the G's atomic id, so it may look at an entry that
// a thief may hold; is_child(): the root, for an entry that is ours.
auto has_id(std::uint64_t gid) noexcept {
  return [gid](g* c) { return c->id.load(std::memory_order_relaxed) == gid; };
}
auto is_child(std::coroutine_handle<> root) noexcept {
  return [root](g* c) { return c->root.address() == root.address(); };
}

template <bool kPrivate>
bool take_child_inline(machine* m, std::coroutine_handle<> root, std::uint64_t gid) noexcept {
  run_queue::owner q = m->local_runq();
  if constexpr (kPrivate) {
    g* child = q.take_newest_private_spawn_if(is_child(root));
    if (child == nullptr) return false;
    m->sched->retire_g_local(m->p(), child);
    return true;
  }
  g* child = q.take_newest_spawn_if(has_id(gid));
  if (child == nullptr) return false;
  if (child->root.address() != root.address()) [[unlikely]] {
    // The slot it left is free: only this thread pushes.
    const bool back = q.push_spawn(child);
    assert(back);
    (void)back;
    return false;
  }
  m->sched->retire_g_local(m->p(), child);
  return true;
}
}  // namespace

namespace {
// join_park(): join_suspend's step when the child cannot run inline: park
// the joiner at h until the child finishes, or go on at once if it did.
// Out of line, so that the inline path saves few registers.
[[gnu::noinline]] std::coroutine_handle<> join_park(g* me, frame_header* hdr,
                                                    promise_base* promise,
                                                    std::coroutine_handle<> h) {
  // The joiner's co_await (join_handle::link_parent); empty when a plain
  // coroutine joins.
  park(h, "join", promise->caller_where_);
  me->joined = hdr;
  std::uintptr_t expected = kJoinRunning;
  // acq_rel on success: publishes our park to the finisher (which acquires
  // in its exchange); acquire on failure: see the finished result.
  if (hdr->join.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(me),
                                        std::memory_order_acq_rel, std::memory_order_acquire))
    return std::noop_coroutine();
  me->joined = nullptr;
  cancel_park();
  if (expected == kJoinDone && budget_exhausted()) {
    requeue_current(h);
    return std::noop_coroutine();
  }
  return h;
}
}  // namespace

namespace {
// run_inline(): the join's end when take_child_inline() claimed the child:
// the joiner resumes the child's frame, which continues at h.
std::coroutine_handle<> run_inline(frame_header* hdr, promise_base* promise,
                                   std::coroutine_handle<> root,
                                   std::coroutine_handle<> h) noexcept {
  // Only the handle owner (us) reads the join state of a claimed frame.
  hdr->join.store(kJoinInline, std::memory_order_relaxed);
  promise->continuation_ = h;
  return root;
}

// join_take_buried(): join_suspend's step when the child is not the newest
// private entry of this P's spawn deque: a task that spawned several
// children joins them in spawn order, so the first join finds its child
// under its younger siblings. If the child is among the newest
// kBuriedScan private entries, take it from there (work_deque.hpp,
// take_private_if) and run it inline, as the join of the newest child
// does; the siblings stay queued. Otherwise park. Out of line, so that the
// inline path makes no call but its tail call.
constexpr std::uint32_t kBuriedScan = 16;
[[gnu::noinline]] std::coroutine_handle<> join_take_buried(machine* m, g* me, frame_header* hdr,
                                                           promise_base* promise,
                                                           std::coroutine_handle<> root,
                                                           std::coroutine_handle<> h) {
  // find before the claim (the entry may be a thief's by now), match after.
  g* child = m->local_runq().take_private_spawn_if(
      has_id(promise->gid_), is_child(root), kBuriedScan, hdr->spawn_slot);
  if (child == nullptr) return join_park(me, hdr, promise, h);
  m->sched->retire_g_local(m->p(), child);
  return run_inline(hdr, promise, root, h);
}

// join_take_back(): join_suspend's step when this P's spawn deque has no
// private entries: the child may be public (work_deque.hpp, take_back).
// Out of line, so that the inline path makes no call but its tail call.
[[gnu::noinline]] std::coroutine_handle<> join_take_back(machine* m, g* me, frame_header* hdr,
                                                         promise_base* promise,
                                                         std::coroutine_handle<> root,
                                                         std::coroutine_handle<> h) {
  if (take_child_inline<false>(m, root, promise->gid_)) return run_inline(hdr, promise, root, h);
  return join_park(me, hdr, promise, h);
}
}  // namespace

MPG_INLINE_INTO_TASKS std::coroutine_handle<> join_suspend(std::coroutine_handle<> root,
                                                           promise_base* promise,
                                                           std::coroutine_handle<> h) {
  g* me = tls_g;
  if (me == nullptr) [[unlikely]] throw_join_outside_task();
  frame_header* hdr = header_of(root.address());
  // Work-first: a child still waiting in this P's spawn deque runs inline,
  // as if awaited as a task<T> (take_child_inline).
  machine* m = tls_m;
  if (m->p() != nullptr && hdr->join.load(std::memory_order_acquire) == kJoinRunning) {
    if (!m->local_runq().spawns_private()) [[unlikely]]
      return join_take_back(m, me, hdr, promise, root, h);
    if (take_child_inline<true>(m, root, promise->gid_)) return run_inline(hdr, promise, root, h);
    return join_take_buried(m, me, hdr, promise, root, h);
  }
  return join_park(me, hdr, promise, h);
}

// ---------------------------------------------------------------------------
// The scheduler object (its construction: scheduler_setup.cpp).

void scheduler::init_g(g* gp, std::uint64_t id, std::coroutine_handle<> root,
                       const char* name) noexcept {
  gp->id.store(id, std::memory_order_relaxed);
  gp->root = root;
  gp->resume = root;
  gp->name.store(name, std::memory_order_relaxed);
  gp->wait_reason.store(nullptr, std::memory_order_relaxed);
}

// The inline halves of making and retiring a G on the P this thread holds;
// the refills, spills and allocations are in g_pools.cpp.
g* scheduler::new_g_local(processor* p, std::coroutine_handle<> root, const char* name) {
  if (!can_new_g_local(p)) [[unlikely]]
    return new_g_slow(p, root, name);
  g* gp = p->gfree.pop();
  init_g(gp, p->next_gid++, root, name);
  return gp;
}

// clear_g(): marks gp dead, which is all that retiring takes: every reader
// of a G's root, resume point and name skips dead Gs (the dump, shutdown,
// live_gs, the await chain), and init_g() writes them again before the G
// is published. (link is written by whoever links the G into the global
// queue.)
void scheduler::clear_g(g* gp) noexcept {
  gp->status.store(g_status::dead, std::memory_order_relaxed);
}

void scheduler::retire_g_local(processor* p, g* gp) noexcept {
  clear_g(gp);
  processor::bump(p->completed);
  if (p->gfree.size() >= processor::kGfreeMax) [[unlikely]] return retire_g_slow(p, gp);
  p->gfree.push(gp);
}

void scheduler::make_runnable(machine* m, g* gp, queue_slot slot) noexcept {
  gp->status.store(g_status::runnable, std::memory_order_relaxed);
  local_put(m, gp, slot);
  wake_p();
}

void scheduler::local_put(machine* m, g* gp, queue_slot slot) noexcept {
  if (slot == queue_slot::spawn && m->local_runq().push_spawn(gp)) {
    return;  // no fence before the caller's S2: "Own-P pushes" (the top of the file)
  }
  local_put_tail(m, gp);
}

void scheduler::local_put_tail(machine* m, g* gp) noexcept {
  // No fence before the caller's S2, as for a spawn: "Own-P pushes".
  if (m->local_runq().push_tail(gp)) [[likely]] return;
  local_put_overflow(m, gp);
}

[[gnu::noinline]] void scheduler::local_put_overflow(machine* m, g* gp) noexcept {
  run_queue::owner q = m->local_runq();
  for (;;) {
    if (q.push_tail(gp)) return;
    // Full: move half of the local queue plus gp to the global queue.
    std::vector<g*>& batch = m->p()->overflow;
    std::uint32_t n = q.take_half(batch.data());
    if (n == 0) continue;  // a thief raced us; there is room now
    batch[n++] = gp;
    for (std::uint32_t i = 0; i + 1 < n; ++i) batch[i]->link = batch[i + 1];
    batch[n - 1]->link = nullptr;
    global_put_batch(batch[0], batch[n - 1], n);
    return;
  }
}

void scheduler::global_put(g* gp) noexcept {
  gp->link = nullptr;
  global_put_batch(gp, gp, 1);
}

void scheduler::global_put_locked(g* first, g* last, std::uint32_t n) noexcept {
  if (gtail_ != nullptr) gtail_->link = first; else ghead_ = first;
  gtail_ = last;
  last->link = nullptr;
  // seq_cst: S1 of the parking protocol for the global queue.
  gsize_.fetch_add(n, std::memory_order_seq_cst);
  gpushes_.fetch_add(n, std::memory_order_relaxed);
}

void scheduler::global_put_batch(g* first, g* last, std::uint32_t n) noexcept {
  // A thread outside the runtime (or another runtime's M) may be the one
  // readying the last G that block_on waits for; the runtime can then be
  // destroyed the moment our push is visible. stop() waits until no caller
  // is still in here. acquire/release: our uses of the scheduler happen
  // before stop() sees the count drop.
  putters_.fetch_add(1, std::memory_order_acquire);
  {
    thread_mutex_lock l(mu_);
    global_put_locked(first, last, n);
  }
  wake_p();
  putters_.fetch_sub(1, std::memory_order_release);
}

g* scheduler::global_get(machine* m, std::uint32_t max) noexcept {
  processor* p = m->p();
  const std::uint64_t size = gsize_.load(std::memory_order_relaxed);  // under mu_
  if (size == 0) return nullptr;
  std::uint64_t n = std::min<std::uint64_t>(size, size / procs() + 1);
  if (max != 0) n = std::min<std::uint64_t>(n, max);
  n = std::min<std::uint64_t>(n, p->runq.capacity() / 2);
  // The Gs after the first go to the local ring, and they must fit: an
  // overflow there would move Gs to the global queue, taking mu_, which we
  // hold. The ring is not always empty here: posted functions run just
  // before the global queue is polled (find_runnable step 4) and may have
  // filled it. Its free room can only grow until our pushes (we are its
  // only producer).
  n = std::min<std::uint64_t>(n, std::uint64_t{m->local_runq().free_slots()} + 1);
  if (n == 0) n = 1;
  gsize_.fetch_sub(n, std::memory_order_seq_cst);
  g* gp = ghead_;
  ghead_ = gp->link;
  // The rest go to the ring in one batch (they fit: the bound above).
  if (n > 1) ghead_ = m->local_runq().push_tail_chain(ghead_, static_cast<std::uint32_t>(n - 1));
  if (ghead_ == nullptr) gtail_ = nullptr;
  gpulls_.fetch_add(n, std::memory_order_relaxed);
  return gp;
}

}  // namespace mpg::detail
