// lib/sched/task_errors.cpp: what a task's misuse throws and what a lost
// exception reports. Kept out of line, so that the task code that calls
// them (task.hpp, spawn.hpp) carries only a call on its cold path.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "mpg/errors.hpp"
#include "mpg/spawn.hpp"
#include "mpg/task.hpp"

namespace mpg::detail {

void report_lost_exception(std::exception_ptr e, std::uint64_t gid, const char* name) noexcept {
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    what = ex.what();
  } catch (...) {
  }
  std::fprintf(stderr, "mpg: exception escaped detached task %llu%s%s%s: %s\n",
               static_cast<unsigned long long>(gid), name ? " (" : "", name ? name : "",
               name ? ")" : "", what.c_str());
  std::fflush(stderr);
  std::abort();
}

void rethrow_task_exception(const std::exception_ptr& e) { std::rethrow_exception(e); }

void throw_task_awaited_twice() {
  throw runtime_misuse_error("mpg: a task or join_handle was awaited twice (or is empty)");
}
void throw_join_twice() { throw_task_awaited_twice(); }
void throw_task_killed() {
  throw runtime_misuse_error("mpg: the task was destroyed by its runtime's shutdown");
}

}  // namespace mpg::detail
