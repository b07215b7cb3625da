// lib/sched/inspect.cpp: looking at a running scheduler from outside:
// stats(), dump(), and quiescent() for block_on's deadlock check. stats()
// and quiescent() read relaxed counters and snapshots and stop nothing.
//
// Await chains. Each task line of the dump is followed by the task's chain
// of coroutines, innermost first, one indented line each:
//       at consume(mpg::chan<int>) worker.cpp:42
// The innermost line is the G's park site (g::wait_where: the operation's
// std::source_location, whose function is the innermost coroutine). Every
// frame above is the continuation of the one below, named by the lower
// frame's promise_base::caller_where_: the site of the co_await with which
// the parent awaited it, which the awaiting task's await_transform records
// (task.hpp). The walk ends at the G's root. Nothing is recorded at run
// time beyond that one pointer per task await or join; names come from the
// source locations, so they need no symbols and survive optimisation. A frame awaited by an
// mpg awaiter on the task's behalf (the mutex's slow path) repeats its
// parent's site and is shown once.
//
// Reading a chain is only safe while its frames cannot change: a parked
// task that another thread readies could run, finish frames and free them
// under the reader. So the chains are read only while no G runs:
//   - the deadlock report: block_on's check dumps a quiescent runtime, but
//     a plain thread may still wake a task, so it stops the world as dump()
//     does;
//   - the leak report at ~runtime: the Ms are stopped (shutdown.cpp);
//   - dump(): it stops the world first (stop_the_world below): it posts one
//     function per P, one at a time, each of which holds its P until the
//     dump is written. A function runs on an M that holds a P and blocks
//     that M, so the next function goes to another P; once every P (but the
//     caller's own, when the dump runs in a task) holds one, no G runs:
//     readied Gs only queue, timers and I/O completions wait for their P's
//     M (sysmon, which serves stuck and unheld Ps, serves none while the
//     world is stopped: sysmon.cpp), and an M leaving mpg::blocking finds
//     no idle P and queues its G.
//     A P that does not come within kStopTimeout (a task that never yields,
//     or a runtime shutting down, which drops posted functions) leaves the
//     dump without chains, saying so. Stops come one at a time (stw_mu_):
//     two that each held some of the Ps would wait for each other's. A
//     caller that holds a P waits for another stop only as long as that
//     stop may wait for its P, then goes without chains.
#include <chrono>
#include <condition_variable>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "mpg/runtime_handle.hpp"
#include "mpg/task.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

bool scheduler::inert(std::uint64_t* progress, std::uint64_t waits_upto) const {
  std::uint64_t runs =
      gpushes_.load(std::memory_order_relaxed) + posts_run_.load(std::memory_order_relaxed);
  bool quiet = external_wakers_.load(std::memory_order_relaxed) == 0 &&
               putters_.load(std::memory_order_relaxed) == 0 && !posts_queued();
  for (auto& p : ps_) {
    runs += p->tasks_run.load(std::memory_order_relaxed);
    if (p->runq.size() != 0 || p->cur_gid.load(std::memory_order_relaxed) != 0 ||
        p->timers.earliest_ns.load(std::memory_order_relaxed) != INT64_MAX ||
        p->io->busy())
      quiet = false;
  }
  {
    // Under mu_, where all three change (blocking.cpp, "The deadlock
    // check"): a G leaving mpg::blocking is counted by one of them. A call
    // waiting in a block_on numbered up to waits_upto is no wake-up
    // (runtime.cpp, block_on_state): it is unlisted while the task that
    // ends its block_on still holds its P.
    thread_mutex_lock l(mu_);
    std::uint32_t waiting = 0;
    for (const blocking_wait* w = blocking_waits_; w != nullptr; w = w->next)
      if (w->seq <= waits_upto) ++waiting;
    if (nblocking_.load(std::memory_order_relaxed) != waiting ||
        gsize_.load(std::memory_order_relaxed) != 0 ||
        npidle_.load(std::memory_order_relaxed) != procs())
      quiet = false;
  }
  *progress = runs;
  return quiet;
}

bool scheduler::quiescent(std::uint64_t* progress, std::uint64_t waits_upto) const {
  return inert(progress, waits_upto) && live_gs() != 0;
}

void scheduler::blocking_wait_begin(blocking_wait* w) noexcept {
  thread_mutex_lock l(mu_);
  w->next = blocking_waits_;
  blocking_waits_ = w;
}
void scheduler::blocking_wait_end(blocking_wait* w) noexcept {
  thread_mutex_lock l(mu_);
  for (blocking_wait** at = &blocking_waits_; *at != nullptr; at = &(*at)->next) {
    if (*at == w) {
      *at = w->next;
      return;
    }
  }
}

runtime_stats scheduler::stats() const {
  runtime_stats s;
  s.procs = procs();
  for (auto& p : ps_) {
    s.local_queue_lengths.push_back(p->runq.size());
    s.tasks_run.push_back(p->tasks_run.load(std::memory_order_relaxed));
    const fault_counts f = p->io->injected_faults();
    s.io_faults_eintr += f.by_kind[static_cast<unsigned>(io_fault::eintr)];
    s.io_faults_eagain += f.by_kind[static_cast<unsigned>(io_fault::eagain)];
    s.io_faults_short += f.by_kind[static_cast<unsigned>(io_fault::short_io)];
    s.io_faults_reset += f.by_kind[static_cast<unsigned>(io_fault::reset)];
    s.io_faults_overflow += f.by_kind[static_cast<unsigned>(io_fault::overflow)];
    s.io_faults_no_multishot += f.by_kind[static_cast<unsigned>(io_fault::no_multishot)];
    s.io_faults_no_sqe += f.by_kind[static_cast<unsigned>(io_fault::no_sqe)];
    s.io_faults_no_pause += f.by_kind[static_cast<unsigned>(io_fault::no_pause)];
    s.io_faults_miss_pause += f.by_kind[static_cast<unsigned>(io_fault::miss_pause)];
    s.io_faults_no_cancel += f.by_kind[static_cast<unsigned>(io_fault::no_cancel)];
    s.io_faults_injected += f.total();
  }
  const g_counts c = counted_gs();
  s.spawned = c.spawned;
  s.completed = c.completed;
  s.live = s.spawned >= s.completed ? s.spawned - s.completed : 0;
  s.steals = steals_.load(std::memory_order_relaxed);
  s.stolen_tasks = stolen_.load(std::memory_order_relaxed);
  s.parks = parks_.load(std::memory_order_relaxed);
  s.wakeups = wakeups_.load(std::memory_order_relaxed);
  s.ring_wakeups = ring_wakeups_.load(std::memory_order_relaxed);
  s.global_queue_pulls = gpulls_.load(std::memory_order_relaxed);
  s.global_queue_pushes = gpushes_.load(std::memory_order_relaxed);
  s.global_queue_length = gsize_.load(std::memory_order_relaxed);
  s.threads = threads_.load(std::memory_order_relaxed);
  s.long_task_reports = long_reports_.load(std::memory_order_relaxed);
  s.thread_limit_reports = thread_limit_reports_.load(std::memory_order_relaxed);
  s.forced_publications = forced_publications_.load(std::memory_order_relaxed);
  return s;
}

namespace {

constexpr std::chrono::seconds kStopTimeout{2};
constexpr int kMaxChainDepth = 256;

// match_open(): the index of the bracket that s[close] closes.
std::size_t match_open(std::string_view s, std::size_t close) {
  int depth = 0;
  for (std::size_t i = close + 1; i-- > 0;) {
    const char c = s[i];
    if (c == ')' || c == '>' || c == ']') ++depth;
    if (c == '(' || c == '<' || c == '[') {
      if (--depth == 0) return i;
    }
  }
  return std::string_view::npos;
}

// after_return_type(): s from just after its last space outside brackets
// (the whole of s when there is none).
std::string_view after_return_type(std::string_view s) {
  int depth = 0;
  for (std::size_t i = s.size(); i-- > 0;) {
    const char c = s[i];
    if (c == ')' || c == '>' || c == ']') ++depth;
    else if (c == '(' || c == '<' || c == '[') --depth;
    else if (c == ' ' && depth == 0) return s.substr(i + 1);
  }
  return s;
}

// strip_return_type(): "R ns::f(int) const" -> "ns::f(int) const". The
// parameter list is the last parenthesised group before any trailing
// " [T = ...]" / " [with T = ...]"; the name starts after the last space
// outside brackets before it.
std::string strip_return_type(std::string_view s) {
  std::string_view core = s;
  if (!core.empty() && core.back() == ']') {
    const std::size_t open = match_open(core, core.size() - 1);
    if (open != std::string_view::npos && open > 0 && core[open - 1] == ' ')
      core = core.substr(0, open - 1);
  }
  const std::size_t close = core.rfind(')');
  if (close == std::string_view::npos) return std::string(s);
  const std::size_t open = match_open(core, close);
  if (open == std::string_view::npos) return std::string(s);
  const std::string_view head = after_return_type(s.substr(0, open));
  return std::string(s.substr(head.data() - s.data()));
}

}  // namespace

std::string clean_function_name(std::string_view fn) {
  // Inside a coroutine g++ names the actor function, whose one parameter
  // type spells the coroutine:
  //   "void ns::f(f(int, const char*)::_ZN2ns1fEiPKc.Frame*)"
  // Keep that, qualified like the actor: "ns::f(int, const char*)".
  constexpr std::string_view kFrame = ".Frame*)";
  if (fn.size() > kFrame.size() && fn.substr(fn.size() - kFrame.size()) == kFrame) {
    const std::size_t open = match_open(fn, fn.size() - 1);
    const std::size_t mangled = fn.rfind("::_Z");
    if (open != std::string_view::npos && mangled != std::string_view::npos && mangled > open) {
      const std::string_view inner = fn.substr(open + 1, mangled - open - 1);
      const std::string_view outer = after_return_type(fn.substr(0, open));
      // A lambda's call operator: the actor's name says it all.
      if (outer.find('(') != std::string_view::npos) return std::string(outer);
      const std::size_t colon = outer.rfind("::");
      if (colon == std::string_view::npos || inner.rfind(outer.substr(0, colon + 2), 0) == 0)
        return std::string(inner);
      return std::string(outer.substr(0, colon + 2)) + std::string(inner);
    }
  }
  return strip_return_type(fn);
}

namespace {

void write_site(std::ostream& os, std::source_location where) {
  const char* fn = where.function_name();
  const char* file = where.file_name();
  os << "      at " << (fn && *fn ? clean_function_name(fn) : std::string("?"));
  if (file && *file) os << " " << file << ":" << where.line();
  os << "\n";
}

bool same_site(std::source_location a, std::source_location b) {
  return a.line() == b.line() && std::string_view(a.file_name()) == b.file_name() &&
         std::string_view(a.function_name()) == b.function_name();
}

}  // namespace

void write_await_chain(std::ostream& os, const g* gp, bool readied_too) {
  const g_status st = gp->status.load(std::memory_order_relaxed);
  const bool parked =
      st == g_status::waiting ||
      (readied_too && st == g_status::runnable &&
       gp->wait_reason.load(std::memory_order_relaxed) != nullptr);
  if (!parked || !gp->resume) return;
  std::source_location last = gp->wait_where.load(std::memory_order_relaxed);
  write_site(os, last);
  // The parked frame is a task frame (runtime awaiters park only the task
  // that awaits them: g.hpp), and so is every continuation reached through
  // a set caller_where_ (task.hpp). A task frame's promise_base sits where
  // coroutine_handle<promise_base> finds it (task.hpp pins the alignment).
  const void* const root = gp->root.address();
  const void* frame = gp->resume.address();
  for (int depth = 0; frame != root && depth < kMaxChainDepth; ++depth) {
    const promise_base& p = std::coroutine_handle<promise_base>::from_address(
                                const_cast<void*>(frame)).promise();
    if (!p.awaited_by_task()) break;
    const std::source_location where = p.caller_where_;
    if (!same_site(where, last)) {
      write_site(os, where);
      last = where;
    }
    frame = p.continuation_.address();
  }
}

// stop_the_world(): see the top of the file. Returns a guard whose
// destruction lets the Ps go, or null when the world could not be stopped.
std::shared_ptr<void> scheduler::stop_the_world() const {
  struct stop_state {
    thread_mutex mu;
    std::condition_variable cv;
    unsigned arrived ABSL_GUARDED_BY(mu) = 0;
    bool released ABSL_GUARDED_BY(mu) = false;
  };
  // One stop at a time: two that each hold some of the Ps would wait for
  // each other's until both time out (and run_posted() may batch both
  // first holds onto one M). A caller holding one of our Ps does not wait
  // for another stop that is gathering the Ps: that stop needs the
  // caller's P, which stays held while the caller waits, so both would
  // wait kStopTimeout for each other, the world stopped but for that P
  // all the while, and both dumps would lose their chains. It goes without
  // chains at once and lets its P go to the other stop. (A stop found
  // past its gathering is releasing its Ps: that wait is short.)
  // (A flag under a mutex and a condition variable rather than a timed
  // mutex, whose timed lock ThreadSanitizer does not see.)
  const machine* me = current_m();
  const bool holds_p = me != nullptr && me->sched == this && me->p() != nullptr;
  {
    thread_mutex_lock l(stw_mu_);
    const auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stw_mu_) { return !stw_busy_; };
    if (holds_p) {
      const auto free_or_gathering = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(stw_mu_) {
        return !stw_busy_ || stw_gathering_;
      };
      if (!l.wait_for(stw_cv_, kStopTimeout, free_or_gathering) || stw_busy_) return nullptr;
    } else {
      while (!l.wait_for(stw_cv_, std::chrono::hours(1), free)) {
      }
    }
    stw_busy_ = true;
    stw_gathering_ = true;
    // A caller holding a P that waits for a stop in its release sees this.
    stw_cv_.notify_all();
  }
  auto st = std::make_shared<stop_state>();
  std::shared_ptr<void> release(st.get(), [this, st](void*) {
    // Release: the walk's reads happen-before the services sysmon makes
    // once it sees the flag clear (sysmon.cpp, "While the world is
    // stopped"). Clearing a flag that was never set (a stop that failed)
    // changes nothing: stops come one at a time.
    world_stopped_.store(false, std::memory_order_release);
    {
      thread_mutex_lock l(st->mu);
      st->released = true;
      st->cv.notify_all();
    }
    thread_mutex_lock l(stw_mu_);  // the Ps go first
    stw_busy_ = false;
    stw_gathering_ = false;
    stw_cv_.notify_one();
  });
  unsigned need = procs();
  if (holds_p) --need;
  for (unsigned i = 0; i < need; ++i) {
    auto hold = [st] {
      thread_mutex_lock l(st->mu);
      ++st->arrived;
      st->cv.notify_all();
      while (!l.wait_for(st->cv, std::chrono::hours(1),
                         [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) { return st->released; })) {
      }
    };
    post_node* n = post_fn<decltype(hold)>::make(std::move(hold));
    if (!handle_post(handle_state_.get(), n)) {
      release_post(n, false);
      return nullptr;
    }
    thread_mutex_lock l(st->mu);
    if (!l.wait_for(st->cv, kStopTimeout,
                    [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(st->mu) { return st->arrived == i + 1; })) {
      return nullptr;
    }
  }
  {
    thread_mutex_lock l(stw_mu_);
    stw_gathering_ = false;
  }
  // Every P is held: sysmon serves none of them from here on, and one it
  // is serving now is waited for (sysmon.cpp, "While the world is
  // stopped"). seq_cst: the flag's store, then the load of sysmon_serving_.
  world_stopped_.store(true, std::memory_order_seq_cst);
  while (sysmon_serving_.load(std::memory_order_seq_cst)) std::this_thread::yield();
  return release;
}

void scheduler::dump(std::ostream& os) const {
  std::shared_ptr<void> stopped = stop_the_world();
  write_dump(os, stopped != nullptr);
}

void scheduler::write_dump(std::ostream& os, bool chains, const char* why_no_chains) const {
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
      if (fn && *fn) body << " in " << clean_function_name(fn);
    }
    body << "]\n";
    if (chains) write_await_chain(body, gp);
  });
  os << "mpg: " << n << " live task(s) on " << procs() << " P(s)\n";
  if (!chains) {
    os << "mpg: (await chains left out: "
       << (why_no_chains ? why_no_chains : "the runtime's Ps could not all be stopped") << ")\n";
  }
  os << body.str();
}

}  // namespace mpg::detail
