// test/stack_guard_tests.cpp: the transfer guard of g++'s code
// (mpg/detail/sched/stack_guard.hpp) unwinds a chain of transfers to the
// M's loop only when that is sound: never through a coroutine that a task
// called directly (U2), never for a G parked while a foreign awaitable runs
// a coroutine of its own inline (U1). The chains that it must unwind are
// tested where they arise: task_tests (a million nested awaits, a million
// awaits in a loop) and fork_join_tests (a fork-join tree on one P).
//
// In clang's code there is no guard and these cases pass trivially; in
// g++'s, both ran into the guard's slow path with the M's stack more than
// half used, and without U1 and U2 failed: the first returned from the
// plain coroutine with its body unfinished while its G waited in the run
// queue, the second requeued a parked G (an abort in builds with
// assertions: "parked twice").
#include <doctest/doctest.h>

#include <pthread.h>

#include <coroutine>
#include <cstdint>
#include <exception>
#include <source_location>
#include <string_view>
#include <utility>

#include "mpg/detail/io/stream_op.hpp"
#include "mpg/mpg.hpp"
#include "test_support.hpp"

namespace {

mpg::task<int> one() { co_return 1; }

// The calling thread's stack: its lowest address and its size.
struct thread_stack {
  std::uintptr_t low = 0;
  std::uintptr_t size = 0;
};
thread_stack this_thread_stack() {
  thread_stack s;
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return s;
  void* base = nullptr;
  std::size_t size = 0;
  if (pthread_attr_getstack(&attr, &base, &size) == 0) {
    s.low = reinterpret_cast<std::uintptr_t>(base);
    s.size = size;
  }
  pthread_attr_destroy(&attr);
  return s;
}

// A plain coroutine that a task calls: it starts at once, awaits a task
// (whose end transfers back to it) and sets *done when its body ends.
void await_one_from_a_plain_coroutine(int* out, bool* done) {
  [](int* o, bool* d) -> mpg_test::eager_coroutine {
    *o = co_await one();
    *d = true;
  }(out, done);
}

// at_depth(): recurses through plain frames until 60% of the thread's
// stack is in use (or 100,000 levels), then calls f there; true when more
// than half of the stack was in use at the call. Real frames
// (__builtin_frame_address), not locals, which AddressSanitizer may keep
// on a fake stack.
template <class F>
[[gnu::noinline]] bool at_depth(const thread_stack& stack, F& f, int depth = 0) {
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  const auto here = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  if (here - stack.low < stack.size * 2 / 5 || depth >= 100'000) {
    f();
    return here - stack.low < stack.size / 2;
  }
  const bool reached = at_depth(stack, f, depth + 1);  // not a tail call
  (void)pad[0];
  return reached;
}

// The plain coroutine called deep in a task: the task's end inside it runs
// the guard's slow path.
struct deep_call {
  thread_stack stack;
  int out = 0;
  bool done_on_return = false;
  bool reached = false;
};
void call_deep(deep_call* d) {
  auto call = [d] {
    bool done = false;
    await_one_from_a_plain_coroutine(&d->out, &done);
    d->done_on_return = done;
  };
  d->reached = at_depth(d->stack, call);
}

// manual: a coroutine that is not an mpg task, started and destroyed by
// whoever holds it (resume(), then the value once done()).
struct manual {
  struct promise_type {
    int value = 0;
    manual get_return_object() {
      return manual{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_value(int v) { value = v; }
    void unhandled_exception() { std::terminate(); }
  };
  explicit manual(std::coroutine_handle<promise_type> h) : h(h) {}
  manual(manual&& o) noexcept : h(std::exchange(o.h, {})) {}
  ~manual() {
    if (h) h.destroy();
  }
  std::coroutine_handle<promise_type> h;
};
manual await_one_in_a_manual() { co_return co_await one(); }

// A foreign awaitable (no runtime_awaiter_tag): its await_suspend runs
// while the task's G is parked "external" (foreign_await.hpp). It recurses
// until 60% of the thread's stack is in use and there runs a coroutine
// that awaits a task, whose end runs the guard's slow path with the G
// parked; then it resumes the bridge at once.
struct deep_foreign {
  thread_stack stack;
  int out = 0;
  bool reached = false;
  void run_deep() {
    auto run = [this] {
      manual m = await_one_in_a_manual();
      m.h.resume();
      out = m.h.done() ? m.h.promise().value : -1;
    };
    reached = at_depth(stack, run);
  }
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> bridge) {
    stack = this_thread_stack();  // the M's
    run_deep();
    bridge.resume();
  }
  int await_resume() const noexcept { return out; }
};

// The frame of the awaiting coroutine, by an await that does not suspend.
struct own_frame {
  using mpg_awaiter = mpg::detail::runtime_awaiter_tag;
  void* frame = nullptr;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    frame = h.address();
    return false;
  }
  void* await_resume() const noexcept { return frame; }
};

// A stream op (as net.hpp's) that always goes on in its task form at
// once (run_now); the task form reports the await-chain site it was given.
mpg::task<std::source_location> task_form_site() {
  void* self = co_await own_frame{};
  co_return std::coroutine_handle<mpg::detail::promise_base>::from_address(self)
      .promise()
      .caller_where_;
}
struct task_form_op : mpg::detail::stream_op<std::source_location> {
  task_form_op() noexcept {}
  ~task_form_op() {}
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
    return run_now(task_form_site(), h);
  }
  std::source_location await_resume() { return task_result(); }
};

void site_seen_from_a_plain_coroutine(std::source_location* out) {
  [](std::source_location* o) -> mpg_test::eager_coroutine { *o = co_await task_form_op{}; }(out);
}

}  // namespace

TEST_CASE("a stream op's task form is linked into the await chain only when a task awaits it") {
  // A set caller_where_ says that the continuation is a task frame (the
  // await chain and U2 rely on it). The G's noted site is the last task
  // await's, here the first co_await below: a plain coroutine's await of
  // the op must not pass it on.
  mpg::runtime rt({.procs = 1});
  rt.block_on([]() -> mpg::task<void> {
    const std::source_location by_task = co_await task_form_op{};
    CHECK(std::string_view(by_task.file_name()).find("stack_guard_tests.cpp") !=
          std::string_view::npos);
    std::source_location by_plain = std::source_location::current();
    site_seen_from_a_plain_coroutine(&by_plain);
    CHECK(std::string_view(by_plain.file_name()).empty());
    co_return;
  }());
}

TEST_CASE("the guard does not unwind through a plain coroutine that a task called") {
  mpg::runtime rt({.procs = 1});
  deep_call d;
  rt.block_on([](deep_call* d) -> mpg::task<void> {
    d->stack = this_thread_stack();  // the M's
    call_deep(d);
    co_return;
  }(&d));
  REQUIRE(d.stack.size > 0);
  CHECK(d.reached);         // the call was made with more than half the stack in use
  CHECK(d.out == 1);
  CHECK(d.done_on_return);  // the plain coroutine's body ended before its call returned
}

TEST_CASE("the guard does not requeue a G parked on a foreign awaitable") {
  mpg::runtime rt({.procs = 1});
  deep_foreign f;
  const int r = rt.block_on([](deep_foreign* f) -> mpg::task<int> { co_return co_await *f; }(&f));
  REQUIRE(f.stack.size > 0);
  CHECK(f.reached);  // the task ended with more than half the stack in use
  CHECK(r == 1);     // and the coroutine that awaited it ran to its end
}
