// lib/sched/post.cpp: runtime_handle's control block and the posted-function
// queue (mpg/runtime_handle.hpp).
//
// The control block (handle_state) is shared by the scheduler and every
// runtime_handle / external_work; it outlives the runtime when they do. Its
// word holds bit 0 "alive" and, above it, twice the number of callers inside
// (a post or a waker add/remove in progress):
//   enter():  load; while alive is set, CAS the word to word + 2 (counted);
//             once alive is clear, refuse without writing the word;
//   leave():  fetch_sub(2);
//   close():  (~runtime, before stop) fetch_and(~1), then wait until the word
//             is 0: no caller inside, and none can enter.
// The changes are read-modify-writes of one word, so they are totally
// ordered: an enter() CAS expects alive set, so it succeeds only before
// close's fetch_and (alive is never set again), and close waits for that
// caller's leave. A refused caller never changes the word, so close waits
// for the callers counted before it and no others, however many posts are
// refused meanwhile. So a post racing with ~runtime is either queued (and
// then run, or destroyed by shutdown) or refused; never queued after the
// queue is drained. leave() is release and close's wait acquire: everything
// a caller did to the scheduler happens before ~runtime goes on to stop and
// free it.
// enter() is acquire (pairs with nothing but keeps the caller's scheduler
// accesses after it; the count, not the ordering, is what protects them).
//
// The posted queue has two parts:
//   - the inbox, a lock-free stack (Treiber) that posters push onto with one
//     CAS: posting never takes a lock;
//   - the outbox, a FIFO under post_mu_ that Ms run from. When it is empty,
//     an M moves the whole inbox into it (one exchange, then reversed, so
//     each poster's functions keep their order).
// A post follows the parking protocol of scheduler.cpp as a push onto a
// local run queue does:
//   S1. the CAS that links the node into the inbox (seq_cst);
//   S2. wake_p() (seq_cst loads of npidle_/nmspinning_, CAS, start an M).
// The scheduler's side (find_runnable.cpp) treats a non-empty inbox or
// outbox as queued work wherever it looks at the global queue: the
// spinner's retry, P1 (an M does not give its P up while functions are
// queued), P3's recheck after the last spinner's decrement (work_queued(),
// seq_cst loads of inbox_ and outbox_size_), a P handed off by mpg::blocking
// (has_work_locked), sysmon's unheld Ps, and the deadlock check (a queued
// function is runnable work). Either the poster's S2 sees the last
// spinner's decrement and starts an M, or that spinner's P3 sees the node;
// a non-spinning M that misses it in P1 looks again after raising npidle_
// (scheduler.cpp, P3), so its poster's S2 or that look sees the other; and
// every running P comes back to the queue itself. Nodes that an M has
// moved out of the inbox but not yet counted in outbox_size_ are in
// the hands of that running M, which takes its batch and, if any remain,
// calls wake_p() so that another M helps.
//
// Running them. run_posted() takes up to kPostBatch nodes from the outbox
// and runs them on this M, holding its P, with no current G. It is called
// when the P's local queue is empty (the global queue is still polled in
// the same round) and on every 61st scheduling tick: Gs and posted
// functions alternate instead of either starving the other. Each run counts
// as scheduling progress for the deadlock check.
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
    std::uint64_t old = word.load(std::memory_order_relaxed);
    do {
      if ((old & 1) == 0) {
        refused();
        return false;
      }
      // acquire on success: see the top of the file. Relaxed on failure:
      // the next attempt reads the word again.
    } while (!word.compare_exchange_weak(old, old + 2, std::memory_order_acquire,
                                         std::memory_order_relaxed));
    return true;
  }
  void leave() noexcept { word.fetch_sub(2, std::memory_order_release); }
  static void refused() noexcept;
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
  post_node* head = inbox_.load(std::memory_order_relaxed);
  do {
    n->next = head;
    // seq_cst on success: S1 of the parking protocol (and release: the node
    // is complete before an M can take it). Relaxed on failure: retry.
  } while (
      !inbox_.compare_exchange_weak(head, n, std::memory_order_seq_cst, std::memory_order_relaxed));
  wake_p();  // S2
}

bool scheduler::run_posted(machine* m) {
  // Relaxed: a hint; the protocol's rechecks use work_queued().
  if (outbox_size_.load(std::memory_order_relaxed) == 0 &&
      inbox_.load(std::memory_order_relaxed) == nullptr)
    return false;
  post_node* first = nullptr;
  std::uint32_t n = 0;
  bool more = false;
  {
    thread_mutex_lock l(post_mu_);
    if (ohead_ == nullptr) {
      // acquire: the posters' nodes are complete (their CAS released them).
      post_node* stack = inbox_.exchange(nullptr, std::memory_order_acquire);
      std::uint64_t k = 0;
      post_node* fifo = nullptr;
      post_node* tail = stack;
      while (stack != nullptr) {
        post_node* next = stack->next;
        stack->next = fifo;
        fifo = stack;
        stack = next;
        ++k;
      }
      ohead_ = fifo;
      otail_ = tail;
      // seq_cst: read by the protocol's rechecks (work_queued()).
      if (k != 0) outbox_size_.fetch_add(k, std::memory_order_seq_cst);
    }
    first = ohead_;
    post_node* last = nullptr;
    for (post_node* it = ohead_; it != nullptr && n < kPostBatch; it = it->next, ++n) last = it;
    if (n == 0) return false;
    ohead_ = last->next;
    if (ohead_ == nullptr) otail_ = nullptr;
    last->next = nullptr;
    outbox_size_.fetch_sub(n, std::memory_order_seq_cst);
    more = ohead_ != nullptr;
  }
  // We found work: stop spinning (and wake another spinner if we were the
  // last), as for a G taken from the global queue; if functions remain,
  // let another M help.
  if (m->spinning) reset_spinning(m);
  if (more) wake_p();
  {
    // The nodes' memory goes back to their posters' caches, one push per
    // run of nodes from one poster (post_pool.cpp).
    post_free_batch freed;
    while (first != nullptr) {
      post_node* next = first->next;
      release_post(first, true, &freed);
      first = next;
    }
  }
  // Relaxed: a progress counter sampled by the deadlock check.
  posts_run_.fetch_add(n, std::memory_order_relaxed);
  return true;
}

bool scheduler::posts_queued() const noexcept {
  return inbox_.load(std::memory_order_seq_cst) != nullptr ||
         outbox_size_.load(std::memory_order_seq_cst) != 0;
}

void scheduler::drop_posted() noexcept {
  post_node* lists[2];
  {
    thread_mutex_lock l(post_mu_);
    lists[0] = ohead_;
    ohead_ = otail_ = nullptr;
    outbox_size_.store(0, std::memory_order_seq_cst);
    // acquire: see run_posted(). No post can come any more (closed).
    lists[1] = inbox_.exchange(nullptr, std::memory_order_acquire);
  }
  for (post_node* first : lists) {
    while (first != nullptr) {
      post_node* next = first->next;
      release_post(first, false);
      first = next;
    }
  }
}

// ---------------------------------------------------------------------------
// The functions behind mpg/runtime_handle.hpp.

std::shared_ptr<handle_state> current_handle_state() {
  scheduler* s = current_scheduler();
  if (s == nullptr)
    throw runtime_misuse_error(
        "mpg::runtime_handle::current() called outside a task or posted function");
  return s->handle_state_ptr();
}

std::atomic<void (*)()> test_post_entered_hook{nullptr};
std::atomic<void (*)()> test_post_refused_hook{nullptr};

void handle_state::refused() noexcept {
  // Relaxed: set by a test before it starts the threads that post.
  if (auto hook = test_post_refused_hook.load(std::memory_order_relaxed)) hook();
}

bool handle_post(handle_state* st, post_node* n) noexcept {
  if (!st->enter()) return false;
  // Relaxed: set by a test before it starts the threads that post.
  if (auto hook = test_post_entered_hook.load(std::memory_order_relaxed)) hook();
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
bool on_p() noexcept {
  machine* m = current_m();
  return m != nullptr && m->p() != nullptr;
}
bool in_task_on_p() noexcept { return in_mpg_task() && on_p(); }

void throw_schedule_misuse(bool runtime_gone) {
  if (runtime_gone)
    throw runtime_misuse_error(
        "mpg::runtime_handle::schedule(): the runtime is shutting down or gone");
  throw runtime_misuse_error(
      "mpg::runtime_handle::schedule() awaited by an mpg task of another runtime "
      "(spawn there instead)");
}

}  // namespace mpg::detail
