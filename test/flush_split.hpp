// test/flush_split.hpp: splitting one flush's op from its link timeout, as a
// kernel short of memory does (reactor.cpp, "An op split from its link
// timeout"), through reactor.hpp's g_flush_split_hook.
//
//   mpg_test::split_hook_scope hook;   // the hook is set for the scope
//   mpg_test::split_next.store(true);  // the next flush with a link splits
//   ...
//   CHECK_FALSE(mpg_test::split_next.load());  // it did
#pragma once

#include <atomic>

#include "io/reactor.hpp"

namespace mpg_test {

// Set: the next flush whose SQEs include a linked one is split there.
// Seq_cst (the default): set by the test thread or a task, read and
// cleared by whichever M flushes; a test-only flag, nothing to tune.
inline std::atomic<bool> split_next{false};
inline bool split_once() { return split_next.exchange(false); }

// split_hook_scope: g_flush_split_hook set to split_once for a scope, and
// reset by the destructor even when a REQUIRE leaves the scope early.
class split_hook_scope {
 public:
  split_hook_scope() noexcept { mpg::detail::g_flush_split_hook.store(&split_once); }
  ~split_hook_scope() { mpg::detail::g_flush_split_hook.store(nullptr); }
  split_hook_scope(const split_hook_scope&) = delete;
  split_hook_scope& operator=(const split_hook_scope&) = delete;
};

}  // namespace mpg_test
