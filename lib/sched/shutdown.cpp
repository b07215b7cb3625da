// lib/sched/shutdown.cpp: stopping a runtime (~runtime's body).
//
// Shutdown (~runtime), in order:
//   1. stopping_ is set; sysmon stops; every M is woken (futex and ring).
//   2. Each M returns from its current G (a G that never suspends would hold
//      its M: mpg cannot preempt), sees stopping_ and exits; all are joined.
//   3. Each P's ring cancels what is in flight and reaps the last completions,
//      which ready their Gs as always; those Gs never run again (step 6).
//   4. Timers still pending are detached from their (soon freed) Ps: every
//      heap is emptied and each timer forgets its P, so it will never fire
//      and cancel_timer() on it returns false without touching the runtime
//      (timers.cpp, "Shutdown"). This comes before step 6: a timer may live
//      in a frame that step 6 frees (a sleep's awaiter, a bare timer), and
//      the heaps must not point into freed frames when anything (step 6's
//      destructors cancelling their own timers, or the detach itself) next
//      walks them. An after() channel or a context that outlives the
//      runtime can still be dropped.
//   5. The tasks still live are reported on stderr: their number, ids, names
//      and await chains (inspect.cpp).
//   6. Every G still live (runnable or waiting) is killed, newest first (a
//      child before the parent it may borrow from; a sync primitive or
//      channel freed before its waiters detaches them): its root frame is
//      destroyed, which destroys the whole chain of frames it awaits (a
//      deep chain on a thread with the stack for it: destroy_root; the
//      chains are measured before the first kill, which may destroy part
//      of a chain killed later: a child run inline, through its handle in
//      the killed frame). The root's join word is settled when its destroy
//      is over, at its free (frame.hpp, the shutdown's transition): a frame
//      whose join_handle is still held elsewhere keeps its memory until that
//      handle is dropped (kJoinKilled), and a handle dropped, joined or
//      selected on during the destroy frees nothing and reads nothing that
//      the destroy ends. A task of another runtime
//      parked on its join is then woken as a finish would wake it, and its
//      join throws; it would otherwise wait for ever. A G killed while
//      parked on the join of a task (of another runtime, say) is first
//      taken out of that task's join word (take_back_joiner), which the
//      task's end would otherwise follow to the freed G. Destructors that ready
//      other Gs during this only queue them; nothing runs any more. A new
//      fd that an op made for a killed task (an open, an accept, an
//      io::submit of an opcode that makes one), whose result the task never
//      read, is closed by the op's awaiter in the frame (lib/io/fd_awaiter.hpp,
//      mpg/io.hpp). A G that was readied with a hand-off (a lock, a permit,
//      a once's run) and never ran gives it back from its awaiter's
//      destructor, and so does a G killed while it runs a once's f, unless
//      the primitive was destroyed earlier in this kill: the primitives
//      report their destruction to the kill (killed_objects below;
//      parking_queue.hpp, "Shutdown").
//   7. ~runtime waits for a signal delivery in progress, which may still be
//      readying a G that step 6 killed (lib/io/signal_relay.hpp), and only
//      then deletes the scheduler.
// Before step 1, ~runtime closes its handles' control block (post.cpp): from
// then on runtime_handle::post returns false. Functions still posted are
// destroyed unrun right after step 4.
// Steps 4 to 6 are kill_remaining(), which detaches the timers itself so
// that no caller can kill frames with their timers still queued.
#include <pthread.h>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "mpg/detail/sched/frame.hpp"
#include "mpg/spawn.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {
// The objects that reported their destruction (note_destroyed_in_kill)
// during the kill this thread runs (kill_remaining, or the thread it lends a
// deep chain to, while it waits for it: never two threads at once), else
// null. Only this thread reads or writes it.
// initial-exec, as scheduler.cpp's: every primitive's destructor reads it.
__attribute__((tls_model("initial-exec"))) thread_local std::vector<const void*>*
    tls_killed_objects = nullptr;

// killed_objects_scope: makes `list` this thread's list for its lifetime.
class killed_objects_scope {
 public:
  explicit killed_objects_scope(std::vector<const void*>* list) noexcept
      : saved_(std::exchange(tls_killed_objects, list)) {}
  ~killed_objects_scope() { tls_killed_objects = saved_; }
  killed_objects_scope(const killed_objects_scope&) = delete;
  killed_objects_scope& operator=(const killed_objects_scope&) = delete;

 private:
  std::vector<const void*>* saved_;
};
}  // namespace

void note_destroyed_in_kill(const void* obj) noexcept {
  std::vector<const void*>* list = tls_killed_objects;
  if (list == nullptr) [[likely]]
    return;
  // Out of memory: the primitive is not recorded, and a waiter readied
  // with a hand-off from it would give it back to freed memory. Nothing
  // safe is left to do then.
  try {
    list->push_back(obj);
  } catch (...) {
    std::terminate();
  }
}

bool destroyed_in_kill(const void* obj) noexcept {
  const std::vector<const void*>* list = tls_killed_objects;
  return list != nullptr && std::find(list->begin(), list->end(), obj) != list->end();
}

void scheduler::shutdown_io() noexcept {
  // Step 3: no M runs any more (stop() joined them).
  for (auto& p : ps_) p->io->cancel_all();
}

namespace {
// wake_killed_joiner(): a joiner parked on a task just killed (the old join
// word), once its frame is destroyed (a woken joiner may free its memory at
// once). One of another runtime, which nothing else would ever wake, is
// woken as by the task's end (J3 for a select case): its join finds Killed
// and throws. One of this runtime is among the live Gs, killed in its turn
// (or already: a younger select took its waiter off, J4); a select's waiter
// still gets J3's last touch, waker_done, which its J4 waits for on Killed
// as on Done.
// take_back_joiner(): gp, about to be killed, is parked in the join word
// of a task (gp->joined) that may belong to another runtime and end after
// this one is gone, when it would ready the freed G. The word goes back to
// Running, as if gp had never joined. gp->joined is set only while the
// word holds gp: everything that takes gp out of it (the task's end, its
// kill, its handle's drop) clears the field, so the frame is alive and the
// CAS is expected to succeed; it is a CAS so that a task of another runtime
// ending during ~runtime (which docs/api.md rules out) is not undone.
// Relaxed: no M of this runtime runs, and the word publishes nothing to
// anyone here.
void take_back_joiner(g* gp) noexcept {
  std::uintptr_t expected = reinterpret_cast<std::uintptr_t>(gp);
  gp->joined->join.compare_exchange_strong(expected, kJoinRunning, std::memory_order_relaxed);
  gp->joined = nullptr;
}

void wake_killed_joiner(const scheduler* self, std::uintptr_t old) noexcept {
  if (is_select_joiner(old)) {
    auto* w = reinterpret_cast<join_waiter*>(old & ~kJoinSelectTag);
    if (w->sel()->gp->sched != self) {
      wake_select_joiner(old);  // claims, sets waker_done, readies on a win
    } else {
      // Release: pairs with J4's acquire, as in wake_select_joiner.
      w->waker_done.store(1, std::memory_order_release);
    }
    return;
  }
  g* joiner = reinterpret_cast<g*>(old);
  joiner->joined = nullptr;
  if (joiner->sched != self) ready(joiner);
}

// Destroying a root frame destroys the frames it awaits, each inside its
// parent's destruction, one stack frame or more per level: a chain of a
// million awaits, which runs in any build (task.hpp), would need far more
// stack than the thread has. So a deep chain is destroyed on a thread of its
// own whose stack fits it (reserved, not committed, until used); a chain
// under kDeepChain, on this thread as usual.
// The stack reserved a level: 1 KiB, and more under AddressSanitizer, which
// pads every stack frame: a chain of task_edge_tests' frames needed more
// than 1.5 KiB a level built by g++ 12 with it (1 and 1.5 KiB crashed, 2
// KiB ran), so such builds reserve twice that.
#ifndef __has_feature
#define __has_feature(x) 0
#endif
constexpr std::size_t kDeepChain = 8192;
#if defined(__SANITIZE_ADDRESS__) || __has_feature(address_sanitizer)
constexpr std::size_t kStackPerLevel = 4096;
#else
constexpr std::size_t kStackPerLevel = 1024;
#endif

// chain_size: what measure_chain() finds in a G's chain.
struct chain_size {
  std::size_t depth = 0;  // task frames from the resume point out to the root
  // Of those, the ones at and below the outermost child run inline (a
  // spawned task whose joiner took it, kJoinInline): the part of the
  // chain that belongs to that child's join_handle, which may be dropped
  // (destroying the part) by the kill of another task that holds it.
  std::size_t inline_depth = 0;
};

// measure_chain(): walks gp's chain from its resume point out to its root,
// as the task dump does (inspect.cpp, write_await_chain); all 0 when the
// chain is not all task frames (a foreign link).
chain_size measure_chain(const g* gp) noexcept {
  const void* const root = gp->root.address();
  const void* frame = gp->resume.address();
  chain_size c;
  while (frame != nullptr && frame != root) {
    const promise_base& p =
        std::coroutine_handle<promise_base>::from_address(const_cast<void*>(frame)).promise();
    if (!p.awaited_by_task()) return {};
    ++c.depth;
    // A spawned frame (it has a G id) below the root is a child run
    // inline. Not its join word: a frame awaited inline may live in its
    // parent's (the compiler may elide its allocation), with no header.
    if (p.gid_ != 0) c.inline_depth = c.depth;
    frame = p.continuation_.address();
  }
  return frame == root ? c : chain_size{};
}

// What destroy_root hands the thread of a deep chain: the root, and the
// kill's list of destroyed objects, which the thread uses as its own while
// the killing thread waits for it.
struct deep_destroy {
  std::coroutine_handle<> root;
  std::vector<const void*>* killed;
  std::uintptr_t killed_word = kJoinRunning;  // the thread's take_killed_word()
};

// destroy_root(): destroys a killed task's root, marked (frame.hpp), and
// returns the join word its free replaced (take_killed_word()).
std::uintptr_t destroy_root(std::coroutine_handle<> root, std::size_t depth) noexcept {
  if (depth >= kDeepChain) {
    pthread_attr_t attr;
    pthread_t t;
    deep_destroy job{root, tls_killed_objects};
    if (::pthread_attr_init(&attr) == 0) {
      const bool made =
          ::pthread_attr_setstacksize(&attr, (depth + kDeepChain) * kStackPerLevel) == 0 &&
          ::pthread_create(
              &t, &attr,
              [](void* arg) -> void* {
                auto* d = static_cast<deep_destroy*>(arg);
                killed_objects_scope scope(d->killed);
                d->root.destroy();
                d->killed_word = take_killed_word();
                return nullptr;
              },
              &job) == 0;
      ::pthread_attr_destroy(&attr);
      if (made) {
        ::pthread_join(t, nullptr);
        return job.killed_word;
      }
    }
    // No such thread: destroy here, as a shallower chain would be.
  }
  root.destroy();
  return take_killed_word();
}

}  // namespace

void scheduler::kill_remaining(std::ostream& report) {
  // Step 4 first, before any frame is destroyed (see the top of the file).
  // No M runs (stop() joined them and sysmon), so no timer fires or is
  // added while we detach and kill: add_timer() finds this runtime only on
  // one of its Ms (add_timer(t, s) naming a runtime being destroyed, from
  // another thread, is a misuse like any use of an object being destroyed).
  detach_timers();
  // From here on, the primitives destroyed on this thread report it
  // (parking_queue.hpp, "Shutdown"): what follows may destroy them.
  std::vector<const void*> killed_objects;
  killed_objects_scope scope(&killed_objects);
  // Functions still posted are destroyed unrun (runtime_handle.hpp); their
  // captures' destructors may ready Gs, which are then only queued.
  drop_posted();
  std::vector<g*> live;
  // The walk over every G ever made is skipped when the counts say that
  // none is live (a runtime that made a million tasks and ended them all
  // would otherwise visit a million dead Gs here).
  if (const g_counts c = counted_gs(); c.spawned != c.completed) {
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
  std::sort(live.begin(), live.end(), [](g* a, g* b) {
    return a->id.load(std::memory_order_relaxed) > b->id.load(std::memory_order_relaxed);
  });
  std::ostringstream names;
  constexpr std::size_t kShown = 20;
  for (std::size_t i = 0; i < live.size() && i < kShown; ++i) {
    g* gp = live[i];
    const char* n = gp->name.load(std::memory_order_relaxed);
    const char* why = gp->wait_reason.load(std::memory_order_relaxed);
    names << "\n  task " << gp->id.load(std::memory_order_relaxed) << (n ? " (" : "")
          << (n ? n : "") << (n ? ")" : "") << ": "
          << to_string(gp->status.load(std::memory_order_relaxed));
    if (why) names << " on " << why;
    // No M runs: the chain is still (inspect.cpp). A G that step 3 (or a
    // destructor above) readied from its park never ran since: its chain
    // is that of its park, as a waiting G's.
    std::ostringstream chain;
    write_await_chain(chain, gp, /*readied_too=*/true);
    std::string text = chain.str();
    if (!text.empty()) names << "\n" << text.substr(0, text.size() - 1);
  }
  if (live.size() > kShown) names << "\n  ...";
  report << "mpg: runtime shut down with " << live.size()
         << " task(s) still alive; destroying them:" << names.str() << std::endl;
  // Every chain is measured before any frame is destroyed: a kill may free
  // frames of a chain killed later. A joiner that runs a child inline is
  // parked inside the child's frames, which belong to the child's handle:
  // held in a younger task's frame, that handle is dropped by the younger
  // task's kill, which destroys the child's part of the chain (drop_join)
  // inside its own destruction. So each root is destroyed with room for
  // its own chain and for the deepest such part of any other chain (the
  // deepest, and the next for the chain that has it).
  std::vector<std::size_t> depths;
  depths.reserve(live.size());
  std::size_t inline_deepest = 0, inline_next = 0, deepest_at = live.size();
  for (g* gp : live) {
    const chain_size c = gp->root ? measure_chain(gp) : chain_size{};
    if (c.inline_depth > inline_deepest) {
      inline_next = std::exchange(inline_deepest, c.inline_depth);
      deepest_at = depths.size();
    } else {
      inline_next = std::max(inline_next, c.inline_depth);
    }
    depths.push_back(c.depth);
  }
  for (std::size_t i = 0; i < live.size(); ++i) {
    g* gp = live[i];
    std::coroutine_handle<> root = gp->root;
    gp->status.store(g_status::dead, std::memory_order_relaxed);
    if (!root) continue;
    const std::size_t depth = depths[i] + (i == deepest_at ? inline_next : inline_deepest);
    // The join word is settled by the frame's free, once the destroy is
    // over (frame.hpp, the shutdown's transition): until then a handle
    // dropped, joined or selected on elsewhere finds the task unfinished
    // and frees nothing of the frame.
    mark_killed_root(header_of(root.address()));
    gp->root = {};
    gp->resume = {};
    if (gp->joined != nullptr) take_back_joiner(gp);
    const std::uintptr_t old = destroy_root(root, depth);
    if (old > kJoinInline) wake_killed_joiner(this, old);
  }
  thread_mutex_lock l(allg_mu_);
  for (g* gp : live) gfree_global_.push_back(gp);
}

}  // namespace mpg::detail
