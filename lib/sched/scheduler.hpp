// lib/sched/scheduler.hpp: the scheduler of one runtime (Go's schedt plus the
// procedures that move Gs, Ps and Ms around). Where each protocol is written
// down:
//   - scheduler.cpp: readying Gs, the run queues, the wake-up (parking)
//     protocol that loses no wakeup;
//   - p_ownership.cpp: who holds a P, and every way a P changes hands
//     (acquire_p, release_p, park_p, handoff_p, start_m, wake_p, stop_m);
//   - find_runnable.cpp: the M's scheduling loop, in named steps;
//   - blocking.cpp: mpg::blocking (Go's entersyscall/exitsyscall);
//   - thread_limit.cpp: Gs stranded at the thread limit, reported by sysmon;
//   - timers.cpp, sysmon.cpp, shutdown.cpp, inspect.cpp.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/runtime_options.hpp"
#include "mpg/runtime_stats.hpp"
#include "sched/machine.hpp"
#include "sched/processor.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

// The await chain of a parked G (inspect.cpp): one indented line per
// coroutine, innermost first. Only while no M can run gp. readied_too: also
// of a runnable G readied from a park that has not run since (its wait
// reason is still set: every requeue and every resume from a cancelled
// park clears it), as the shutdown report finds the Gs its ring cancels woke.
void write_await_chain(std::ostream& os, const g* gp, bool readied_too = false);

// parse_procs() (scheduler_setup.cpp): MPG_PROCS's text as a number of
// Ps: ASCII digits only (no sign, no space: it reads one way), 1 to 4096.
// Nothing for anything else.
std::optional<unsigned> parse_procs(std::string_view text) noexcept;

// Test hook: give_up_p() (find_runnable.cpp) calls it under mu_ when P1
// found no G and no posted function, before it parks or releases its P:
// the moment at which a post is missed by P1. Relaxed: tests set it
// before the runtime looks (thread start or a task's own write before it
// parks); it only selects a path.
inline std::atomic<void (*)()> g_give_up_hook{nullptr};

// Test hook: block_on's deadlock check (lib/runtime.cpp) calls it after
// each of its looks, with the number of quiet looks in a row (3: deadlock
// decided), holding the waiter's lock. Relaxed, as g_give_up_hook.
inline std::atomic<void (*)(int)> g_deadlock_look_hook{nullptr};

// Test hook: exit_blocking() (blocking.cpp) calls it on the M leaving
// mpg::blocking, before it takes mu_ to get a P back. Relaxed, as
// g_give_up_hook.
inline std::atomic<void (*)()> g_exit_blocking_hook{nullptr};

// Test hook: assign_m() (p_ownership.cpp) calls it before it starts an
// M's thread; true makes it take the path of a thread the OS refused
// (EAGAIN). Relaxed, as g_give_up_hook.
inline std::atomic<bool (*)()> g_m_start_refuse_hook{nullptr};

struct post_node;     // mpg/detail/sched/post_node.hpp
struct handle_state;  // post.cpp
struct debug_state;   // debug_env.cpp
struct debug_state_deleter {
  void operator()(debug_state* d) const noexcept;
};
class trace_recorder;  // trace.hpp

class scheduler {
 public:
  explicit scheduler(const runtime_options& opts);
  ~scheduler();

  std::uint32_t procs() const noexcept { return static_cast<std::uint32_t>(ps_.size()); }
  const runtime_options& options() const noexcept { return opts_; }

  // --- G lifecycle (scheduler.cpp, g_pools.cpp) -----------------------------
  g* new_g(std::coroutine_handle<> root, const char* name);  // on the caller's P if it has one
  // g_count(): every G ever created (live or pooled; Gs are never freed
  // before the runtime). Diagnostics and tests.
  std::size_t g_count() const;
  // retire_g_elsewhere(): a finished G back to the global pool, from a
  // thread without a P of this runtime.
  void retire_g_elsewhere(g* gp) noexcept;
  // new_g_local() / retire_g_local(): making and retiring a G on p, the P
  // this thread holds: inline pool pops and pushes, the rest out of line.
  g* new_g_local(processor* p, std::coroutine_handle<> root, const char* name);
  // can_new_g_local(): new_g_local() takes its inline path (a pooled G and
  // an id left in the P's batch).
  static bool can_new_g_local(const processor* p) noexcept {
    return !p->gfree.empty() && p->next_gid != p->gid_limit;
  }
  void retire_g_local(processor* p, g* gp) noexcept;
  // make_runnable(): ready_tail()'s body on an M that holds a P of this
  // runtime: queue gp on that P (tail, or spawn deque) and wake an M if one
  // is wanted.
  void make_runnable(machine* m, g* gp, queue_slot slot) noexcept;

  // --- the run queues (scheduler.cpp) ---------------------------------------
  void global_put(g* gp) noexcept;  // takes the lock
  void global_put_batch(g* first, g* last, std::uint32_t n) noexcept;
  bool global_nonempty() const noexcept { return gsize_.load(std::memory_order_seq_cst) != 0; }
  // local_put(): queue gp on the P that m holds (overflow goes global);
  // local_put_tail(): the same at the ring's tail.
  void local_put(machine* m, g* gp, queue_slot slot) noexcept;
  void local_put_tail(machine* m, g* gp) noexcept;

  // --- posted functions and runtime handles (post.cpp) -----------------------
  void post(post_node* n) noexcept;  // queue n and wake an M (S1/S2)
  // work_queued(): a G on the global queue or a posted function (seq_cst:
  // the parking protocol's rechecks).
  bool work_queued() const noexcept {
    return gsize_.load(std::memory_order_seq_cst) != 0 || posts_queued();
  }
  bool posts_queued() const noexcept;  // seq_cst loads of the inbox and outbox
  const std::shared_ptr<handle_state>& handle_state_ptr() const noexcept { return handle_state_; }
  void close_handles() noexcept;  // ~runtime, before stop(): refuse posts from now on
  void drop_posted() noexcept;    // shutdown: destroy queued functions unrun

  // --- P ownership and Ms (p_ownership.cpp) ---------------------------------
  void wake_p() noexcept;  // Go's wakep: start a spinning M if none spins and a P idles
  // wake_p(), but only for a P that idles other than in its ring: Gs readied
  // by I/O do not wake an M asleep in its ring (find_runnable.cpp).
  void wake_p_beyond_rings() noexcept;
  // next_after_finish(): called by finish_root() on the M whose G just
  // ended. Returns the next local G's resume point to switch to directly
  // (symmetric transfer, no return to the M's loop), or noop. See
  // scheduler.cpp, "Switching at finish".
  std::coroutine_handle<> next_after_finish(machine* m) noexcept;
  // next_after_park(): switch_after_park() (g.hpp) on m, which holds a P
  // of this runtime. See scheduler.cpp, "Switching at park".
  std::coroutine_handle<> next_after_park(machine* m) noexcept;
  void start_m(processor* p, spin_state spin) noexcept;
  // handoff_p(): p was released by an M that will not run Gs for a while
  // (mpg::blocking): give it to another M if it has work, else make it idle.
  void handoff_p(processor* p) noexcept;
  void m_main(machine* m);  // the body of every M thread (find_runnable.cpp)
  void stop() noexcept;     // stop and join every M (runtime shutdown)
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  // --- blocking calls (blocking.cpp) ----------------------------------------
  void enter_blocking(machine* m);
  bool exit_blocking(machine* m, g* gp) noexcept;

  // --- shutdown (shutdown.cpp), observation (inspect.cpp) --------------------
  void shutdown_io() noexcept;  // cancel and reap every ring's ops in flight
  void kill_remaining(std::ostream& report);
  runtime_stats stats() const;
  void dump(std::ostream& os) const;
  // write_dump(): dump()'s text; the await chains only when `chains` (the
  // world is stopped, or the Ms are: inspect.cpp). Without them, a line
  // says why: `why_no_chains`, or by default that the Ps could not all be
  // stopped.
  void write_dump(std::ostream& os, bool chains, const char* why_no_chains = nullptr) const;
  // stop_the_world(): holds every P (but the caller's) until the returned
  // guard goes; null when that failed (inspect.cpp).
  std::shared_ptr<void> stop_the_world() const;
  // inert(): nothing here can wake a task now: every P idle, no G
  // runnable, no timer pending, no I/O in flight, no M in mpg::blocking
  // (but those waiting in a block_on numbered up to `waits_upto`, below),
  // no external waker, no posted function queued; *progress gets a counter
  // that moves whenever anything runs (block_on_wait in runtime.cpp
  // compares two samples). Any thread.
  bool inert(std::uint64_t* progress, std::uint64_t waits_upto = 0) const;
  // quiescent(): inert, with live tasks (which then wait on each other).
  bool quiescent(std::uint64_t* progress, std::uint64_t waits_upto = 0) const;
  // A call inside mpg::blocking of this runtime that waits in a block_on
  // (of any runtime), numbered in the order such waits began, from 1
  // (runtime.cpp, block_on_state). Listed while it waits.
  struct blocking_wait {
    std::uint64_t seq = 0;
    blocking_wait* next = nullptr;
  };
  void blocking_wait_begin(blocking_wait* w) noexcept;
  void blocking_wait_end(blocking_wait* w) noexcept;
  std::uint64_t live_gs() const noexcept;
  // counted_gs(): the Gs spawned and completed, from the counters; exact
  // only while no M runs (g_pools.cpp).
  struct g_counts {
    std::uint64_t spawned = 0;
    std::uint64_t completed = 0;
  };
  g_counts counted_gs() const noexcept;
  void external_waker_add() noexcept { external_wakers_.fetch_add(1, std::memory_order_relaxed); }
  void external_waker_remove() noexcept {
    external_wakers_.fetch_sub(1, std::memory_order_relaxed);
  }

  // --- debugging aids (debug_env.cpp; dump_signal, schedtrace, trace.cpp) --
  void stop_debug() noexcept;  // ~runtime, first: no signal dump or SCHED line after it
  void finish_trace();         // ~runtime, after stop(): write the trace file
  void schedtrace_line(std::int64_t elapsed_ms, std::string* out) const;  // schedtrace.cpp

  // --- timers (timers.cpp) --------------------------------------------------
  void add_timer(processor* p, timer* t);
  // run_timers(): fire p's due timers; returns the earliest remaining
  // deadline (ns) or INT64_MAX. Safe from any thread.
  std::int64_t run_timers(processor* p, std::int64_t now_ns) noexcept;
  // detach_timers(): shutdown; pending timers will never fire, and objects
  // that outlive the runtime may still cancel them safely.
  void detach_timers() noexcept;

  // --- sysmon (sysmon.cpp) --------------------------------------------------
  void sysmon_main();

  processor* p_at(std::uint32_t i) const noexcept { return ps_[i].get(); }

 private:
  // find_runnable.cpp: the scheduling loop and its steps.
  g* find_runnable(machine* m, bool* inherit_time);
  g* take_global_for_fairness(machine* m);
  void poll_timers_and_io(machine* m);
  // reap_io(): reap the held P's ring, then end_reap(); the wake rule is in
  // find_runnable.cpp, "Waking after a reap".
  void reap_io(machine* m);
  void end_reap(machine* m) noexcept;
  // send_wakeup(): wake an M that was handed a P under mu_ (after
  // releasing it), and count it (runtime_stats::wakeups, ring_wakeups).
  void send_wakeup(const m_wakeup& w) noexcept {
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    if (w.site == sleep_site::ring) ring_wakeups_.fetch_add(1, std::memory_order_relaxed);
    w.send();
  }
  g* pop_local(machine* m, bool* inherit_time);
  g* take_global(machine* m);
  enum class spin_result : std::uint8_t { found, retry, nothing };
  spin_result spin_for_work(machine* m, g** found);
  g* steal_work(machine* m);
  enum class give_up_result : std::uint8_t { found, holds_p, stopping };
  give_up_result give_up_p(machine* m, g** found);
  bool recheck_found_work(machine* m);
  void execute(machine* m, g* gp, bool inherit_time);
  // begin_run(): the bookkeeping of gp starting a turn on m's P (current G,
  // status, the P's sampled fields); execute() and the switches at finish
  // and at park. Always inline: a few stores, which a call would double.
  [[gnu::always_inline]] static void begin_run(machine* m, g* gp) noexcept {
    processor* p = m->p();
    processor::bump(p->tasks_run);
    set_current_g(gp);
    gp->status.store(g_status::running, std::memory_order_relaxed);
    p->cur_gid.store(gp->id.load(std::memory_order_relaxed), std::memory_order_relaxed);
    p->cur_name.store(gp->name.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  void reset_spinning(machine* m) noexcept;
  bool any_local_work() const noexcept;
  bool any_surplus_work() const noexcept;
  // run_posted(): run up to a batch of posted functions on m's P (post.cpp);
  // true if it ran any.
  bool run_posted(machine* m);
  // posts_hint(): relaxed loads, inline, so that the scheduling loop pays
  // no call when nothing is posted (the rechecks use posts_queued()).
  bool posts_hint() const noexcept {
    return outbox_size_.load(std::memory_order_relaxed) != 0 ||
           inbox_.load(std::memory_order_relaxed) != nullptr;
  }
  void open_handles();
  void start_debug();  // the constructor, before any M starts

  // p_ownership.cpp: the one place where a P changes hands.
  void acquire_p(machine* m, processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // end_unheld_mark(): a P that an M takes loses the runnext mark that
  // sysmon gives an unheld P (serve_unheld_ps).
  void end_unheld_mark(processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  processor* release_p(machine* m) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void park_p(machine* m, sleep_site site) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // unlist_parked(): a parked P leaves the idle list (taken back by its
  // holder, or handed to it by assign_m).
  void unlist_parked(processor* p, machine* holder) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void unpark_p(machine* m) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool take_handoff(machine* m) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  m_wakeup assign_m(processor* p, spin_state spin) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void stop_m(machine* m) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // wait_for_p(): sleep until this M holds a P it may run Gs on (handed one,
  // or, holding a parked P, its deadline/completion/wake); false if stopping.
  bool wait_for_p(machine* m, std::optional<std::int64_t> until_ns);
  bool has_work_locked(processor* p) const noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // sysmon: Ps left idle with work at the thread limit; sets (*marked)[id]
  // for each P whose runnext G it marks stealable (sysmon.cpp).
  void serve_unheld_ps(std::vector<bool>* marked) noexcept;

  // thread_limit.cpp: Gs starving at the thread limit, seen by sysmon.
  struct starvation_sample {
    bool starved = false;         // the condition of thread_limit.cpp holds
    std::uint64_t mark = 0;       // changes whenever a stranded G leaves
    std::uint64_t stranded = 0;   // Gs queued on unheld Ps and globally
    bool posts = false;           // posted functions wait as well
    std::uint32_t blocking = 0;   // Ms inside mpg::blocking
    std::uint32_t threads = 0;    // Ms started (the limit, or fewer if refused)
    bool refused = false;         // below max_threads: the OS refused the next M
    char refused_why[96] = {};    // its reason (no allocation under mu_)
  };
  starvation_sample sample_starvation() const noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // watch_starvation(): sysmon, after each sample (a default sample when
  // no P is unheld with work): reports once the condition has held with
  // the same mark for thread_starvation_threshold.
  void watch_starvation(const starvation_sample& s, std::int64_t now_ns) noexcept;
  void report_starvation(const starvation_sample& s, std::int64_t waited_ns) const;

  processor* pidle_get() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  processor* pidle_get_unheld() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  processor* pidle_first_parked() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void pidle_put(processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool pidle_remove(processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  machine* midle_get() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // scheduler.cpp
  void global_put_locked(g* first, g* last, std::uint32_t n) noexcept
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  g* global_get(machine* m, std::uint32_t max) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void refill_gids(processor* p) noexcept;
  g* new_g_slow(processor* p, std::coroutine_handle<> root, const char* name);
  // local_put_overflow(): local_put_tail() with the ring full: half of it
  // and gp go to the global queue.
  void local_put_overflow(machine* m, g* gp) noexcept;
  void retire_g_slow(processor* p, g* gp) noexcept;
  static void init_g(g* gp, std::uint64_t id, std::coroutine_handle<> root,
                     const char* name) noexcept;
  static void clear_g(g* gp) noexcept;  // a retired G: dead, no frame, no name
  g* allocate_gs(processor* p);
  static g* take_fresh_g(processor* p) noexcept;

  runtime_options opts_;
  std::vector<std::unique_ptr<processor>> ps_;
  // Go's stealOrder: the numbers below procs() coprime to it, so that
  // stepping by one of them from a random start visits every P once.
  std::vector<std::uint32_t> steal_strides_;

  // The scheduler lock: global run queue, P ownership (idle list, status,
  // parked_m, the Ms' handoff mailboxes), idle M list, the M list.
  mutable thread_mutex mu_;
  g* ghead_ ABSL_GUARDED_BY(mu_) = nullptr;
  g* gtail_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Length of the global queue, written under mu_, read without it
  // (seq_cst: the parking protocol's recheck reads it after its barrier).
  std::atomic<std::uint64_t> gsize_{0};
  processor* pidle_ ABSL_GUARDED_BY(mu_) = nullptr;
  machine* midle_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::unique_ptr<machine>> allm_ ABSL_GUARDED_BY(mu_);
  // The OS refused the last M that assign_m() tried to start (its reason,
  // for the thread-limit report); cleared when an M starts. While set, no
  // M can be started below max_threads either: thread_limit.cpp.
  bool m_refused_ ABSL_GUARDED_BY(mu_) = false;
  char m_refused_why_[96] ABSL_GUARDED_BY(mu_) = {};
  // Counters of the parking protocol (scheduler.cpp): seq_cst throughout.
  std::atomic<std::uint32_t> npidle_{0};
  std::atomic<std::uint32_t> nmspinning_{0};
  // Ps parked with their holder asleep in the P's ring (sleep_site::ring):
  // written under mu_ with npidle_ (park_p, and unlist_parked() for the two
  // ways out), read without it, relaxed, as a hint by wake_p_beyond_rings()
  // (find_runnable.cpp, "Waking after a reap").
  std::atomic<std::uint32_t> nring_parked_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> putters_{0};  // threads inside global_put_batch
  // Ms inside mpg::blocking: changed and read by the deadlock check under
  // mu_ (blocking.cpp, "The deadlock check"); relaxed, the lock orders it.
  std::atomic<std::uint32_t> nblocking_{0};
  // Of those, the calls waiting in a block_on (blocking_wait_begin).
  blocking_wait* blocking_waits_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Possible wake-ups from outside the runtime (g.hpp, external_waker_add).
  // Relaxed: a count for the deadlock check, which confirms it on several
  // looks 50 ms apart, like nblocking_.
  std::atomic<std::uint64_t> external_wakers_{0};
  // Set when assign_m() left a P with work idle because the thread limit was
  // reached; sysmon then serves such Ps (p_ownership.cpp, "Thread limit").
  // Relaxed: a hint that sysmon rechecks under mu_.
  std::atomic<bool> unheld_work_{false};

  // The posted-function queue (post.cpp): a lock-free inbox (a stack that
  // posters push onto) and an outbox (FIFO) under post_mu_, whose length is
  // written under post_mu_ and read without it (seq_cst, like gsize_).
  // On lines of their own: posters write the inbox from other threads, and
  // the scheduling loop's hot counters above must not share its line.
  alignas(64) std::atomic<post_node*> inbox_{nullptr};
  mutable thread_mutex post_mu_;
  post_node* ohead_ ABSL_GUARDED_BY(post_mu_) = nullptr;
  post_node* otail_ ABSL_GUARDED_BY(post_mu_) = nullptr;
  std::atomic<std::uint64_t> outbox_size_{0};
  std::atomic<std::uint64_t> posts_run_{0};  // relaxed: progress for the deadlock check
  std::shared_ptr<handle_state> handle_state_;

  // Set by stop_the_world() from its first post until its guard goes, so
  // that stops of the world come one at a time (inspect.cpp).
  mutable thread_mutex stw_mu_;
  mutable std::condition_variable stw_cv_;
  mutable bool stw_busy_ ABSL_GUARDED_BY(stw_mu_) = false;
  // Set while that stop is still gathering the Ps (it needs every P but its
  // caller's): a caller holding a P does not wait for such a stop.
  mutable bool stw_gathering_ ABSL_GUARDED_BY(stw_mu_) = false;
  // Set while the world is stopped (every P held for a dump's walk): sysmon
  // serves no P's timers or ring meanwhile. sysmon_serving_: sysmon is
  // serving a P's timers and ring. The handshake between the two: sysmon.cpp,
  // "While the world is stopped".
  mutable std::atomic<bool> world_stopped_{false};
  std::atomic<bool> sysmon_serving_{false};
  // serve_p(): sysmon runs p's due timers and reaps its ring, unless the
  // world is stopped.
  void serve_p(processor* p, std::int64_t now) noexcept;
  // Registry of every G ever created (never shrinks; Gs are reused).
  mutable thread_mutex allg_mu_;
  // for_each_g(): every G ever created (they live in g_blocks_).
  template <class F>
  void for_each_g(F&& f) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(allg_mu_) {
    for (const g_block& b : g_blocks_)
      for (std::size_t i = 0; i < b.n; ++i) f(&b.gs[i]);
  }
  // Dead Gs moved off the Ps; its capacity is kept at g_total_ (allocate_gs).
  std::vector<g*> gfree_global_ ABSL_GUARDED_BY(allg_mu_);
  std::size_t g_total_ ABSL_GUARDED_BY(allg_mu_) = 0;  // the Gs in g_blocks_
  struct g_block {
    std::unique_ptr<g[]> gs;
    std::size_t n;
  };
  std::vector<g_block> g_blocks_ ABSL_GUARDED_BY(allg_mu_);
  std::uint64_t gid_next_ ABSL_GUARDED_BY(allg_mu_) = 1;

  // Statistics (relaxed counters).
  std::atomic<std::uint64_t> foreign_spawned_{0};
  std::atomic<std::uint64_t> foreign_completed_{0};
  std::atomic<std::uint64_t> steals_{0};
  std::atomic<std::uint64_t> stolen_{0};
  std::atomic<std::uint64_t> parks_{0};
  std::atomic<std::uint64_t> wakeups_{0};
  std::atomic<std::uint64_t> ring_wakeups_{0};
  std::atomic<std::uint64_t> gpulls_{0};
  std::atomic<std::uint64_t> gpushes_{0};
  std::atomic<std::uint64_t> threads_{0};
  std::atomic<std::uint64_t> long_reports_{0};
  std::atomic<std::uint64_t> thread_limit_reports_{0};
  std::atomic<std::uint64_t> forced_publications_{0};

  // Debugging aids (debug_env.cpp). tracer_ is set by the constructor
  // before any M starts and read by each M as it starts (m_main).
  std::unique_ptr<debug_state, debug_state_deleter> debug_;
  trace_recorder* tracer_ = nullptr;

  // sysmon
  // Since when (ns; -1: not starving) the Gs stranded at the thread limit
  // have not moved, their mark, and whether that was reported. Only the
  // sysmon thread touches them (watch_starvation).
  struct starvation_watch {
    std::int64_t since = -1;
    std::uint64_t mark = 0;
    bool reported = false;
  };
  starvation_watch starvation_;
  std::thread sysmon_;
  thread_mutex sysmon_mu_;
  bool sysmon_stop_ ABSL_GUARDED_BY(sysmon_mu_) = false;
  std::condition_variable sysmon_cv_;
};

// The P held by the calling thread's M, if that M belongs to s.
processor* current_p_of(scheduler* s) noexcept;

// Test seam (test/runtime_handle_tests.cpp): when set, runtime_handle::post
// calls it after entering the control block and before queuing the node.
extern std::atomic<void (*)()> test_post_entered_hook;
// Test seam: when set, a post (or waker add/remove) that finds the runtime's
// handle closed calls it on its way out.
extern std::atomic<void (*)()> test_post_refused_hook;

}  // namespace mpg::detail
