// lib/runtime.cpp: the public runtime object, go/yield, block_on's waiting,
// statistics, the task dump and shutdown.
//
// Shutdown (~runtime), in order:
//   1. stopping_ is set; sysmon stops; every M is woken (futex and ring).
//   2. Each M returns from its current G (a G that never suspends would hold
//      its M: mpg cannot preempt), sees stopping_ and exits; all are joined.
//   3. Each P's ring cancels what is in flight and reaps the last completions.
//   4. Timers still pending are detached from their (soon freed) Ps: every
//      heap is emptied and each timer forgets its P, so it will never fire
//      and cancel_timer() on it returns false without touching the runtime
//      (timers.cpp, "Shutdown"). This comes before step 6: a timer may live
//      in a frame that step 6 frees (a sleep's awaiter, a bare timer), and
//      the heaps must not point into freed frames when anything (step 6's
//      destructors cancelling their own timers, or the detach itself) next
//      walks them. An after() channel or a context that outlives the
//      runtime can still be dropped.
//   5. The tasks still live are reported on stderr: their number, ids, names.
//   6. Every G still live (runnable or waiting) is killed, newest first (a
//      child before the parent it may borrow from; a sync primitive or
//      channel freed before its waiters detaches them): its root frame is
//      destroyed, which destroys the whole chain of frames it awaits. A frame
//      whose join_handle is still held elsewhere keeps its memory until that
//      handle is dropped (frame.hpp, kJoinKilled). Destructors that ready
//      other Gs during this only queue them; nothing runs any more.
// Steps 4 to 6 are kill_remaining(), which detaches the timers itself so
// that no caller can kill frames with their timers still queued.
#include <condition_variable>

#include <algorithm>
#include <iostream>
#include <ostream>
#include <sstream>

#include "mpg/errors.hpp"
#include "mpg/runtime.hpp"
#include "sched/reactor_hook.hpp"
#include "sched/scheduler.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg {

namespace detail {

// A plain thread waiting in block_on blocks on a condition variable: it
// holds no P, so blocking it is fine. (thread_mutex, a std::mutex, rather
// than absl::Mutex in lib/: see thread_mutex.hpp.)
struct block_on_state {
  thread_mutex mu;
  std::condition_variable cv;
  bool done ABSL_GUARDED_BY(mu) = false;
};

block_on_state* new_block_on_state() { return new block_on_state; }
void delete_block_on_state(block_on_state* st) noexcept { delete st; }
void block_on_signal(block_on_state* st) noexcept {
  thread_mutex_lock l(st->mu);
  st->done = true;
  st->cv.notify_one();  // under the lock: st may be deleted right after it
}
void block_on_wait(scheduler* s, block_on_state* st) {
  // Deadlock detection (Go's checkdead): while waiting, every 50 ms look
  // whether the runtime is quiescent (nothing runnable, running, sleeping on
  // a timer, doing I/O or inside mpg::blocking) and made no progress since
  // the last look; two such looks in a row mean every task waits on
  // something only another task could provide. Threads outside the runtime
  // are not counted as possible wakers (as documented in API.md).
  std::uint64_t last_progress = 0;
  int quiet_looks = 0;
  thread_mutex_lock l(st->mu);
  while (!l.wait_for(st->cv, std::chrono::milliseconds(50),
                     [st]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) { return st->done; })) {
    std::uint64_t progress = 0;
    if (s->quiescent(&progress) && (quiet_looks == 0 || progress == last_progress)) {
      if (++quiet_looks >= 3) {
        std::ostringstream os;
        os << "mpg: all tasks are asleep - deadlock!\n";
        s->dump(os);
        throw deadlock_error(os.str());
      }
    } else {
      quiet_looks = 0;
    }
    last_progress = progress;
  }
}
void throw_block_on_inside_task() {
  throw runtime_misuse_error("mpg: runtime::block_on called from inside a task (it would block a P)");
}

void scheduler::kill_remaining(std::ostream& report) {
  // Step 4 first, before any frame is destroyed (see the top of the file).
  // No M runs (stop() joined them and sysmon), so no timer fires or is
  // added while we detach and kill: add_timer() finds this runtime only on
  // one of its Ms (add_timer(t, s) naming a runtime being destroyed, from
  // another thread, is a misuse like any use of an object being destroyed).
  detach_timers();
  std::vector<g*> live;
  {
    thread_mutex_lock l(allg_mu_);
    for_each_g([&](g* gp) {
      if (gp->status.load(std::memory_order_relaxed) != g_status::dead) live.push_back(gp);
    });
  }
  {
    // Drop the queues: nothing will run these Gs; they are killed below.
    thread_mutex_lock l(mu_);
    ghead_ = gtail_ = nullptr;
    gsize_.store(0, std::memory_order_seq_cst);
  }
  if (live.empty()) return;
  // Newest first (ids only grow): a child, which may borrow from its
  // parent's frame, is destroyed before the parent (parking_queue.hpp).
  std::sort(live.begin(), live.end(), [](g* a, g* b) { return a->id.load(std::memory_order_relaxed) > b->id.load(std::memory_order_relaxed); });
  std::ostringstream names;
  std::size_t shown = 0;
  for (g* gp : live) {
    if (shown++ < 20) {
      const char* n = gp->name.load(std::memory_order_relaxed);
      const char* why = gp->wait_reason.load(std::memory_order_relaxed);
      names << "\n  task " << gp->id.load(std::memory_order_relaxed) << (n ? " (" : "") << (n ? n : "") << (n ? ")" : "") << ": "
            << to_string(gp->status.load(std::memory_order_relaxed));
      if (why) names << " on " << why;
    }
  }
  if (live.size() > shown) names << "\n  ...";
  report << "mpg: runtime shut down with " << live.size() << " task(s) still alive; destroying them:"
         << names.str() << std::endl;
  for (g* gp : live) {
    std::coroutine_handle<> root = gp->root;
    gp->status.store(g_status::dead, std::memory_order_relaxed);
    if (!root) continue;
    frame_header* hdr = header_of(root.address());
    // acq_rel: see frame.hpp; no M runs any more, so this only orders
    // against join handles dropped on other threads.
    std::uintptr_t old = hdr->join.exchange(kJoinKilled, std::memory_order_acq_rel);
    if (old == kJoinDetached) {
      hdr->join.store(kJoinDetached, std::memory_order_relaxed);  // free it for real
    }
    gp->root = {};
    gp->resume = {};
    root.destroy();
  }
  thread_mutex_lock l(allg_mu_);
  for (g* gp : live) gfree_global_.push_back(gp);
}

bool scheduler::quiescent(std::uint64_t* progress) const {
  std::uint64_t runs = gpushes_.load(std::memory_order_relaxed);
  bool quiet = nblocking_.load(std::memory_order_relaxed) == 0 &&
               putters_.load(std::memory_order_relaxed) == 0 &&
               gsize_.load(std::memory_order_seq_cst) == 0;
  for (auto& p : ps_) {
    runs += p->tasks_run.load(std::memory_order_relaxed);
    if (p->runq.size() != 0 || p->cur_gid.load(std::memory_order_relaxed) != 0 ||
        p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX ||
        reactor_busy(p->io.get()))
      quiet = false;
  }
  {
    thread_mutex_lock l(mu_);
    if (npidle_.load(std::memory_order_relaxed) != procs()) quiet = false;
  }
  *progress = runs;
  return quiet && live_gs() != 0;
}

runtime_stats scheduler::stats() const {
  runtime_stats s;
  s.procs = procs();
  for (auto& p : ps_) {
    s.spawned += p->spawned.load(std::memory_order_relaxed);
    s.completed += p->completed.load(std::memory_order_relaxed);
    s.local_queue_lengths.push_back(p->runq.size());
    s.tasks_run.push_back(p->tasks_run.load(std::memory_order_relaxed));
  }
  s.spawned += foreign_spawned_.load(std::memory_order_relaxed);
  s.completed += foreign_completed_.load(std::memory_order_relaxed);
  s.live = s.spawned >= s.completed ? s.spawned - s.completed : 0;
  s.steals = steals_.load(std::memory_order_relaxed);
  s.stolen_tasks = stolen_.load(std::memory_order_relaxed);
  s.parks = parks_.load(std::memory_order_relaxed);
  s.global_queue_pulls = gpulls_.load(std::memory_order_relaxed);
  s.global_queue_pushes = gpushes_.load(std::memory_order_relaxed);
  s.global_queue_length = gsize_.load(std::memory_order_relaxed);
  s.threads = threads_.load(std::memory_order_relaxed);
  s.long_task_reports = long_reports_.load(std::memory_order_relaxed);
  return s;
}

void scheduler::dump(std::ostream& os) const {
  thread_mutex_lock l(allg_mu_);
  std::size_t n = 0;
  std::ostringstream body;
  for_each_g([&](g* gp) {
    const g_status st = gp->status.load(std::memory_order_relaxed);
    if (st == g_status::dead) return;
    ++n;
    const char* name = gp->name.load(std::memory_order_relaxed);
    body << "task " << gp->id.load(std::memory_order_relaxed);
    if (name) body << " (" << name << ")";
    body << " [" << to_string(st);
    if (st == g_status::waiting) {
      const char* why = gp->wait_reason.load(std::memory_order_relaxed);
      const std::source_location where = gp->wait_where.load(std::memory_order_relaxed);
      const char* file = where.file_name();
      const char* fn = where.function_name();
      body << ": " << (why ? why : "?");
      if (file && *file) body << " at " << file << ":" << where.line();
      if (fn && *fn) body << " in " << fn;
    }
    body << "]\n";
  });
  os << "mpg: " << n << " live task(s) on " << procs() << " P(s)\n" << body.str();
}

}  // namespace detail

runtime::runtime(runtime_options opts) : sched_(new detail::scheduler(opts)) {}

runtime::~runtime() {
  sched_->stop();
  for (unsigned i = 0; i < sched_->procs(); ++i) detail::reactor_shutdown(sched_->p_at(i)->io.get());
  sched_->kill_remaining(std::cerr);  // detaches the timers, then kills
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
void runtime::dump(std::ostream& os) const { sched_->dump(os); }

void go(task<void> t, const char* name) {
  detail::scheduler* s = detail::current_scheduler();
  if (s == nullptr || detail::current_g() == nullptr)
    throw runtime_misuse_error("mpg::go called outside a task of a runtime");
  auto h = t.release();
  if (!h) detail::throw_task_awaited_twice();
  h.promise().name_ = name;
  // Relaxed: the frame is not shared yet; spawn_root publishes it.
  detail::header_of(h.address())->join.store(detail::kJoinDetached, std::memory_order_relaxed);
  detail::spawn_root(h, name, s, &h.promise());
}

yield_awaiter yield() {
  if (detail::current_g() == nullptr) throw runtime_misuse_error("mpg::yield called outside a task");
  return {};
}

budget_awaiter consume_budget() {
  if (detail::current_g() == nullptr)
    throw runtime_misuse_error("mpg::consume_budget called outside a task");
  return {};
}

}  // namespace mpg
