// mpg/task_group.hpp: task_group, Go's errgroup: run tasks that return a
// Status, wait for all, get the first error; the first error cancels the
// group's context so the others can stop early.
//
//   mpg::task_group g(ctx);
//   for (auto& url : urls) g.spawn(fetch(g.context(), url));
//   absl::Status s = co_await g.wait();   // all done; the first error, or OK
//
// spawn() starts each task as a new G at once (mpg::go, so it must be called
// from a task). The first task to fail (a non-OK Status, or an exception)
// records its failure and cancels context(); later failures are dropped,
// except that the first exception replaces a Status failure recorded before
// it. wait() parks until every spawned task has finished (its frame
// destroyed, so its parameters' destructors have run), cancels context() (as
// errgroup does, releasing its resources), and returns the first error; if
// the failure is an exception, wait() rethrows it (the same exception object
// to every wait()). A task_group may be destroyed before its tasks finish:
// they share its state and run on. It may also be destroyed between wait()
// and the await of the task wait() returned, which holds the state too. An
// exception that no wait() rethrew when the group and its tasks are gone is
// reported on stderr and aborts the program, as one escaping a detached
// task does.
//
// Design: a wait_group counts the running tasks; a small spinlock guards the
// first failure. Each task is wrapped in a coroutine that awaits it, records
// a failure, then calls done(): the wait_group's release/acquire orders the
// recorded failure before wait()'s read of it.
//
// Shutdown: wait() parks in the wait_group, whose waiter unlinks itself
// when its task is killed by ~runtime (wait_group.hpp), so members on
// another runtime that finish after that ~runtime never touch it. As for
// any wake from outside a runtime, a member must not be finishing on
// another runtime while the waiter's ~runtime runs (docs/api.md, ~runtime).
// A member killed before it finished never calls done(): a wait()
// elsewhere then never returns.
//
// Memory ordering: the failure is written under a spinlock before the task's
// wait_group::done() (acq_rel), and read by wait() after wait_group::wait()
// (acquire, or ready()): written before, read after, nothing else needed.
#pragma once

#include <absl/status/status.h>

#include <exception>
#include <memory>

#include "mpg/context.hpp"
#include "mpg/task.hpp"
#include "mpg/wait_group.hpp"

namespace mpg {

class task_group {
 public:
  // A group whose context() is a child of parent (cancelled with it).
  explicit task_group(const mpg::context& parent = background());
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  ~task_group();

  // task_group::spawn()
  //
  // Starts t as a new G of the current runtime. Throws std::logic_error
  // outside a task, and for a task that was awaited already or is empty
  // (as mpg::spawn does), leaving the group as it was. `name` (static
  // storage) appears in task dumps.
  void spawn(task<absl::Status> t, const char* name = nullptr);

  // task_group::context(): cancelled by the first failure, by wait()'s
  // return, or with the parent.
  const mpg::context& context() const noexcept;

  // task_group::wait()
  //
  // `co_await g.wait()`: parks until every task spawned so far has
  // finished; returns the first error, or OK (rethrows a first failure that
  // was an exception). The call takes a reference on the group's state,
  // and the task it returns holds it: that task may be awaited after the
  // group is destroyed. Not a coroutine itself: a member coroutine would
  // read the group (this) only when first resumed.
  task<absl::Status> wait();

 private:
  struct state;
  static task<void> run_member(std::shared_ptr<state> st, task<absl::Status> t);
  static task<absl::Status> wait_on(std::shared_ptr<state> st);
  std::shared_ptr<state> st_;
};

}  // namespace mpg
