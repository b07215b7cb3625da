// lib/sched/scheduler.hpp: the scheduler of one runtime (Go's schedt plus the
// procedures that move Gs, Ps and Ms around). The protocols are written down
// in scheduler.cpp (ready/wake, parking) and find_runnable.cpp (the loop).
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sched/machine.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/runtime.hpp"
#include "sched/processor.hpp"
#include "sched/thread_mutex.hpp"

namespace mpg::detail {

class scheduler {
 public:
  explicit scheduler(const runtime_options& opts);
  ~scheduler();

  std::uint32_t procs() const noexcept { return static_cast<std::uint32_t>(ps_.size()); }
  const runtime_options& options() const noexcept { return opts_; }

  // --- G lifecycle ------------------------------------------------------
  g* new_g(std::coroutine_handle<> root, const char* name);  // on the caller's P if it has one
  void retire_g(g* gp) noexcept;                            // back to a free pool
  // make_runnable(): ready()'s body once gp is known to belong to us.
  void make_runnable(g* gp, bool next) noexcept;

  // --- the run queues ----------------------------------------------------
  void global_put(g* gp) noexcept;                  // takes the lock
  void global_put_batch(g* first, g* last, std::uint32_t n) noexcept;
  g* global_get(processor* p, std::uint32_t max) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool global_nonempty() const noexcept { return gsize_.load(std::memory_order_seq_cst) != 0; }
  void local_put(processor* p, g* gp, bool next) noexcept;  // p held by the caller

  // --- Ms and Ps ---------------------------------------------------------
  void wake_p() noexcept;  // Go's wakep: start a spinning M if none spins and a P idles
  void start_m(processor* p, bool spinning) noexcept;
  void wake_machine(machine* m, bool ring, processor* p) noexcept;
  void m_main(machine* m);  // the body of every M thread (find_runnable.cpp)
  void stop() noexcept;     // stop and join every M (runtime shutdown)
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  // --- blocking calls (blocking.cpp) --------------------------------------
  void enter_blocking(machine* m);
  bool exit_blocking(machine* m, g* gp) noexcept;

  // --- shutdown, observation ---------------------------------------------
  void kill_remaining(std::ostream& report);
  runtime_stats stats() const;
  void dump(std::ostream& os) const;
  // quiescent(): every P idle, no G runnable, no timer pending, no I/O in
  // flight, no M in mpg::blocking; *progress gets a counter that moves
  // whenever anything runs (deadlock.cpp compares two samples).
  bool quiescent(std::uint64_t* progress) const;
  std::uint64_t live_gs() const noexcept;

  // --- timers (timers.cpp) -----------------------------------------------
  void add_timer(processor* p, timer* t);
  // run_timers(): fire p's due timers; returns the earliest remaining
  // deadline (ns) or INT64_MAX. Safe from any thread.
  std::int64_t run_timers(processor* p, std::int64_t now_ns) noexcept;
  // detach_timers(): shutdown; pending timers will never fire, and objects
  // that outlive the runtime may still cancel them safely.
  void detach_timers() noexcept;

  // --- sysmon (sysmon.cpp) -----------------------------------------------
  void sysmon_main();

  processor* p_at(std::uint32_t i) const noexcept { return ps_[i].get(); }
  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }


 private:
  friend class find_runnable_impl;

  // find_runnable.cpp
  g* find_runnable(machine* m, bool* inherit_time);
  g* steal_work(machine* m, processor* p);
  void execute(machine* m, g* gp, bool inherit_time);
  void reset_spinning(machine* m) noexcept;
  void park_m(machine* m, processor* released, std::optional<std::int64_t> until_ns);
  processor* check_runqs_no_p() noexcept;

  processor* pidle_get() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void pidle_put(processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool pidle_remove(processor* p) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  machine* midle_get() noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool unlist_idle_m(machine* m) noexcept ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void refill_gids(processor* p) noexcept;
  g* allocate_gs(processor* p);

  runtime_options opts_;
  std::vector<std::unique_ptr<processor>> ps_;

  // The scheduler lock: global run queue, idle P and M lists, the M list.
  mutable thread_mutex mu_;
  g* ghead_ ABSL_GUARDED_BY(mu_) = nullptr;
  g* gtail_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Length of the global queue, written under mu_, read without it
  // (seq_cst: the parking protocol's recheck reads it after its barrier).
  std::atomic<std::uint64_t> gsize_{0};
  processor* pidle_ ABSL_GUARDED_BY(mu_) = nullptr;
  machine* midle_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<std::unique_ptr<machine>> allm_ ABSL_GUARDED_BY(mu_);
  // Counters of the parking protocol (scheduler.cpp): seq_cst throughout.
  std::atomic<std::uint32_t> npidle_{0};
  std::atomic<std::uint32_t> nmspinning_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint32_t> putters_{0};  // threads inside global_put_batch
  std::atomic<std::uint32_t> nblocking_{0};  // Ms inside mpg::blocking

  // Registry of every G ever created (never shrinks; Gs are reused).
  mutable thread_mutex allg_mu_;
  // for_each_g(): every G ever created (they live in g_blocks_).
  template <class F>
  void for_each_g(F&& f) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(allg_mu_) {
    for (const g_block& b : g_blocks_)
      for (std::size_t i = 0; i < b.n; ++i) f(&b.gs[i]);
  }
  std::vector<g*> gfree_global_ ABSL_GUARDED_BY(allg_mu_);
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
  std::atomic<std::uint64_t> gpulls_{0};
  std::atomic<std::uint64_t> gpushes_{0};
  std::atomic<std::uint64_t> threads_{0};
  std::atomic<std::uint64_t> long_reports_{0};

  // sysmon
  std::thread sysmon_;
  thread_mutex sysmon_mu_;
  bool sysmon_stop_ ABSL_GUARDED_BY(sysmon_mu_) = false;
  std::condition_variable sysmon_cv_;
};

// The P held by the calling thread's M, if that M belongs to s.
processor* current_p_of(scheduler* s) noexcept;

}  // namespace mpg::detail
