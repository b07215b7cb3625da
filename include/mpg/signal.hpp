// mpg/signal.hpp: Unix signals as channel sends (Go's os/signal).
//
//   mpg::chan<int> sigs = mpg::signal::notify({SIGINT, SIGTERM});
//   std::optional<int> sig = co_await sigs.recv();   // SIGINT or SIGTERM
//   mpg::signal::stop(sigs);                          // back to the old disposition
//
// notify() installs a real sigaction handler for each signal, process-wide,
// so a delivery is caught on whichever thread the kernel picks, whatever the
// threads' signal masks and whenever they were created. The handler only
// sets a pending bit (a lock-free atomic) and writes a byte to a self-pipe;
// a relay thread (started by the first notify, all signals blocked in it)
// reads the pipe and try_sends the signal number to every channel that asked
// for it, in the order the channels were registered.
//
// Semantics, as Go's:
//   - A channel may ask for several signals, and a signal may go to several
//     channels. Each delivery is offered to each of them with try_send: a
//     full channel misses it (it is dropped, never queued), so a channel of
//     capacity 1 keeps the first of a burst. Deliveries of one signal that
//     arrive before the relay has taken the previous one are coalesced, as
//     the kernel coalesces standard signals.
//   - stop(ch): ch gets no more signals once stop returns (a delivery in
//     progress finishes first). A signal that no channel wants any more gets
//     back the disposition it had before the first notify for it (normally
//     SIG_DFL), unless the program installed a handler of its own since
//     (that one stays). A delivery while stop() runs reaches either the
//     channels or the restored disposition, never neither.
//   - A channel closed while registered silently misses deliveries.
//   - A signal that is also a runtime's runtime_options::dump_signal does
//     both: the tasks are dumped and the channels get it. Neither undoes
//     the other: the old disposition comes back once neither wants it.
//
// Deadlock check: notify() called inside a task keeps that task's runtime
// from reporting a deadlock (an mpg::external_work guard held until stop()),
// since a signal may arrive at any time. Called from a plain thread, it
// registers no guard; hold an mpg::external_work in the runtime that waits.
//
// Threads: notify() and stop() may be called from any thread, inside a
// runtime or not; they take a short internal lock and never wait for a task.
//
// fork() without exec. The child has only the thread that forked: not the
// relay, not the dumper of runtime_options::dump_signal, not the Ms of the
// parent's runtimes. mpg's pthread_atfork handlers keep a fork from
// copying its signal locks held (a fork waits for a delivery or a dump
// that holds them), and reset the child to a process that never used
// signals:
//   - every signal a channel or a runtime's dump_signal held gets back the
//     disposition it had before mpg's handler replaced it (a handler the
//     program installed since stays), since no channel and no runtime of
//     the child wants it: kept, mpg's handler would drop it (a SIGTERM
//     that the parent's channel wanted would no longer end the child). A
//     signal sent to the child while the handlers run stays pending until
//     the restored disposition takes it.
//   - the parent's channels receive nothing in the child, and stop() in
//     the child has no effect on them; the child shares no pipe with the
//     parent, so its signals never reach the parent's relay or dumper.
//   - notify() and a new runtime's dump_signal work in the child as in a
//     fresh process: the first one claims the signal and starts a relay or
//     a dumper of the child's own.
// As in Go, the parent's runtimes must not be used in the child (their
// threads are gone; their channels, tasks and handles are only memory
// there), but a runtime made in the child works, its deadlock check
// included (the process-wide list of runtimes is emptied too).
#pragma once

#include <cstddef>
#include <initializer_list>

#include "mpg/chan.hpp"

namespace mpg::signal {

// notify(): a new channel of `capacity` (at least 1) that receives each of
// `signals`. Throws std::invalid_argument for a signal that cannot be caught
// (SIGKILL, SIGSTOP, out of range, or refused by sigaction, as 32 and 33
// are by glibc), for a fault signal (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
// SIGTRAP, SIGSYS: the handler returns, and returning from a fault runs the
// faulting instruction again, for ever), or for an empty list; nothing is
// registered then.
chan<int> notify(std::initializer_list<int> signals, std::size_t capacity = 1);

// notify(ch, signals): ch (any capacity; 0 receives only while a receiver
// waits) also receives `signals`, in addition to those it asked for before.
void notify(const chan<int>& ch, std::initializer_list<int> signals);

// stop(): ch receives no more signals. No effect for a channel that was
// never registered.
void stop(const chan<int>& ch);

}  // namespace mpg::signal
