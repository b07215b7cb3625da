// lib/io/io_context.cpp: an io_uring operation bound to a context (design in
// mpg/detail/io/io_context.hpp).
#include "mpg/detail/io/io_context.hpp"

#include <cerrno>

namespace mpg::detail {

io_slot* io_context_binding::bind(io_slot* slot) noexcept {
  slot_ = slot != nullptr ? slot : &own_slot_;
  // Never-ending contexts link nothing: the op runs unbound.
  if (node_ == nullptr || node_->never_cancelled()) return slot;
  // W1. A context cancelled already is not linked (false), but the op is
  // still bound: io_start() refuses it, reading the same cancelled_.
  watching_ = true;
  node_->watch(this);
  return slot_;
}

void io_context_binding::unbind() noexcept {
  if (!watching_) return;
  node_->unwatch(this);  // W3: the watcher function is done and never runs again
  watching_ = false;
  // The binding's own slot is in the awaiting frame, which may go once we
  // return. io_start() releases the slot's lock after it has published the
  // op, and by then the op may have completed and this task resumed on
  // another M: taking the lock once waits for that release, and orders it
  // before whatever reuses the frame.
  if (slot_ == &own_slot_) {
    own_slot_.lock.lock();
    own_slot_.lock.unlock();
  }
}

void io_context_binding::on_cancel(context_watcher* w) noexcept {
  auto* self = static_cast<io_context_binding*>(w);
  // Runs on the cancelling thread, holding no lock; takes the slot lock,
  // then the owning reactor's (the I/O lock order).
  io_stop_in_flight(self->slot_, {.why = io_stop::context, .ctx = self->node_});
}

int io_context_binding::result(int res, const io_op& op) const {
  if (res != -ECANCELED || op.stop != io_stop::context) return res;
  return node_->err().code() == absl::StatusCode::kDeadlineExceeded ? -ETIME : -ECANCELED;
}

}  // namespace mpg::detail
