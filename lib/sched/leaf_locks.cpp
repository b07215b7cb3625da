// lib/sched/leaf_locks.cpp: the fork handlers of mpg's leaf locks, the frame
// depot's and the orphan list's (leaf_locks.hpp).
//
// fork() copies only the calling thread. A lock that another thread holds
// at the fork stays held for ever in the child, whose runtime would wait
// for it the first time a frame goes through the depot or a thread adopts
// or gives up a post cache. So, as for the signal clients' locks
// (signal_handler.cpp, F1-F3) and the runtime registry's (runtime.cpp), one
// set of pthread_atfork handlers runs on the forking thread:
//   L1. prepare: the orphan list's lock, then the depot's. Either order
//       would do: a holder of one never takes the other.
//   L2. parent: both released.
//   L3. child: both released. What they guard stays, and is valid in the
//       child: the depot's chains are free frames in memory the child
//       owns, and the orphans are caches that no thread owns, for the
//       child's threads to adopt. What the parent's other threads held for
//       themselves is gone with them: their frame lists and their own post
//       caches, never freed (nor the slabs of those frames), and named by
//       nothing the child may use (the nodes posted from those threads sit
//       in the parent's runtimes, which the child must not touch).
// Order. L1 runs after every other prepare handler of mpg's: a holder of a
// lock that those take may need a leaf lock before it lets go, or wait for
// a thread that does. The dumper holds its registry lock while it stops the
// world (dump_signal.cpp, inspect.cpp), which waits for every P's task, and
// a task may be allocating a frame. A prepare that held the depot's lock
// and then waited for the dumper's would wait until the stop's timeout,
// and one that waited for a holder that waits for a leaf lock, for ever.
// Taken last, a leaf lock is waited for only while its holder, which waits
// for nothing, moves its pointers. pthread_atfork runs prepare handlers in
// the reverse order of their registration (parent and child handlers in
// that order), so these are registered first: registry() (runtime.cpp) and
// set_fork_hooks() (signal_handler.cpp) call register_leaf_fork_handlers()
// before their own pthread_atfork, and the depot and the orphan list call
// it before their first lock (a process that makes no runtime and claims
// no signal still needs them, and registers nothing else of mpg's).
// The allocator. A holder of a leaf lock may be inside malloc (a vector of
// the depot or of the orphans grows). glibc's fork() takes malloc's locks
// only after every prepare handler has returned, and releases them before
// the parent and child handlers run, so that holder finishes.
//   L4. The handlers are never registered with a leaf lock held: glibc
//       holds the lock of its handler list from the first prepare to the
//       last parent or child handler, so a pthread_atfork() under a leaf
//       lock could wait for a fork whose L1 waits for that lock.
#include "sched/leaf_locks.hpp"

#include <pthread.h>

namespace mpg::detail {

namespace {

void leaf_fork_prepare() noexcept {
  if (auto hook = g_leaf_fork_hook.load(std::memory_order_relaxed)) hook();
  post_orphans_lock();
  frame_depot_lock();
}

// L2 and L3 alike. Unlocking is what a child handler may do (as F3 does):
// no allocation, no call that is not async-signal-safe.
void leaf_fork_release() noexcept {
  frame_depot_unlock();
  post_orphans_unlock();
}

}  // namespace

void register_leaf_fork_handlers() noexcept {
  // Fails only out of memory (ENOMEM); see leaf_locks.hpp.
  static const int registered =
      ::pthread_atfork(leaf_fork_prepare, leaf_fork_release, leaf_fork_release);
  (void)registered;
}

}  // namespace mpg::detail
