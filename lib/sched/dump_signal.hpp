// lib/sched/dump_signal.hpp: runtime_options.dump_signal, the task dump on a
// signal (dump_signal.cpp has the protocol).
#pragma once

namespace mpg::detail {

class scheduler;

// dump_signal_register(): from now on, signal `sig` dumps s's tasks to
// stderr. Throws std::invalid_argument if sig cannot be caught.
void dump_signal_register(int sig, scheduler* s);
// dump_signal_unregister(): undo one registration; once no runtime uses sig
// any more, its previous disposition is restored. On return no dump of s
// is in progress or will start.
void dump_signal_unregister(int sig, scheduler* s) noexcept;

}  // namespace mpg::detail
