// lib/runtime.cpp: the public facade of a runtime (mpg/runtime.hpp):
// construction, ~runtime, yield/consume_budget, block_on's waiting and
// its deadlock check. The scheduler behind it lives in lib/sched/; the
// shutdown steps ~runtime runs are written down in lib/sched/shutdown.cpp.
#include <pthread.h>

#include <condition_variable>

#include <algorithm>
#include <atomic>
#include <iostream>
#include <memory>
#include <new>
#include <ostream>
#include <sstream>
#include <vector>

#include "mpg/errors.hpp"
#include "mpg/runtime.hpp"
#include "io/signal_relay.hpp"
#include "sched/leaf_locks.hpp"
#include "sched/scheduler.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg {

namespace detail {

// A plain thread waiting in block_on blocks on a condition variable: it
// holds no P, so blocking it is fine. (thread_mutex, a std::mutex, rather
// than absl::Mutex in lib/: see thread_mutex.hpp.) Shared by block_on and
// its waiter task (runtime.hpp, block_on_slot).
//
// Deadlock checks and blocking calls. A block_on called inside
// mpg::blocking (the thread has given its P away) is listed, with a number
// in the order such waits began, by that blocking call's runtime, `home`
// (scheduler::blocking_wait_begin). While listed, the call returns only
// when a task ends or the block_on throws. A check numbered k (its own
// wait's number; 0 on a plain thread) takes no listed call numbered up to
// k for a possible wake-up (inspect.cpp, inert()). So of several such
// block_ons all stuck, side by side or nested (a later one inside a task
// that an earlier one waits for), the latest reports first: its throw may
// be what lets the others' tasks end. An earlier one, and a plain thread's,
// reports only once nothing it waits for can return. The waiter task
// unlists the call as it signals, on its M, with its P held, so that no
// look of a check sees the call unlisted and that P idle while the call
// is about to return; the thread unlists it if it leaves otherwise (a
// deadlock_error).
struct block_on_state {
  thread_mutex mu;
  std::condition_variable cv;
  bool done ABSL_GUARDED_BY(mu) = false;
  scheduler* home = nullptr;
  scheduler::blocking_wait wait;  // wait.seq: 0 unless listed by home
  bool listed ABSL_GUARDED_BY(mu) = false;

  void unlist() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (listed) {
      listed = false;
      home->blocking_wait_end(&wait);  // lock order: mu, then home's mu_
    }
  }
  ~block_on_state() {
    thread_mutex_lock l(mu);
    unlist();  // block_on left before it waited (its spawn threw)
  }
};

std::shared_ptr<block_on_state> new_block_on_state() {
  // Relaxed: the numbers need only be distinct and ordered among
  // themselves; the lists are read under each runtime's mu_.
  static std::atomic<std::uint64_t> waits_begun{0};
  auto st = std::make_shared<block_on_state>();
  if (machine* m = current_m(); m != nullptr && m->p() == nullptr && m->blocking_from != nullptr) {
    // Inside mpg::blocking of m->sched, which lives at least until this
    // call returns, and so until the state is unlisted.
    st->home = m->sched;
    st->wait.seq = waits_begun.fetch_add(1, std::memory_order_relaxed) + 1;
    thread_mutex_lock l(st->mu);
    st->home->blocking_wait_begin(&st->wait);
    st->listed = true;
  }
  return st;
}
void block_on_signal(block_on_state* st) noexcept {
  thread_mutex_lock l(st->mu);
  st->unlist();
  st->done = true;
  st->cv.notify_one();
}
// The runtimes of the process. A channel, a join handle or a sync object
// may be shared by tasks of two runtimes, so a task of one may be woken by
// a task of another: a runtime's deadlock check counts every other runtime
// that is not inert as a possible wake-up. Registered when constructed,
// unregistered in ~runtime once its tasks have stopped and been killed,
// just before the scheduler is deleted: until then a task still running
// there may wake a task elsewhere, and what inert() reads lives until the
// delete (the lock orders a check against the unregistering). The registry
// is never destroyed: a runtime with static storage may outlive any other
// static.
// Fork. The lock is taken before fork() and released after it in both
// processes (pthread_atfork handlers), so no child starts with it held, and
// the child forgets every runtime listed: they are the parent's, whose Ms
// are not copied into the child, so they can wake nothing there, and their
// locks may stay held by threads that are gone. Kept, they would make a
// new runtime's deadlock check in the child count them as possible wakers
// for ever, or wait on such a lock. (clear() of a vector of pointers frees
// nothing: a fork handler makes no call that is not async-signal-safe.)
// These handlers are apart from the signal ones (signal_handler.cpp, F1),
// and either may run first: a holder of this lock takes only a scheduler's
// lock, for a moment, and a holder of theirs never takes this one (a dump
// that stops the world waits for a task constructing a runtime at most
// until the stop's timeout).
// The leaf locks' handlers are registered before these, so that their
// prepare runs after this one (sched/leaf_locks.cpp, "Order").
struct runtime_registry {
  thread_mutex mu;
  std::vector<const scheduler*> all ABSL_GUARDED_BY(mu);
};
runtime_registry& registry();
// The lock is held from prepare to parent or child, across fork(), which
// the lock analysis cannot follow.
void registry_fork_prepare() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS { registry().mu.lock(); }
void registry_fork_parent() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS { registry().mu.unlock(); }
void registry_fork_child() noexcept ABSL_NO_THREAD_SAFETY_ANALYSIS {
  runtime_registry& r = registry();
  r.all.clear();
  r.mu.unlock();
}
runtime_registry& registry() {
  static runtime_registry* const r = [] {
    auto* n = new runtime_registry;
    register_leaf_fork_handlers();
    // Fails only out of memory; the registry then goes without its fork
    // handlers, as a runtime goes unlisted (register_runtime).
    (void)::pthread_atfork(registry_fork_prepare, registry_fork_parent, registry_fork_child);
    return n;
  }();
  return *r;
}
// Out of memory, a runtime goes unlisted: the others' checks then miss it
// as a possible wake-up, which is better than a constructor that fails
// with its Ms already running.
void register_runtime(const scheduler* s) noexcept {
  runtime_registry& r = registry();
  thread_mutex_lock l(r.mu);
  try {
    r.all.push_back(s);
  } catch (const std::bad_alloc&) {
  }
}
void unregister_runtime(const scheduler* s) noexcept {
  runtime_registry& r = registry();
  thread_mutex_lock l(r.mu);
  if (auto it = std::find(r.all.begin(), r.all.end(), s); it != r.all.end()) r.all.erase(it);
}
// others_inert(): no runtime of the process but `self` can wake a task now;
// *progress gets the sum of their progress counters.
bool others_inert(const scheduler* self, std::uint64_t* progress, std::uint64_t waits_upto) {
  runtime_registry& r = registry();
  thread_mutex_lock l(r.mu);
  bool inert = true;
  std::uint64_t sum = 0;
  for (const scheduler* s : r.all) {
    if (s == self) continue;
    std::uint64_t p = 0;
    if (!s->inert(&p, waits_upto)) inert = false;
    sum += p;
  }
  *progress = sum;
  return inert;
}

void block_on_wait(scheduler* s, block_on_state* st) {
  // Deadlock detection (Go's checkdead): while waiting, every 50 ms look
  // whether the runtime is quiescent (nothing runnable, running, sleeping on
  // a timer, doing I/O or inside mpg::blocking), every other runtime of the
  // process is inert, and nothing made progress since the last look; three
  // such looks in a row mean every task waits on something only another
  // task could provide. Threads outside the runtimes are not counted as
  // possible wakers (docs/diagnostics.md, "Deadlock detection").
  // Calls inside mpg::blocking that wait in a block_on begun no later than
  // this one are no possible wake-up (block_on_state, above).
  const std::uint64_t waits_upto = st->wait.seq;
  std::uint64_t last_progress = 0;
  int quiet_looks = 0;
  thread_mutex_lock l(st->mu);
  while (!l.wait_for(st->cv, std::chrono::milliseconds(50),
                     [st]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) { return st->done; })) {
    std::uint64_t progress = 0, elsewhere = 0;
    const bool quiet =
        s->quiescent(&progress, waits_upto) && others_inert(s, &elsewhere, waits_upto);
    progress += elsewhere;  // compared for equality only: wrapping is harmless
    if (quiet && (quiet_looks == 0 || progress == last_progress)) {
      ++quiet_looks;
    } else {
      quiet_looks = 0;
    }
    last_progress = progress;
    if (auto hook = g_deadlock_look_hook.load(std::memory_order_relaxed)) [[unlikely]]
      hook(quiet_looks);
    if (quiet_looks >= 3) break;
    // ~runtime has begun (which only a thread inside one of its blocking
    // calls can see here: ~runtime waits for those): no M runs the task
    // again.
    if (s->stopping()) break;
  }
  if (st->done) return;
  // This thread returns now: its blocking call, if any, is a possible
  // wake-up again.
  st->unlist();
  if (s->stopping()) {
    throw runtime_misuse_error(
        "mpg: runtime::block_on: the runtime is shutting down; the task will not run");
  }
  // Deadlock. The dump stops the world, so it runs without st->mu: a task
  // that ends now (woken by a thread the check does not count) must not
  // block its M on that lock, and its result is taken if it came meanwhile.
  l.unlock();
  std::ostringstream os;
  os << "mpg: all tasks are asleep - deadlock!\n";
  s->dump(os);
  l.lock();
  if (st->done) return;
  throw deadlock_error(os.str());
}
void check_block_on_caller() {
  machine* m = current_m();
  if (m != nullptr && m->p() != nullptr) {
    throw runtime_misuse_error(
        "mpg: runtime::block_on called on a thread that holds a P (inside a task or a posted "
        "function): it would block that P");
  }
}

}  // namespace detail

runtime::runtime(runtime_options opts) : sched_(new detail::scheduler(opts)) {
  detail::register_runtime(sched_);
}

runtime::~runtime() {
  sched_->stop_debug();                // no signal dump or SCHED line from here on
  sched_->close_handles();             // no post from here on (lib/sched/post.cpp)
  sched_->stop();                      // steps 1 and 2 (lib/sched/shutdown.cpp)
  sched_->finish_trace();              // every M has stopped: write the trace
  sched_->shutdown_io();               // step 3
  sched_->kill_remaining(std::cerr);  // steps 4 to 6
  // A signal delivery that took one of the killed tasks off a channel may
  // still be readying it (lib/io/signal_relay.hpp).
  detail::wait_for_signal_deliveries();
  // Only now: until stop() returned, a task still running here could wake
  // a task of another runtime, whose deadlock check must count on it. What
  // that check reads (inert()) lives until the delete below.
  detail::unregister_runtime(sched_);
  if (runtime_stats s = stats(); s.io_faults_injected != 0) {
    std::cerr << "mpg: " << s.io_faults_injected << " I/O faults injected (eintr "
              << s.io_faults_eintr << ", eagain " << s.io_faults_eagain << ", short "
              << s.io_faults_short << ", reset " << s.io_faults_reset << ", overflow "
              << s.io_faults_overflow << ", nomultishot " << s.io_faults_no_multishot
              << ", nosqe " << s.io_faults_no_sqe << ", nopause " << s.io_faults_no_pause
              << ", misspause " << s.io_faults_miss_pause << ", nocancel "
              << s.io_faults_no_cancel << ")\n";
  }
  delete sched_;
}

unsigned runtime::procs() const noexcept { return sched_->procs(); }

void runtime::go(task<void> t, const char* name) {
  auto h = t.release();
  if (!h) detail::throw_task_awaited_twice();
  h.promise().name_ = name;
  detail::header_of(h.address())->join.store(detail::kJoinDetached, std::memory_order_relaxed);
  detail::spawn_root(h, name, sched_, &h.promise());
}

runtime_stats runtime::stats() const { return sched_->stats(); }
runtime_handle runtime::handle() const noexcept {
  return runtime_handle(sched_->handle_state_ptr());
}
void runtime::dump(std::ostream& os) const { sched_->dump(os); }

yield_awaiter yield() {
  if (detail::current_g() == nullptr)
    throw runtime_misuse_error("mpg::yield called outside a task");
  return {};
}

budget_awaiter consume_budget() {
  if (detail::current_g() == nullptr)
    throw runtime_misuse_error("mpg::consume_budget called outside a task");
  return {};
}

}  // namespace mpg
