// lib/sched/sysmon.cpp: the background monitor (Go's sysmon).
//
// One thread per runtime, without a P. Every millisecond while any P runs a
// G (every 10 ms otherwise) it samples each P's scheduling tick. A P whose
// tick has not moved for a whole period is running one G without
// suspending. mpg cannot preempt it (stackless coroutines), so sysmon does
// what can be done from outside:
//   - marks the P's runnext G stealable and wakes a spinning M, so the Gs
//     queued behind the long task move to other Ps;
//   - runs the P's due timers and reaps its ring, so its sleepers and I/O
//     waiters are not stranded (they are readied onto the global queue);
//   - after runtime_options.long_task_threshold (10 ms), reports the G on
//     stderr once, in builds with debug checks or when report_long_tasks is
//     set.
// Oldest spawns. A P runs its newest spawned G first (work_deque.hpp), so a
// task that spawns without end (each new task spawning the next) would keep
// the deque's oldest entries waiting for ever. sysmon samples each P's
// oldest spawn (the deque's top counter, which moves whenever that entry
// leaves), and one that has waited kOldestSpawnWait (Go's 10 ms time
// slice) gets the P's next fairness tick (oldest_spawn_due;
// find_runnable.cpp, pop_local).
//
// A fork-join tree keeps old entries waiting too, rightly: the siblings of
// the path being run, for as long as the tree runs. A turn starts one of
// them out of depth-first order, a subtree whose pending children go on top
// of the deque; if the next turn comes before that subtree is done, the
// open subtrees pile up, the deque overflows into the FIFO queue and the
// tree runs breadth-first. (Measured, skynet with 10M leaves on one P:
// turns every 488th tick hold 121 MB, turns every 10 ms 134 MB, no turns
// 4 MB.) So a turn is given only while the deque is no larger
// than at the previous turn, that is, once what that turn started is
// mostly done; an endless spawner's deque stays level and gets its turns
// every 10 ms. A deque that has grown gets a turn all the same after
// kGrownFirstWait, and then after twice as long each time (up to an hour),
// until it is seen empty: nothing waits for ever, and a long tree gets a
// few turns (ten in three minutes), not one per period.
//
// It publishes spawns their P's task has left private (work_deque.hpp,
// "Forced publication"): a P whose spawn deque has private entries and no
// published ones, unchanged over two samples, while another P idles or an
// M spins for work.
//
// It serves the Ps left unheld with work at the thread limit (p_ownership.cpp,
// "Thread limit") as it serves a P stuck in one G: it runs their due
// timers, reaps their rings, wakes a spinner for their Gs and marks their
// runnext Gs stealable, since no holder will run them next (the mark stays
// while the P is unheld with work, and ends when an M takes the P). It
// reports Gs stranded there for too long (thread_limit.cpp).
//
// While the world is stopped (dump(): inspect.cpp) a walk reads the parked
// Gs' await chains, and nothing may change them: no P's timer may fire and
// no completion of a P's ring may be dispatched (a stream op's completion
// rewrites its G's resume point). Every P is held then, each by a posted
// function or by the dumping task; the one that is a task looks stuck to
// sysmon, and a P that sysmon listed as unheld may have been taken by a
// hold since. So every service of a P, on either path, goes through
// serve_p(): sysmon sets sysmon_serving_, then loads world_stopped_ and
// serves only if it is clear, and clears sysmon_serving_ after (release:
// the service happens-before a stop that sees it clear). The stopper, once
// every hold has arrived, sets world_stopped_, then waits while
// sysmon_serving_ is set; all four accesses seq_cst. In their single total
// order either sysmon's load sees the flag (and serves nothing), or the
// stopper's load sees sysmon serving (and waits for the service to end).
// The stopper clears the flag with a release store after its walk, which
// sysmon's next load acquires, so the walk's reads happen-before the
// services that follow.
//
// It also balances the queues: while a P idles (released, or parked in its
// ring), a P found with two or more Gs queued on two samples in a row gets
// a spinning M. Two kinds of work are put on a P's queue without the
// wake-up that would bring an idle P to them: Gs that completions ready
// wake no M asleep in its ring (find_runnable.cpp, "Waking after a reap"),
// and a wake after a push onto a P's own queue can be missed (scheduler.cpp,
// "Own-P pushes").
#include <algorithm>
#include <cstdio>
#include <optional>

#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {
constexpr std::int64_t kOldestSpawnWait = 10'000'000;  // ns
constexpr std::int64_t kGrownFirstWait = 16 * kOldestSpawnWait;
constexpr std::int64_t kGrownMaxWait = 3'600'000'000'000;  // an hour

// serve_io(): for a P whose holder cannot (busy in one G) or that has no
// holder: submit what is pending (its holder batches submissions), then
// reap unless another thread is reaping.
void serve_io(reactor& io) noexcept {
  if (!io.busy()) return;
  if (io.has_unsubmitted()) io.flush();
  io.try_reap();
}
}  // namespace

void scheduler::serve_p(processor* p, std::int64_t now) noexcept {
  // seq_cst, both: the handshake with a stop of the world (above).
  sysmon_serving_.store(true, std::memory_order_seq_cst);
  if (!world_stopped_.load(std::memory_order_seq_cst)) {
    if (p->timers.earliest_ns.load(std::memory_order_relaxed) <= now) run_timers(p, now);
    serve_io(*p->io);
  }
  // Release: the service happens-before a stopper's walk that reads false.
  sysmon_serving_.store(false, std::memory_order_release);
}

void scheduler::serve_unheld_ps(std::vector<bool>* marked) noexcept {
  std::vector<processor*> unheld;
  bool work_left = false;
  starvation_sample starving;
  {
    thread_mutex_lock l(mu_);
    for (processor* p = pidle_; p != nullptr; p = p->idle_next) {
      if (p->status != p_status::idle || !has_work_locked(p)) continue;
      unheld.push_back(p);
      // Nobody holds p to run its runnext G next: thieves may take it.
      // Relaxed: the flag publishes nothing (the G is taken by steal_into's
      // CAS, which acquires it from the release store that put it there). The
      // spinner that wake_p() below brings reads its mailbox under mu_
      // after this store (take_handoff; a new M is started under mu_ too),
      // so it sees the mark; a spinner already looking may miss it, and is
      // woken again at the next tick while p stays unheld with work. An M
      // that takes p clears the mark, under mu_ too (end_unheld_mark,
      // p_ownership.cpp): it ends with p's being unheld.
      p->runnext_stealable.store(true, std::memory_order_relaxed);
      (*marked)[p->id] = true;
    }
    work_left = !unheld.empty();
    // Relaxed: the flag is a hint set and cleared under mu_; assign_m sets
    // it again (under mu_) if it leaves another P unheld with work.
    if (!work_left) unheld_work_.store(false, std::memory_order_relaxed);
    // Starving at the thread limit (thread_limit.cpp): sampled here, where
    // it can arise, so that the monitor's other ticks pay nothing for it.
    // With the flag cleared the default sample ends any watch, and none
    // starts again before assign_m sets the flag.
    if (work_left) starving = sample_starvation();
  }
  const std::int64_t now = mono_now_ns();
  watch_starvation(starving, now);
  for (processor* p : unheld) {
    // The P may be acquired meanwhile; all of this is safe on a held P too
    // (timers and the ring have locks of their own, stealing is lock-free),
    // but not while the world is stopped (above).
    serve_p(p, now);
    if (p->runq.size() != 0) wake_p();
  }
  if (work_left && work_queued()) wake_p();
}

void scheduler::sysmon_main() {
#if defined(MPG_DEBUG_CHECKS) || !defined(NDEBUG)
  const bool report = true;
#else
  const bool report = opts_.report_long_tasks;
#endif
  // Saturated: milliseconds::max() ("never") has no nanosecond form.
  const std::int64_t threshold_ns = to_ns(saturating_add(steady_time{}, opts_.long_task_threshold));
  std::vector<std::uint64_t> last_tick(ps_.size(), 0);
  std::vector<std::int64_t> since(ps_.size(), mono_now_ns());
  std::vector<bool> queued_before(ps_.size(), false);
  // Per P: found unheld with work by the last serve_unheld_ps(), which
  // marked its runnext G stealable; the sampling below keeps that mark.
  std::vector<bool> unheld_marked(ps_.size(), false);
  // Per P, for forced publication: the deque's word at the last sample if
  // its spawns were unpublished then.
  std::vector<std::optional<std::uint64_t>> unpublished_word(ps_.size());
  // Per P, for the oldest spawns' turns (the top of the file): the oldest
  // spawn's position last seen and since when it is there; since the deque
  // was last seen empty, the deque's size at the last turn (UINT32_MAX:
  // none), the time of the last turn and the wait for a turn at a larger
  // size.
  std::vector<std::int64_t> oldest_seen(ps_.size(), -1);
  std::vector<std::int64_t> oldest_since(ps_.size(), 0);
  std::vector<std::uint32_t> size_at_turn(ps_.size(), UINT32_MAX);
  std::vector<std::int64_t> last_turn(ps_.size(), 0);
  std::vector<std::int64_t> grown_wait(ps_.size(), kGrownFirstWait);
  std::chrono::milliseconds period{1};
  for (;;) {
    {
      thread_mutex_lock l(sysmon_mu_);
      l.wait_for(sysmon_cv_, period,
                 [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sysmon_mu_) { return sysmon_stop_; });
      if (sysmon_stop_) return;
    }
    const std::int64_t now = mono_now_ns();
    bool any_running = false;
    for (std::size_t i = 0; i < ps_.size(); ++i) {
      processor* p = ps_[i].get();
      const work_deque& spawns = p->runq.spawns();
      const std::int64_t oldest = spawns.oldest_position();
      const std::uint32_t waiting = spawns.size();
      if (waiting == 0) {
        oldest_seen[i] = -1;
        size_at_turn[i] = UINT32_MAX;
        grown_wait[i] = kGrownFirstWait;
      } else if (oldest != oldest_seen[i]) {
        oldest_seen[i] = oldest;
        oldest_since[i] = now;
      } else if (now - oldest_since[i] >= kOldestSpawnWait) {
        const bool grown = waiting > size_at_turn[i];
        if (!grown || now - last_turn[i] >= grown_wait[i]) {
          p->oldest_spawn_due.store(true, std::memory_order_relaxed);
          if (grown) grown_wait[i] = std::min(2 * grown_wait[i], kGrownMaxWait);
          size_at_turn[i] = waiting;
          last_turn[i] = now;
          oldest_since[i] = now;
        }
      }
      const std::uint64_t tick = p->schedtick.load(std::memory_order_relaxed);
      const std::uint64_t gid = p->cur_gid.load(std::memory_order_relaxed);
      if (tick != last_tick[i] || gid == 0) {
        last_tick[i] = tick;
        since[i] = now;
        // A P between Gs or on a new G: its holder runs its runnext G next.
        // One last seen unheld (gid 0) keeps the mark serve_unheld_ps()
        // gave it; an M that takes it clears that (end_unheld_mark).
        if (gid != 0 || !unheld_marked[i])
          p->runnext_stealable.store(false, std::memory_order_relaxed);
        if (gid != 0) any_running = true;
        continue;
      }
      any_running = true;
      const std::int64_t ran = now - since[i];
      if (ran < 1000000) continue;
      // Stuck on one G for a period: free what waits behind it.
      p->runnext_stealable.store(true, std::memory_order_relaxed);
      if (p->runq.size() != 0) wake_p();
      serve_p(p, now);
      if (report && ran >= threshold_ns &&
          p->reported_tick.exchange(tick, std::memory_order_relaxed) != tick) {
        long_reports_.fetch_add(1, std::memory_order_relaxed);
        const char* name = p->cur_name.load(std::memory_order_relaxed);
        std::fprintf(stderr,
                     "mpg: P%u has run task %llu%s%s%s for %lld ms without suspending; "
                     "long CPU-bound loops should co_await mpg::consume_budget()\n",
                     p->id, static_cast<unsigned long long>(gid), name ? " (" : "",
                     name ? name : "", name ? ")" : "", static_cast<long long>(ran / 1000000));
      }
    }
    // Forced publication: a P whose spawns stayed private, with none
    // published, on two samples in a row with the same deque word (no
    // steal, no publication in between: its holder has not been back to
    // its deque), while another P idles or an M spins for work, gets them
    // published (work_deque.hpp) and a spinner for them. Relaxed: hints;
    // force_publish() decides under its own protocol.
    const bool seekers = ps_.size() > 1 && (npidle_.load(std::memory_order_relaxed) != 0 ||
                                            nmspinning_.load(std::memory_order_relaxed) != 0);
    for (std::size_t i = 0; i < ps_.size(); ++i) {
      std::uint64_t word = 0;
      const bool unpublished = seekers && ps_[i]->runq.spawns().unpublished(&word);
      if (unpublished && unpublished_word[i] == word && ps_[i]->runq.force_publish_spawns()) {
        forced_publications_.fetch_add(1, std::memory_order_relaxed);
        wake_p();
      }
      unpublished_word[i] = unpublished ? std::optional<std::uint64_t>(word) : std::nullopt;
      if (unpublished) any_running = true;  // look again in a millisecond
    }
    // Balance: a P that keeps a queue while another P idles (asleep in its
    // ring, or released: a P parked in its ring is on the idle list too, so
    // npidle_ counts both) gets a spinner here (the top of the file).
    // Relaxed: a hint; wake_p() makes its own seq_cst checks (a spinner
    // already looking, or no idle P, and it does nothing).
    // A queue counts once it is seen on two samples in a row, so a P that
    // merely has a burst in hand when sampled costs no wake.
    if (npidle_.load(std::memory_order_relaxed) != 0) {
      bool wake = false;
      for (std::size_t i = 0; i < ps_.size(); ++i) {
        const bool queued = ps_[i]->runq.size() >= 2;
        wake = wake || (queued && queued_before[i]);
        queued_before[i] = queued;
        if (queued) any_running = true;  // look again in a millisecond
      }
      if (wake) wake_p();
    } else {
      std::fill(queued_before.begin(), queued_before.end(), false);
    }
    std::fill(unheld_marked.begin(), unheld_marked.end(), false);
    if (unheld_work_.load(std::memory_order_relaxed)) {
      serve_unheld_ps(&unheld_marked);
      any_running = true;  // look again in a millisecond
    }
    period = std::chrono::milliseconds(any_running ? 1 : 10);
  }
}

}  // namespace mpg::detail
