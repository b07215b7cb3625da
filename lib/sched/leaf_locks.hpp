// lib/sched/leaf_locks.hpp: mpg's process-wide leaf locks, and the fork
// handlers that keep a child from starting with one of them held
// (leaf_locks.cpp says why they run last).
//
// A leaf lock is one whose holder takes no other lock and waits for
// nothing but the memory allocator: it moves a few pointers and lets go.
// There are two, both process-wide:
//   the frame depot's mutex (frame_allocator.cpp): chains of free frames
//     that threads hand each other;
//   the orphan list's mutex (post_pool.cpp): post caches whose owner
//     thread exited, waiting for a thread to adopt them.
#pragma once

#include <atomic>

namespace mpg::detail {

// frame_depot_lock(), frame_depot_unlock(): take and release the frame
// depot's mutex (frame_allocator.cpp). For the fork handlers, and for
// tests that hold the lock while another thread forks.
void frame_depot_lock() noexcept;
void frame_depot_unlock() noexcept;

// post_orphans_lock(), post_orphans_unlock(): take and release the orphan
// list's mutex (post_pool.cpp). For the fork handlers, and for tests.
void post_orphans_lock() noexcept;
void post_orphans_unlock() noexcept;

// register_leaf_fork_handlers(): registers the leaf locks' pthread_atfork
// handlers, once per process; later calls return at once. Every other
// pthread_atfork registration of mpg calls it first (leaf_locks.cpp, L1),
// and so do the depot and the orphan list before their first lock. Never
// called while a leaf lock is held (L4). Out of memory the handlers go
// unregistered, as the runtime registry's do (lib/runtime.cpp).
void register_leaf_fork_handlers() noexcept;

// Test hook, null outside tests: called on the forking thread when a fork()
// prepares, before the leaf handlers take their locks, so that a test's
// thread holding one can let it go then. Relaxed: a test sets it before the
// moment it stages and clears it after; no data is published through it.
inline std::atomic<void (*)()> g_leaf_fork_hook{nullptr};

}  // namespace mpg::detail
