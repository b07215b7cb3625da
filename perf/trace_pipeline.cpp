// perf/trace_pipeline.cpp: a small pipeline to look at with the execution
// trace (runtime_options.trace_file) and perf/trace_plot.py; it draws
// docs/trace_pipeline.png:
//   build/perf/trace_pipeline run.json && python3 perf/trace_plot.py run.json out.png
//
// Three stages on two Ps: a producer sends numbers on a channel, three
// workers each square a number (a little CPU work) and pass it on, one
// summer adds them up.
#include <cstdio>
#include <string>

#include "mpg/mpg.hpp"

namespace {

mpg::task<void> producer(mpg::chan<int> out, int n) {
  for (int i = 1; i <= n; ++i) co_await out.send(i);
  out.close();
}

// A few microseconds of work per item, so the spans are visible.
long long work(int x) {
  volatile long long acc = 0;
  for (int k = 0; k < 20000; ++k) acc = acc + static_cast<long long>(x) * x % (k + 7);
  return static_cast<long long>(x) * x + (acc & 0);
}

mpg::task<void> worker(mpg::chan<int> in, mpg::chan<long long> out, mpg::wait_group* wg) {
  while (auto v = co_await in.recv()) co_await out.send(work(*v));
  wg->done();
}

mpg::task<long long> summer(mpg::chan<long long> in) {
  long long sum = 0;
  while (auto v = co_await in.recv()) sum += *v;
  co_return sum;
}

mpg::task<void> closer(mpg::wait_group* wg, mpg::chan<long long> c) {
  co_await wg->wait();
  c.close();
}

mpg::task<long long> pipeline(int n) {
  mpg::chan<int> numbers(16);
  mpg::chan<long long> squares(16);
  mpg::wait_group wg;
  mpg::go(producer(numbers, n), "producer");
  wg.add(3);
  mpg::go(worker(numbers, squares, &wg), "worker 1");
  mpg::go(worker(numbers, squares, &wg), "worker 2");
  mpg::go(worker(numbers, squares, &wg), "worker 3");
  mpg::go(closer(&wg, squares), "closer");
  co_return co_await mpg::spawn(summer(squares), "summer");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "trace_pipeline.json";
  const int n = argc > 2 ? std::stoi(argv[2]) : 100;
  long long sum = 0;
  {
    mpg::runtime rt({.procs = 2, .trace_file = path});
    sum = rt.block_on(pipeline(n));
  }
  std::printf("sum of squares 1..%d = %lld; trace in %s\n", n, sum, path.c_str());
  return 0;
}
