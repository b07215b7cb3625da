// mpg/mpg.hpp: everything of mpg in one include.
//
// mpg is Go's goroutine model for C++20: tasks (task<T>, spawn, go) run on an
// M-P-G work-stealing scheduler (runtime), talk over channels (chan, select),
// wait on coroutine-aware sync primitives and timers, and do I/O through
// per-P io_uring rings. The guides to the API are docs/api.md, docs/io.md and docs/diagnostics.md.
#pragma once

// Core runtime: tasks, spawning, the runtime object, errors.
#include "mpg/errors.hpp"
#include "mpg/runtime.hpp"
#include "mpg/spawn.hpp"
#include "mpg/task.hpp"

// Channels, select, time, sync, context, task groups.
#include "mpg/chan.hpp"
#include "mpg/context.hpp"
#include "mpg/mutex.hpp"
#include "mpg/once.hpp"
#include "mpg/rwmutex.hpp"
#include "mpg/oneshot.hpp"
#include "mpg/select.hpp"
#include "mpg/semaphore.hpp"
#include "mpg/task_group.hpp"
#include "mpg/time.hpp"
#include "mpg/timeout.hpp"
#include "mpg/wait_group.hpp"

// io_uring I/O and blocking calls.
#include "mpg/blocking.hpp"
#include "mpg/buffered.hpp"
#include "mpg/fs.hpp"
#include "mpg/io.hpp"
#include "mpg/io_error.hpp"
#include "mpg/net.hpp"
#include "mpg/signal.hpp"
