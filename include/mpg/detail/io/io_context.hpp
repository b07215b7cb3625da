// mpg/detail/io/io_context.hpp: binding an io_uring operation to a context,
// so that the context's cancellation (or deadline) ends the operation in
// flight: the mechanism behind every I/O overload that takes an
// mpg::context (net, io::submit; UDP and any later I/O call it the same way).
//
// How an operation uses it (one logical operation, possibly several issues,
// as a read loop that retries -EINTR):
//
//   detail::io_context_binding bind(node);             // null: not bound
//   detail::io_slot* slot = bind.bind(&my_slot);       // or nullptr: its own
//   for (;;) {
//     detail::io_awaiter op(prep, &rq, slot, "why");
//     bind.attach(op.op);                               // op.op.ctx
//     int res = bind.result(co_await op, op.op);        // -ETIME for a deadline
//     ...
//   }
//   // ~io_context_binding (or unbind()) before the slot or frame goes
//
// Design. The binding is a context_watcher (mpg/context.hpp, W1-W3) that
// lives in the awaiting frame. bind() links it into the context's node;
// when the context is cancelled the watcher's function stops the op in
// flight in the slot, if it is bound to that context
// (io_stop_in_flight with io_stop::context; the reactor checks the binding
// under its lock). The request is sticky without any flag of ours: the
// context stays cancelled, and io_start() refuses a bound op whose context
// is cancelled, under the slot lock that the watcher's function also takes
// (io_op.hpp, "Why an op was stopped"), so a cancel that lands between two
// issues of a loop, or before the first, is not lost. unbind() is
// context_node::unwatch(): it returns only once the watcher's function is
// not running and never will; with the binding's own slot it also takes
// that slot's lock once, which io_start() may still hold for an op that has
// completed already; then the frame (and the slot in it) may go.
//
// An operation without a slot of its own (dial, io::submit) uses the
// binding's: a cancel needs a slot to find the op and its reactor.
//
// The root context (background()) never ends: binding to it, or to nothing,
// links nothing and costs nothing; the op runs as an unbound one.
//
// The binding holds a plain pointer to the node: its user keeps the node
// alive while bound (a coroutine holds the context handle in its frame;
// io::submit's awaiter lives within the full-expression that holds the
// context argument). So a binding has no destructor work beyond unbind(),
// which is idempotent.
//
// Memory ordering: everything the watcher's function reads (slot_, node_)
// is written before watch(), which publishes it under the node's lock; the
// cancel that calls the function takes that lock first.
#pragma once

#include <absl/status/status.h>

#include "mpg/context.hpp"
#include "mpg/detail/io/io_op.hpp"

namespace mpg::detail {

class io_context_binding : private context_watcher {
 public:
  // A binding to `node` (null, or the root: none), which must outlive it.
  explicit io_context_binding(context_node* node) noexcept : node_(node) { fn = &on_cancel; }
  ~io_context_binding() { unbind(); }
  io_context_binding(const io_context_binding&) = delete;
  io_context_binding& operator=(const io_context_binding&) = delete;

  // bind(): start watching the context for an op in `slot` (nullptr: the
  // binding's own slot). Returns the slot the op must use: `slot`, or the
  // binding's own, or nullptr when not bound and `slot` was nullptr.
  // Called once, before the first op starts.
  io_slot* bind(io_slot* slot) noexcept;
  // unbind(): stop watching (W3: waits for a running watcher function).
  void unbind() noexcept;

  // attach(): bind one issue of the op (before it starts).
  void attach(io_op& op) const noexcept {
    if (watching_) op.ctx = node_;
  }
  // bound(): the context can end the operation.
  bool bound() const noexcept { return watching_; }
  // cancelled(): the context has ended.
  bool cancelled() const noexcept { return node_ != nullptr && node_->cancelled(); }
  // result(): the op's outcome as the operation reports it: an op stopped by
  // the context reads -ETIME if the context missed its deadline, else
  // -ECANCELED. Call after the op completed.
  int result(int res, const io_op& op) const;
  // err(): the context's err() (OK if none or live).
  absl::Status err() const { return node_ != nullptr ? node_->err() : absl::OkStatus(); }

 private:
  static void on_cancel(context_watcher* w) noexcept;

  context_node* const node_;
  io_slot* slot_ = nullptr;
  io_slot own_slot_;
  bool watching_ = false;
};

}  // namespace mpg::detail
