// lib/io/signal_relay.hpp: what the rest of the library asks of mpg::signal's
// relay thread (lib/io/signal.cpp): that ~runtime can wait for a delivery in
// progress.
#pragma once

#include <atomic>

namespace mpg::detail {

// wait_for_signal_deliveries(): returns once the relay is in no delivery
// that began before the call. ~runtime calls it after its tasks are
// destroyed (lib/runtime.cpp): a delivery that took one of them off a
// channel has then readied it, and no later delivery can find one (their
// awaiters left the channels when their frames were destroyed), so no
// delivery touches the scheduler after ~runtime deletes it.
void wait_for_signal_deliveries() noexcept;

// Test hooks, null outside tests. g_signal_deliver_hook: called by the
// relay at the start of each delivery, holding the registry lock.
// g_signal_wait_hook: called by wait_for_signal_deliveries() before it
// takes that lock. g_signal_fork_hook: called on the forking thread when a
// fork() prepares (signal_handler.cpp, F1), before it takes that lock.
// Relaxed: a test sets them before the moment it stages and clears them
// after; no data is published through them.
inline std::atomic<void (*)()> g_signal_deliver_hook{nullptr};
inline std::atomic<void (*)()> g_signal_wait_hook{nullptr};
inline std::atomic<void (*)()> g_signal_fork_hook{nullptr};

}  // namespace mpg::detail
