// mpg/detail/sched/g.hpp: the G (a spawned task's control block) and the small
// scheduler interface that header-only primitives (join handles, channels,
// select, sync, timers, I/O awaiters) use to park and ready tasks.
//
// A G is not the coroutine frame. As in Go, G objects are pooled per P and
// registered once in their runtime's list of all Gs, so spawning a task costs
// no lock and the task dump / shutdown can always find every live task. While
// a G is live it points at the root frame of its task and at `resume`, the
// innermost suspended frame of its chain of awaited tasks.
//
// The park/ready protocol (used by every blocking primitive):
//   1. In await_suspend(h), the awaiter calls park(h, reason, where). That
//      records h as the G's resume point and marks it waiting. Nothing is
//      published yet, so nobody can ready it.
//   2. The awaiter publishes the G (g*) in its wait structure, normally under
//      that structure's lock, and returns from await_suspend without touching
//      the awaiter (its frame) again after the publishing store: from that
//      moment another thread may ready and resume the G.
//   3. Whoever removes the G from the wait structure calls ready(g). Exactly
//      one party may do so per park (the wait structure guarantees it).
//   ready() puts the G on the calling thread's P (runnext slot) when that
//   thread runs a P of the G's runtime; otherwise on the runtime's global
//   queue, waking an idle P. The resumed G observes every write that the
//   readier made before ready() (release/acquire through the run queues).
//
// Runtime awaiters and foreign awaitables. The task promise's await_transform
// (foreign_await.hpp) passes an awaiter through unchanged only when it is a
// runtime awaiter: one that declares
//     using mpg_awaiter = mpg::detail::runtime_awaiter_tag;
// Every awaiter that calls park(), requeue_current() or join_suspend(), or
// transfers into another task's frame, MUST carry that tag, including
// awaiters written in tests and in other libraries built on this interface.
// Any other awaitable is foreign: the task parks ("external") and the
// foreign awaiter gets a bridge handle that readies the G when resumed, from
// whatever thread. A runtime awaiter missing the tag would be wrapped, park
// the G a second time and be readied twice; builds with assertions enabled
// catch that at the inner park() (it aborts naming the missing tag).
// A runtime awaiter whose await_suspend returns a handle returns the no-op
// handle, switch_after_park()'s result (after publishing its park: nothing
// else once the G may be readied), or a task frame of the awaiting G (a
// child it runs, or the awaiting task itself); the transfer guard
// (stack_guard.hpp) relies on it.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <source_location>
#include <string>
#include <string_view>
#include <type_traits>

namespace mpg::detail {

class scheduler;
class promise_base;
struct frame_header;

// The opt-in of runtime awaiters (see the top of the file).
struct runtime_awaiter_tag {};
// The mark of runtime requests: operands from which a task's
// await_transform builds a runtime awaiter (foreign_await.hpp).
struct runtime_request_tag {};
template <class A>
concept runtime_awaiter =
    requires { typename A::mpg_awaiter; } &&
    std::is_same_v<typename A::mpg_awaiter, runtime_awaiter_tag>;

enum class g_status : std::uint8_t {
  dead,      // in a free pool; no task attached
  runnable,  // on a run queue (or about to be)
  running,   // an M is executing it
  waiting,   // parked: on a channel, lock, timer, join, I/O, ...
};

const char* to_string(g_status s) noexcept;

// Kept small (80 bytes): an idle task costs its G plus its frame.
class g {
 public:
  // The frame to resume when this G is scheduled. Written by the G itself
  // (spawn, park) before the G is published; read by the M that runs it
  // after taking it from a run queue (ordered by the queue's release/acquire).
  std::coroutine_handle<> resume{};
  // The root frame: destroyed at shutdown if the task never completes.
  std::coroutine_handle<> root{};
  // Intrusive link for the global run queue and for free pools.
  g* link = nullptr;
  scheduler* sched = nullptr;
  // Never reused. Written when the G is (re)started, read by the dump from
  // any thread: relaxed atomic (a diagnostic snapshot; see status).
  std::atomic<std::uint64_t> id{0};

  // Status, readable by the task dump from any thread. Relaxed: it is a
  // diagnostic snapshot; the run queues order everything that matters.
  std::atomic<g_status> status{g_status::dead};
  // Name given at spawn (static storage, may be null), and why/where the G
  // waits. Written by the G's own thread; read racily by the dump, so they
  // are atomics (relaxed: a torn snapshot is impossible, a stale one is fine).
  std::atomic<const char*> name{nullptr};
  std::atomic<const char*> wait_reason{nullptr};
  // std::source_location is one pointer to static data, so it is atomic
  // without a lock (and keeps the G small: idle tasks cost memory).
  std::atomic<std::source_location> wait_where{};
  // The frame whose join word holds this G while it is parked in a plain
  // join (join_park, scheduler.cpp), else null: ~runtime's kill takes the
  // G back out of a word of another runtime's task (shutdown.cpp). Set by
  // the G before its park is published (the join word's CAS), cleared by
  // the G if that CAS fails, by whoever takes it out of the word (the
  // finisher, before ready(); the kill of the joined task; a handle dropped
  // with the G in the word, drop_join): each access
  // ordered after the one before by that CAS, the word's exchange, or the
  // run queues' release/acquire, so a plain field.
  frame_header* joined = nullptr;
};
static_assert(sizeof(g) <= 80, "a G is part of every idle task's cost");

// clean_function_name(): a std::source_location function name as the task
// dump prints it: without its return type, and with g++'s name of a
// coroutine body ("void f(f(int)::_Z1fi.Frame*)") given as the coroutine's
// ("f(int)"). lib/sched/inspect.cpp.
std::string clean_function_name(std::string_view fn);

// current_g(): the G running on this thread, or nullptr outside any task.
g* current_g() noexcept;

// park(): step 1 of the protocol above, for the current G. Throws
// std::logic_error when called outside a task of some runtime.
void park(std::coroutine_handle<> h, const char* reason,
          std::source_location where = std::source_location::current());

// ready(): step 3. gp must be parked (or freshly spawned) and must be readied
// exactly once per park. Safe from any thread, including threads outside the
// runtime. Puts gp in the runnext slot of the caller's P when possible.
void ready(g* gp) noexcept;

// ready_tail(): like ready() but at the tail of the local queue, so the
// readied G does not take the caller's time slice (used by wake-all paths).
void ready_tail(g* gp) noexcept;

// external_waker_add() / external_waker_remove(): count something outside
// the runtime's own machinery (a live oneshot sender, a foreign awaitable
// in flight, an external_work guard) as a possible wake-up for s's deadlock
// check (block_on): while the count is above zero, s is never quiescent.
// Any thread; each add must be matched by one remove on the same runtime
// while it is alive.
void external_waker_add(scheduler* s) noexcept;
void external_waker_remove(scheduler* s) noexcept;

// cancel_park(): undo park() when the awaiter finds, after parking but
// before publishing, that it need not wait after all.
void cancel_park() noexcept;

// note_wait_site() / noted_wait_site(): for an awaiter that keeps no site of
// its own (the stream ops of net.hpp, which every idle connection's frame
// holds): its link_parent notes the site of the awaiting co_await in the
// current G (wait_where), where its await_suspend finds it again to park.
// Nothing parks between a task's await_transform and the awaiter's
// await_suspend, so the note is that co_await's. Outside a task, the note is
// dropped and the site read back is empty.
void note_wait_site(std::source_location where) noexcept;
std::source_location noted_wait_site() noexcept;

// spawn_root(): attach a fresh G to the suspended root frame `root` (its
// frame_header is header_of(root.address())) and make it runnable: on the
// caller's P (its spawn deque) if the caller runs on a P of `s`, else on the
// global queue. s == nullptr means the current task's runtime; outside any
// task that throws std::logic_error (and destroys the frame).
// promise->gid_ is set before the G can run.
void spawn_root(std::coroutine_handle<> root, const char* name, scheduler* s,
                promise_base* promise);

// finish_root(): the final awaiter of a spawned root frame calls this, with
// the frame's promise. It retires the current G and settles the join state
// (frame.hpp): readies the joiner, or destroys a detached frame (reporting
// and terminating if the detached task ended with an exception). Returns
// the handle to continue with: the P's next G (scheduler.cpp, "Switching
// at finish"), or noop, back to the scheduler loop.
std::coroutine_handle<> finish_root(std::coroutine_handle<> root, promise_base* promise) noexcept;

// report_lost_exception(): a finished task's exception was never observed
// (its handle was dropped): report it on stderr naming the task, terminate.
[[noreturn]] void report_lost_exception(std::exception_ptr e, std::uint64_t gid,
                                        const char* name) noexcept;

// Cooperative budget. Runtime awaits that complete without suspending call
// consume_budget_now(); when it returns true the G has used its slice and the
// awaiter should suspend and yield (requeue_current) instead of completing.
bool consume_budget_now() noexcept;

// requeue_current(h): suspend the current G at h and put it at the tail of
// its P's local run queue (Go's Gosched). For await_suspend of yield points.
void requeue_current(std::coroutine_handle<> h) noexcept;
// yield_current(h): requeue_current(h) for mpg::yield(), which any
// coroutine may await: runtime_misuse_error when no task runs here (a plain
// thread, or a coroutine that runtime_handle::schedule() moved onto a P).
void yield_current(std::coroutine_handle<> h);

// switch_after_park(): for the await_suspend of an awaiter that has parked
// the current G and published it (a waker may already be running it on
// another M): the handle to transfer to, which is the next G of this M's
// P, started here without a trip through the scheduling loop, or
// noop_coroutine() (back to the loop). It touches nothing of the parked G,
// its frame or its awaiter (scheduler.cpp, "Switching at park").
std::coroutine_handle<> switch_after_park() noexcept;

}  // namespace mpg::detail
