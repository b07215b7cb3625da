// mpg/runtime_stats.hpp: the counters of a runtime (mpg::runtime::stats()),
// a snapshot read without stopping anything: each field is exact on its
// own, fields may disagree by the work done while they were read.
#pragma once

#include <cstdint>
#include <vector>

namespace mpg {

struct runtime_stats {
  unsigned procs = 0;
  std::uint64_t spawned = 0;           // Gs started
  std::uint64_t completed = 0;         // Gs finished
  std::uint64_t live = 0;              // spawned - completed
  std::uint64_t steals = 0;            // successful steal operations
  std::uint64_t stolen_tasks = 0;      // Gs moved by them
  std::uint64_t parks = 0;             // times an M parked with nothing to run
  std::uint64_t wakeups = 0;           // times a sleeping M was woken and handed a P
  // ... of which the M slept in the io_uring ring of the P it held (its own
  // completions wake it there without counting here)
  std::uint64_t ring_wakeups = 0;
  std::uint64_t global_queue_pulls = 0;  // Gs taken from the global queue
  std::uint64_t global_queue_pushes = 0; // Gs put there (overflow, foreign)
  std::uint64_t global_queue_length = 0;
  std::uint64_t threads = 0;           // Ms started so far
  std::uint64_t long_task_reports = 0; // sysmon reports of long-running Gs
  // sysmon reports of runnable Gs that waited for an M at the thread limit
  // (runtime_options::max_threads, thread_starvation_threshold).
  std::uint64_t thread_limit_reports = 0;
  // Times sysmon published a P's spawned tasks for other Ps because the
  // task running there had not been back to them (it computes without
  // spawning, joining or suspending).
  std::uint64_t forced_publications = 0;
  // I/O faults injected (runtime_options::io_faults, MPG_FAULTS), in all
  // and by kind.
  std::uint64_t io_faults_injected = 0;
  std::uint64_t io_faults_eintr = 0;
  std::uint64_t io_faults_eagain = 0;
  std::uint64_t io_faults_short = 0;
  std::uint64_t io_faults_reset = 0;
  std::uint64_t io_faults_overflow = 0;
  std::uint64_t io_faults_no_multishot = 0;  // multishot recvs refused
  std::uint64_t io_faults_no_sqe = 0;        // multishot arms refused an SQE
  std::uint64_t io_faults_no_pause = 0;      // backpressure cancels refused an SQE
  std::uint64_t io_faults_miss_pause = 0;    // backpressure cancels that missed their op
  std::uint64_t io_faults_no_cancel = 0;     // cancels refused an SQE (then owed)
  std::vector<std::uint32_t> local_queue_lengths;  // per P, snapshot
  std::vector<std::uint64_t> tasks_run;            // per P, Gs executed
};

}  // namespace mpg
