// mpg/detail/sched/frame.hpp: coroutine frame allocation and the join state that
// lives in front of every frame.
//
// Every task frame is allocated through allocate_frame(): a per-thread
// recycling allocator (size classes of 16 bytes up to 2 KiB, bounded free
// lists per class, refilled a slab of frames at a time; bigger frames go to
// malloc). A frame freed on another
// thread simply joins that thread's lists: frames flow with the work.
//
// Each allocation starts with a 16-byte frame_header, so the coroutine frame
// itself starts 16 bytes in. The header holds the join state of a spawned
// task, kept outside the promise so that it survives the frame's destruction
// by a runtime shutdown while a join_handle still refers to it:
//
//   join == kJoinRunning  the task has not finished; a handle is attached
//   join == kJoinDone     finished; the result waits in the promise
//   join == kJoinDetached the handle was dropped; the task frees its frame
//                         when it finishes
//   join == kJoinKilled   the runtime destroyed the unfinished frame at
//                         shutdown; the memory stays until the handle drops
//   join == kJoinInline   claimed by the joiner, running inline (spawn.hpp)
//   any other value       a g* that waits for the result (the joiner), or,
//                         tagged with bit 0, the waiter of a select that has
//                         the join as a case (spawn.hpp, J1-J4)
//
// Transitions (all exchange/CAS with acq_rel: the finishing task's result
// writes must be visible to whoever reads or destroys it, and the joiner's
// park must be visible to the finisher that readies it; but the finish of
// a detached task, which loads the word with acquire: nobody else moves
// it from Detached):
//   finish:   Running -> Done;    Detached -> (free);  joiner -> Done + ready;
//             select waiter -> Done + claim the select (ready if won)
//   await:    Running -> joiner (CAS; fails when Done: no suspension)
//   select:   Running -> select waiter (CAS); select waiter -> Running (CAS,
//             the select's clean-up)
//   drop:     Running -> Detached; Done -> (destroy);   Killed -> (free memory)
//   shutdown: the frame is destroyed first, with the word as it is (a handle
//             dropped meanwhile makes it Detached, a join parks in it, a
//             select queues or withdraws its waiter; none of them frees or
//             reads what the destroy ends, though a join writes its site in
//             the promise); then, at the frame's free (free_frame, told by
//             the header's kill mark), Running/joiner/select waiter ->
//             Killed (CAS; keep the memory; the shutdown then readies a
//             joiner of another runtime, or claims its select, as a finish
//             does), or Detached (an acquire load) -> (free). So no handle
//             sees Killed before the destroy is over (settle_killed_frame,
//             frame allocator).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mpg::detail {

inline constexpr std::uintptr_t kJoinRunning = 0;
inline constexpr std::uintptr_t kJoinDone = 1;
inline constexpr std::uintptr_t kJoinDetached = 2;
inline constexpr std::uintptr_t kJoinKilled = 3;
// The joiner took the task out of its P's runnext slot before any M started
// it and runs it inline as an awaited child; the frame is the handle's.
inline constexpr std::uintptr_t kJoinInline = 4;

struct alignas(16) frame_header {
  std::atomic<std::uintptr_t> join{kJoinRunning};
  // The requested frame size (without the header), written when the frame
  // is handed out, before anything can see it; with kKillMark set by a
  // shutdown about to destroy the frame as a killed task's root, which
  // free_frame() reads as "settle the join word" (above).
  std::uint32_t size = 0;
  static constexpr std::uint32_t kKillMark = 0x8000'0000u;
  // Where the memory came from (lib/sched/frame_allocator.cpp, "Slabs"): the
  // distance in bytes from the start of the slab this frame was carved from
  // to this header, or 0 for a frame that is an allocation of its own.
  std::uint16_t slab_offset = 0;
  // While the frame is a spawned task's root: the position in its P's
  // spawn deque that the task was pushed to, modulo 2^16 (lib/sched/
  // scheduler.cpp, spawn_local), a hint that a join checks before it uses
  // it (join_take_buried: the entry may have moved or gone). Garbage
  // otherwise, which the check rejects. Written before the push publishes
  // the task, read by a joiner that got the handle from the spawning task.
  std::uint16_t spawn_slot = 0;
};
static_assert(sizeof(frame_header) == 16);

// allocate_frame(): storage for a coroutine frame of `size` bytes, preceded by
// a fresh frame_header. Throws std::bad_alloc like operator new.
//
// Defined in a source file with no coroutines, as free_frame() is: their
// fast paths read the calling thread's free lists, a thread_local, and a
// thread_local read inlined into a coroutine body before the compiler
// splits it into its resume and destroy parts may have its address
// computed once and kept across a suspension, after which the task can
// resume on another thread (clang 16; ThreadSanitizer showed two threads on
// one list when these fast paths were inline in this header).
// Link-time optimisation inlines them only into coroutines already split,
// whose parts each compute the address afresh.
void* allocate_frame(std::size_t size);
// free_frame(): releases storage from allocate_frame(). A frame with the
// kill mark (a killed task's root, at the end of its destroy) settles its
// join word instead (settle_killed_frame): the memory is kept for the
// join_handle, which frees it with release_frame_memory(), unless the
// handle is gone already.
void free_frame(void* frame, std::size_t size) noexcept;
// release_frame_memory(): frees a killed frame's memory for good.
void release_frame_memory(frame_header* h) noexcept;
// mark_killed_root(): the shutdown's step before it destroys the root
// frame of a task it kills (see the transitions above).
inline void mark_killed_root(frame_header* h) noexcept { h->size |= frame_header::kKillMark; }
// take_killed_word(): the join word that the last killed root's free on
// this thread replaced with kJoinKilled (a parked joiner or a select
// waiter, which the shutdown then settles: wake_killed_joiner), or
// kJoinRunning, or kJoinDetached when the handle was gone and the memory
// freed. Reset to kJoinRunning by the call.
std::uintptr_t take_killed_word() noexcept;

inline frame_header* header_of(void* frame) noexcept {
  return reinterpret_cast<frame_header*>(static_cast<char*>(frame) - sizeof(frame_header));
}

// Allocator statistics for the current thread (tests and perf): misses
// are allocations the thread's lists and the depot could not serve (a new
// slab, or malloc with the cache off). Hits are not counted: a counter on
// the fast path costs every frame an instruction.
struct frame_cache_stats {
  std::uint64_t misses = 0;
};
frame_cache_stats thread_frame_cache_stats() noexcept;

// The frame allocator can be switched to plain malloc/free to measure it
// (perf/); the setting applies process-wide and must be set before any task.
// It is off by default under AddressSanitizer, so that ASan sees frames freed.
void set_frame_cache_enabled(bool enabled) noexcept;
bool frame_cache_enabled() noexcept;

}  // namespace mpg::detail
