// lib/sched/dump_signal.hpp: runtime_options.dump_signal, the task dump on a
// signal (dump_signal.cpp has the protocol).
#pragma once

#include <atomic>

namespace mpg::detail {

class scheduler;

// dump_signal_register(): from now on, signal `sig` dumps s's tasks to
// stderr. Throws std::invalid_argument if sig cannot be caught.
void dump_signal_register(int sig, scheduler* s);
// dump_signal_unregister(): undo one registration; once no runtime uses sig
// any more, its previous disposition is restored. On return no dump reads s
// or will start to; a dump's text already built may still be being written
// (the unregistration never waits for stderr). The last unregistration of
// all tells the dumper thread to exit once its current write is done.
void dump_signal_unregister(int sig, scheduler* s) noexcept;

// Test hook, null outside tests: called by the dumper thread after it built
// a dump's text and released the registry lock, before it writes the text
// to stderr. Relaxed: a test sets it before the moment it stages and clears
// it after; no data is published through it.
inline std::atomic<void (*)()> g_dump_write_hook{nullptr};

}  // namespace mpg::detail
