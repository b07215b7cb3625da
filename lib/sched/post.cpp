// lib/sched/post.cpp: runtime_handle's control block and the posted-function
// queue (mpg/runtime_handle.hpp).
//
// The control block (handle_state) is shared by the scheduler and every
// runtime_handle / external_work; it outlives the runtime when they do. Its
// word holds bit 0 "alive" and, above it, twice the number of callers inside
// (a post or a waker add/remove in progress):
//   enter():  fetch_add(2); if alive was clear, fetch_sub(2) and refuse;
//   leave():  fetch_sub(2);
//   close():  (~runtime, before stop) fetch_and(~1), then wait until the word
//             is 0: no caller inside, and none can enter.
// All three are read-modify-writes of one word, so they are totally ordered:
// a caller whose fetch_add comes after close's fetch_and sees alive clear and
// refuses; one whose fetch_add comes before is counted, and close waits for
// its leave. So a post racing with ~runtime is either queued (and then run,
// or destroyed by shutdown) or refused; never queued after the queue is
// drained. leave() is release and close's wait acquire: everything a caller
// did to the scheduler happens before ~runtime goes on to stop and free it.
// enter() is acquire (pairs with nothing but keeps the caller's scheduler
// accesses after it; the count, not the ordering, is what protects them).
//
// The posted queue. A post follows the parking protocol of scheduler.cpp
// exactly as a G put on the global queue does:
//   S1. the node is linked under the scheduler lock and posted_size_ grows
//       (seq_cst fetch_add);
//   S2. wake_p() (seq_cst loads of npidle_/nmspinning_, CAS, start an M).
// The scheduler's side (find_runnable.cpp) treats a non-empty posted queue
// as queued work wherever it looks at the global queue: the spinner's
// retry, P1's recheck under the lock (an M does not release its P while
// functions are queued), P3's recheck (work_queued(), seq_cst), a P handed
// off by mpg::blocking (has_work_locked), sysmon's unheld Ps, and the
// deadlock check (a queued function is runnable work). So no post is left
// queued while every M sleeps.
//
// Running them. run_posted() takes up to kPostBatch nodes under the lock and
// runs them on this M, holding its P, with no current G. It is called when
// the P's local queue is empty (before the global queue is polled, which is
// still polled in the same round) and on every 61st scheduling tick: Gs and
// posted functions alternate instead of either starving the other. Each
// batch counts as scheduling progress for the deadlock check.
//
// Shutdown: ~runtime closes the control block (no new post), then stops;
// drop_posted() (kill_remaining) destroys the nodes still queued without
// running them.
#include <thread>

#include "mpg/runtime_handle.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

struct handle_state {
  explicit handle_state(scheduler* s) : sched(s) {}
  scheduler* const sched;  // valid while entered, or on one of its Ms
  std::atomic<std::uint64_t> word{1};

  bool enter() noexcept {
    const std::uint64_t old = word.fetch_add(2, std::memory_order_acquire);
    if ((old & 1) != 0) return true;
    leave();
    return false;
  }
  void leave() noexcept { word.fetch_sub(2, std::memory_order_release); }
};

namespace {
constexpr std::uint32_t kPostBatch = 32;
}

void scheduler::open_handles() { handle_state_ = std::make_shared<handle_state>(this); }

void scheduler::close_handles() noexcept {
  handle_state& st = *handle_state_;
  // acq_rel: the RMW orders us against every enter(); see the top of the file.
  st.word.fetch_and(~std::uint64_t{1}, std::memory_order_acq_rel);
  // acquire: pairs with leave()'s release. A caller inside only queues a
  // node or adjusts a counter, so this wait is short.
  while (st.word.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

void scheduler::post(post_node* n) noexcept {
  n->next = nullptr;
  {
    thread_mutex_lock l(mu_);
    if (ptail_ != nullptr) ptail_->next = n; else phead_ = n;
    ptail_ = n;
    // seq_cst: S1 of the parking protocol (scheduler.cpp).
    posted_size_.fetch_add(1, std::memory_order_seq_cst);
  }
  wake_p();  // S2
}

bool scheduler::run_posted(machine* m) {
  if (posted_size_.load(std::memory_order_relaxed) == 0) return false;  // a hint; rechecked under mu_
  post_node* first = nullptr;
  std::uint32_t n = 0;
  {
    thread_mutex_lock l(mu_);
    first = phead_;
    post_node* last = nullptr;
    for (post_node* it = phead_; it != nullptr && n < kPostBatch; it = it->next, ++n) last = it;
    if (n == 0) return false;
    phead_ = last->next;
    if (phead_ == nullptr) ptail_ = nullptr;
    last->next = nullptr;
    // seq_cst: paired with the recheck loads of the parking protocol.
    posted_size_.fetch_sub(n, std::memory_order_seq_cst);
  }
  // We found work: stop spinning (and wake another spinner if we were the
  // last), as for a G taken from the global queue.
  if (m->spinning) reset_spinning(m);
  while (first != nullptr) {
    post_node* next = first->next;
    first->invoke(first, true);
    first = next;
  }
  // Relaxed: a progress counter sampled by the deadlock check.
  posts_run_.fetch_add(n, std::memory_order_relaxed);
  return true;
}

void scheduler::drop_posted() noexcept {
  post_node* first;
  {
    thread_mutex_lock l(mu_);
    first = phead_;
    phead_ = ptail_ = nullptr;
    posted_size_.store(0, std::memory_order_seq_cst);
  }
  while (first != nullptr) {
    post_node* next = first->next;
    first->invoke(first, false);
    first = next;
  }
}

// ---------------------------------------------------------------------------
// The functions behind mpg/runtime_handle.hpp.

std::shared_ptr<handle_state> current_handle_state() {
  scheduler* s = current_scheduler();
  if (s == nullptr)
    throw runtime_misuse_error("mpg::runtime_handle::current() called outside a task or posted function");
  return s->handle_state_ptr();
}

bool handle_post(handle_state* st, post_node* n) noexcept {
  if (!st->enter()) return false;
  st->sched->post(n);
  st->leave();
  return true;
}

bool handle_running_here(const handle_state* st) noexcept {
  // On an M of a live runtime, m->sched is valid; its control block is a
  // live object distinct from any other live one, so comparing addresses
  // cannot confuse two runtimes (st is kept alive by the caller's handle).
  scheduler* s = current_scheduler();
  return s != nullptr && s->handle_state_ptr().get() == st;
}

bool handle_waker_add(handle_state* st) noexcept {
  if (!st->enter()) return false;
  st->sched->external_waker_add();
  st->leave();
  return true;
}

void handle_waker_remove(handle_state* st) noexcept {
  // Once the runtime is closed there is nothing to undo: its counter is gone
  // (or about to be).
  if (!st->enter()) return;
  st->sched->external_waker_remove();
  st->leave();
}

bool in_mpg_task() noexcept { return current_g() != nullptr; }

void throw_schedule_misuse(bool runtime_gone) {
  if (runtime_gone)
    throw runtime_misuse_error("mpg::runtime_handle::schedule(): the runtime is shutting down or gone");
  throw runtime_misuse_error(
      "mpg::runtime_handle::schedule() awaited by an mpg task of another runtime (spawn there instead)");
}

}  // namespace mpg::detail
