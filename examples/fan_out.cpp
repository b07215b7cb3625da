// examples/fan_out.cpp: fan-out/fan-in with a task_group (Go's errgroup).
//
// Shows: one task per input, spawned into a task_group whose context the
// first failure cancels; siblings that are still waiting see the
// cancellation and stop early; wait() returns the first error. The fan-in
// collects results into a slot per input, so no lock is needed.
//
// Run: ./build/examples/fan_out [inputs] [fail_at]   (inputs 0 to 1000000, fail_at -1 to
// 1000000: another value exits with status 2)
//   (default 20 inputs, no failure; fail_at = k makes input k fail)
// It prints the sum of the results, or the first error and how many tasks
// were cut short by the cancellation.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "mpg/mpg.hpp"
#include "server_args.hpp"

namespace {

// fetch(): stands in for a slow call (e.g. a request to a backend). It takes
// 20 to 24 ms, or ends early with kCancelled when ctx is cancelled; input
// fail_at fails at once.
mpg::task<absl::Status> fetch(mpg::context ctx, int i, int fail_at, long* out,
                              std::atomic<int>* cut) {
  if (i == fail_at)
    co_return absl::UnavailableError("input " + std::to_string(i) + ": backend unavailable");
  auto r = co_await mpg::select(mpg::after(std::chrono::milliseconds(20 + i % 5)).recv(),
                                ctx.done().recv());
  if (r.index() == 1) {
    cut->fetch_add(1, std::memory_order_relaxed);
    co_return ctx.err();
  }
  *out = long{i} * i;
  co_return absl::OkStatus();
}

mpg::task<int> run(int n, int fail_at) {
  mpg::task_group g;
  std::vector<long> results(static_cast<std::size_t>(n), 0);
  std::atomic<int> cut{0};
  for (int i = 0; i < n; ++i)
    g.spawn(fetch(g.context(), i, fail_at, &results[static_cast<std::size_t>(i)], &cut));
  absl::Status s = co_await g.wait();
  if (!s.ok()) {
    std::printf("failed: %s (%d tasks cut short)\n", s.ToString().c_str(), cut.load());
    co_return fail_at >= 0 && fail_at < n ? 0 : 1;
  }
  long sum = 0;
  for (long v : results) sum += v;
  std::printf("sum of squares below %d: %ld\n", n, sum);
  co_return fail_at >= 0 && fail_at < n ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  long long n_arg = 20, fail_at_arg = -1;
  if ((argc > 1 && !example::int_arg(argv[0], "inputs", argv[1], 0, 1000000, &n_arg)) ||
      (argc > 2 && !example::int_arg(argv[0], "fail_at", argv[2], -1, 1000000, &fail_at_arg))) {
    std::fprintf(stderr, "usage: %s [inputs >= 0] [fail_at]\n", argv[0]);
    return 2;
  }
  const int n = static_cast<int>(n_arg);
  const int fail_at = static_cast<int>(fail_at_arg);
  mpg::runtime rt;
  return rt.block_on(run(n, fail_at));
}
