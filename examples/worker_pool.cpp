// examples/worker_pool.cpp: a fixed pool of workers fed by a jobs channel,
// reporting on a results channel (Go's worker-pool pattern).
//
// Shows: spawning a fixed number of tasks, a buffered jobs channel that the
// producer closes when it is done (workers see nullopt and return), a
// results channel that the collector drains, and a wait_group that closes
// the results channel once every worker has returned.
//
// Run: ./build/examples/worker_pool [jobs] [workers]   (default 1000 jobs, 8 workers;
// jobs 0 to 100000000, workers 1 to 100000: another value exits with status 2)
// It prints the number of jobs done and the sum of their results.
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <utility>

#include "mpg/mpg.hpp"
#include "server_args.hpp"

namespace {

struct job {
  int id;
  long input;
};
struct result {
  int id;
  long output;
};

// The work: the number of steps of the Collatz sequence from `n`.
long collatz_steps(long n) {
  long steps = 0;
  while (n != 1) {
    n = (n % 2 == 0) ? n / 2 : 3 * n + 1;
    ++steps;
  }
  return steps;
}

mpg::task<> worker(mpg::chan<job> jobs, mpg::chan<result> results, mpg::wait_group* wg) {
  while (std::optional<job> j = co_await jobs.recv()) {
    result r{j->id, collatz_steps(j->input)};
    co_await results.send(r);
  }
  wg->done();
}

mpg::task<> produce(mpg::chan<job> jobs, int n) {
  for (int i = 0; i < n; ++i) {
    job j{i, i + 1L};
    co_await jobs.send(j);
  }
  jobs.close();  // the workers drain what is queued, then see nullopt
}

mpg::task<> close_when_done(mpg::wait_group* wg, mpg::chan<result> results) {
  co_await wg->wait();
  results.close();
}

mpg::task<std::pair<int, long>> run(int njobs, int nworkers) {
  mpg::chan<job> jobs(64);
  mpg::chan<result> results(64);
  mpg::wait_group wg;
  wg.add(nworkers);
  for (int w = 0; w < nworkers; ++w) mpg::go(worker(jobs, results, &wg));
  mpg::go(produce(jobs, njobs));
  mpg::go(close_when_done(&wg, results));
  int done = 0;
  long sum = 0;
  while (std::optional<result> r = co_await results.recv()) {
    ++done;
    sum += r->output;
  }
  co_return std::pair<int, long>{done, sum};
}

}  // namespace

int main(int argc, char** argv) {
  long long jobs_arg = 1000, workers_arg = 8;
  if ((argc > 1 && !example::int_arg(argv[0], "jobs", argv[1], 0, 100000000, &jobs_arg)) ||
      (argc > 2 && !example::int_arg(argv[0], "workers", argv[2], 1, 100000, &workers_arg))) {
    std::fprintf(stderr, "usage: %s [jobs >= 0] [workers > 0]\n", argv[0]);
    return 2;
  }
  const int njobs = static_cast<int>(jobs_arg);
  const int nworkers = static_cast<int>(workers_arg);
  mpg::runtime rt;
  auto [done, sum] = rt.block_on(run(njobs, nworkers));
  std::printf("%d jobs done, total steps %ld\n", done, sum);
  return done == njobs ? 0 : 1;
}
