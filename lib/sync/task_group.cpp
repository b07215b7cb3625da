// lib/sync/task_group.cpp: mpg::task_group (design in task_group.hpp).
#include "mpg/task_group.hpp"

#include "mpg/detail/sync/spinlock.hpp"
#include "mpg/spawn.hpp"

namespace mpg {

struct task_group::state {
  explicit state(const mpg::context& parent) {
    auto [c, cancel_fn] = with_cancel(parent);
    ctx = std::move(c);
    cancel = std::move(cancel_fn);
  }

  void record(absl::Status s, std::exception_ptr e) {
    {
      detail::spin_guard lk(lock);
      if (failed) return;
      failed = true;
      first = std::move(s);
      failure = std::move(e);
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
};

task_group::task_group(const mpg::context& parent) : st_(std::make_shared<state>(parent)) {}

task_group::~task_group() = default;

const mpg::context& task_group::context() const noexcept { return st_->ctx; }

task<void> task_group::run_member(std::shared_ptr<state> st, task<absl::Status> t) {
  absl::Status s;
  std::exception_ptr e;
  try {
    s = co_await std::move(t);
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
  st_->running.add(1);
  try {
    mpg::go(run_member(st_, std::move(t)), name);
  } catch (...) {
    st_->running.done();
    throw;
  }
}

task<absl::Status> task_group::wait() {
  std::shared_ptr<state> st = st_;
  co_await st->running.wait();
  st->cancel();
  absl::Status first;
  std::exception_ptr failure;
  {
    detail::spin_guard lk(st->lock);
    first = st->first;
    failure = st->failure;
  }
  if (failure) std::rethrow_exception(failure);
  co_return first;
}

}  // namespace mpg
