// lib/sync/task_group.cpp: mpg::task_group (design in task_group.hpp).
#include "mpg/task_group.hpp"

#include <cstdint>

#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/spawn.hpp"

namespace mpg {

struct task_group::state {
  explicit state(const mpg::context& parent) {
    auto [c, cancel_fn] = with_cancel(parent);
    ctx = std::move(c);
    cancel = std::move(cancel_fn);
  }
  // The last reference goes with no wait() having taken the exception:
  // nobody will see it, so it is reported and ends the program, as one
  // escaping a detached task does.
  ~state() {
    if (failure && !failure_taken)
      detail::report_lost_exception(failure, failure_gid, failure_name);
  }

  // record(): the first failure is kept, except that an exception replaces
  // a Status failure recorded before it (an exception is never dropped for
  // an error value). Runs on the failing member's G.
  void record(absl::Status s, std::exception_ptr e) {
    {
      detail::spin_guard lk(lock);
      if (failed && (failure || !e)) return;
      failed = true;
      first = std::move(s);
      if (e) {
        failure = std::move(e);
        detail::g* me = detail::current_g();
        failure_gid = me ? me->id.load(std::memory_order_relaxed) : 0;
        failure_name = me ? me->name.load(std::memory_order_relaxed) : nullptr;
      }
    }
    cancel();
  }

  mpg::context ctx;
  cancel_func cancel;
  wait_group running;
  detail::spinlock lock;
  bool failed ABSL_GUARDED_BY(lock) = false;
  absl::Status first ABSL_GUARDED_BY(lock);
  std::exception_ptr failure ABSL_GUARDED_BY(lock);
  // The task that threw `failure`, for the report, and whether a wait()
  // has rethrown it.
  std::uint64_t failure_gid ABSL_GUARDED_BY(lock) = 0;
  const char* failure_name ABSL_GUARDED_BY(lock) = nullptr;
  bool failure_taken ABSL_GUARDED_BY(lock) = false;
};

task_group::task_group(const mpg::context& parent) : st_(std::make_shared<state>(parent)) {}

task_group::~task_group() = default;

const mpg::context& task_group::context() const noexcept { return st_->ctx; }

task<void> task_group::run_member(std::shared_ptr<state> st, task<absl::Status> t) {
  absl::Status s;
  std::exception_ptr e;
  try {
    // The member's frame (its parameters, with their destructors) goes
    // here, before done(): wait() returns only after it.
    task<absl::Status> member = std::move(t);
    s = co_await std::move(member);
  } catch (...) {
    e = std::current_exception();
  }
  if (e || !s.ok()) {
    if (e) s = absl::UnknownError("task_group: a task ended with an exception");
    st->record(std::move(s), std::move(e));
  }
  st->running.done();
}

void task_group::spawn(task<absl::Status> t, const char* name) {
  // A task that cannot be awaited (empty, moved-from, or awaited already)
  // is refused here, as mpg::spawn refuses it, not by the member's await
  // at wait(): release() gives a null handle for each of them.
  auto h = t.release();
  if (!h) detail::throw_task_awaited_twice();
  t = task<absl::Status>(h);
  st_->running.add(1);
  try {
    mpg::go(run_member(st_, std::move(t)), name);
  } catch (...) {
    st_->running.done();
    throw;
  }
}

// The state is copied here, at the call, into wait_on's parameter: the
// returned (lazy) task never reads the group.
task<absl::Status> task_group::wait() { return wait_on(st_); }

task<absl::Status> task_group::wait_on(std::shared_ptr<state> st) {
  co_await st->running.wait();
  st->cancel();
  absl::Status first;
  std::exception_ptr failure;
  {
    detail::spin_guard lk(st->lock);
    first = st->first;
    failure = st->failure;
    if (failure) st->failure_taken = true;
  }
  if (failure) std::rethrow_exception(failure);
  co_return first;
}

}  // namespace mpg
