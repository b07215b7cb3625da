// examples/pipeline.cpp: a three-stage pipeline that a context shuts down
// (Go's "pipelines and cancellation" pattern).
//
// Shows: stages connected by channels, each stage closing its output when
// it returns, and a context whose cancellation stops every stage even while
// it is blocked in a send: each send is a select between the send and
// ctx.done(). The consumer takes what it needs and cancels; the stages
// notice, return and close their channels, and nothing leaks.
//
// Run: ./build/examples/pipeline [take]   (default 10; 0 to 1000000: another value exits
// with status 2)
// It prints the first `take` squares of the primes and how many numbers
// the generator produced before it was stopped.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "mpg/mpg.hpp"
#include "server_args.hpp"

namespace {

// send_or_done(): sends v unless ctx ends first; false when it ended.
mpg::task<bool> send_or_done(mpg::context ctx, mpg::chan<long> out, long v) {
  auto r = co_await mpg::select(out.send(v), ctx.done().recv());
  co_return r.index() == 0;
}

mpg::task<> generate(mpg::context ctx, mpg::chan<long> out, std::atomic<long>* produced) {
  for (long n = 2;; ++n) {
    if (!co_await send_or_done(ctx, out, n)) break;
    produced->fetch_add(1, std::memory_order_relaxed);
  }
  out.close();
}

bool is_prime(long n) {
  for (long d = 2; d * d <= n; ++d)
    if (n % d == 0) return false;
  return n >= 2;
}

mpg::task<> keep_primes(mpg::context ctx, mpg::chan<long> in, mpg::chan<long> out) {
  while (std::optional<long> n = co_await in.recv()) {
    if (!is_prime(*n)) continue;
    if (!co_await send_or_done(ctx, out, *n)) break;
  }
  out.close();
}

mpg::task<> square(mpg::context ctx, mpg::chan<long> in, mpg::chan<long> out) {
  while (std::optional<long> n = co_await in.recv()) {
    if (!co_await send_or_done(ctx, out, *n * *n)) break;
  }
  out.close();
}

mpg::task<int> run(int take) {
  auto [ctx, cancel] = mpg::with_cancel(mpg::background());
  mpg::chan<long> numbers, primes, squares;  // unbuffered: each stage waits for the next
  std::atomic<long> produced{0};
  mpg::task_group stages;
  stages.spawn([](mpg::context c, mpg::chan<long> o,
                  std::atomic<long>* p) -> mpg::task<absl::Status> {
    co_await generate(c, o, p);
    co_return absl::OkStatus();
  }(ctx, numbers, &produced));
  stages.spawn([](mpg::context c, mpg::chan<long> i, mpg::chan<long> o) -> mpg::task<absl::Status> {
    co_await keep_primes(c, i, o);
    co_return absl::OkStatus();
  }(ctx, numbers, primes));
  stages.spawn([](mpg::context c, mpg::chan<long> i, mpg::chan<long> o) -> mpg::task<absl::Status> {
    co_await square(c, i, o);
    co_return absl::OkStatus();
  }(ctx, primes, squares));

  int got = 0;
  while (got < take) {
    std::optional<long> v = co_await squares.recv();
    if (!v) break;
    std::printf("%ld\n", *v);
    ++got;
  }
  cancel();  // every stage returns, blocked or not
  // Drain what a stage may have handed over before it saw the cancellation.
  while (co_await squares.recv()) {
  }
  absl::Status s = co_await stages.wait();
  std::printf("stopped after generating %ld numbers (%s)\n", produced.load(),
              s.ok() ? "clean" : "error");
  co_return got;
}

}  // namespace

int main(int argc, char** argv) {
  long long take_arg = 10;
  if (argc > 1 && !example::int_arg(argv[0], "take", argv[1], 0, 1000000, &take_arg)) {
    std::fprintf(stderr, "usage: %s [take >= 0]\n", argv[0]);
    return 2;
  }
  const int take = static_cast<int>(take_arg);
  mpg::runtime rt;
  const int got = rt.block_on(run(take));
  return got == take ? 0 : 1;
}
