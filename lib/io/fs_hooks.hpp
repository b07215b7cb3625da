// lib/io/fs_hooks.hpp: test hooks at the moments of lib/io/fs.cpp's "Close
// and submission" protocol, null outside tests (as g_close_hook in
// fd_close.hpp). Relaxed: a test sets them before the moment it stages and
// clears them after; no data is published through them.
#pragma once

#include <atomic>

namespace mpg::fs {
class file;
}

namespace mpg::detail {

// Called by an operation's submission once it has counted itself and
// loaded the file's number, before it submits (S1).
inline std::atomic<void (*)(fs::file*)> g_file_submit_hook{nullptr};
// Called by an operation's submission that counted itself and found the
// file closing, closed, or assigned another file since the operation began,
// before it takes its count back (S1).
inline std::atomic<void (*)(fs::file*)> g_file_refused_hook{nullptr};
// Called by close() when it has to wait: for submissions in progress (C1),
// or for another close() to finish closing (C2).
inline std::atomic<void (*)()> g_file_close_wait_hook{nullptr};

}  // namespace mpg::detail
