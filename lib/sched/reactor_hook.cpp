// lib/sched/reactor_hook.cpp: binds the scheduler's reactor calls (reactor_hook.hpp)
// to lib/io/reactor.hpp, and tells awaiters which ring is the current P's.
#include "sched/reactor_hook.hpp"

#include <stdexcept>
#include <string>

#include "io/reactor.hpp"
#include "sched/scheduler.hpp"

namespace mpg::detail {

void reactor_deleter::operator()(reactor* r) const noexcept { delete r; }

std::unique_ptr<reactor, reactor_deleter> make_reactor(const runtime_options& opts) {
  absl::StatusOr<std::unique_ptr<reactor>> r = reactor::create(opts.ring_entries);
  if (!r.ok()) {
    throw std::runtime_error("mpg: cannot start the runtime: io_uring is unavailable: " +
                             std::string(r.status().message()));
  }
  return std::unique_ptr<reactor, reactor_deleter>(r->release());
}

bool reactor_busy(reactor* r) noexcept { return r != nullptr && r->busy(); }

void reactor_poll(reactor* r, bool flush) noexcept {
  if (r == nullptr) return;
  if (flush && r->has_unsubmitted()) r->flush();
  r->reap();
}

void reactor_try_poll(reactor* r) noexcept {
  if (r == nullptr) return;
  // Submissions are batched by the owner (find_runnable.cpp), so a P stuck
  // in a long task may also hold unsubmitted SQEs: send them too.
  if (r->has_unsubmitted()) r->flush();
  r->try_reap();
}

void reactor_wait(reactor* r, std::optional<std::chrono::steady_clock::time_point> deadline) noexcept {
  if (r != nullptr) r->wait(deadline);
}

void wake_reactor(reactor* r) noexcept {
  if (r != nullptr) r->wake();
}

void reactor_shutdown(reactor* r) noexcept {
  if (r != nullptr) r->cancel_all();
}

reactor* current_reactor() noexcept {
  machine* m = current_m();
  if (m == nullptr || m->p == nullptr || current_g() == nullptr) return nullptr;
  return m->p->io.get();
}

}  // namespace mpg::detail
