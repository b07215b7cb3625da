// Foreign awaitables inside tasks (mpg/detail/sched/foreign_await.hpp): any
// awaitable that is not a runtime awaiter waits behind a bridge, so that
// however and wherever it resumes the task, the task continues on a P of its
// runtime. Runtime awaiters pass through unchanged.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <deque>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "mpg/mpg.hpp"
#include "child_process.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// Resumes its waiter from a fresh std::thread, after `delay`.
struct thread_resume {
  std::chrono::milliseconds delay{0};
  std::thread::id* resumer = nullptr;
  int value = 0;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    std::thread([this, h] {
      if (delay.count() > 0) std::this_thread::sleep_for(delay);  // a slow event, not sync
      *resumer = std::this_thread::get_id();
      value = 42;
      h.resume();
    }).detach();
  }
  int await_resume() const noexcept { return value; }
};

// Resumes its waiter inline, inside await_suspend.
struct inline_resume {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { h.resume(); }
  int await_resume() const noexcept { return 7; }
};

// Declines to suspend.
struct declines {
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) const noexcept { return false; }
  int await_resume() const noexcept { return 8; }
};

// Transfers straight back to its waiter.
struct returns_handle {
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) const noexcept { return h; }
  int await_resume() const noexcept { return 9; }
};

// Resumes its waiter from another thread while still inside await_suspend,
// then reports "suspended": the race that commit()'s CAS settles.
struct resume_during_suspend {
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) {
    std::thread t([h] { h.resume(); });
    t.join();
    return true;
  }
  int await_resume() const noexcept { return 10; }
};

// A one-shot event with no notion of mpg: set() resumes every waiter inline,
// on the calling thread.
class event {
 public:
  struct awaiter {
    event* ev;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      std::lock_guard<std::mutex> l(ev->mu_);
      ev->waiters_.push_back(h);
      ev->nwaiters_.store(ev->waiters_.size(), std::memory_order_release);
    }
    void await_resume() const noexcept {}
  };
  awaiter operator co_await() noexcept { return awaiter{this}; }
  void set() {
    std::vector<std::coroutine_handle<>> ws;
    {
      std::lock_guard<std::mutex> l(mu_);
      ws.swap(waiters_);
    }
    for (auto h : ws) h.resume();
  }
  std::size_t waiters() const noexcept { return nwaiters_.load(std::memory_order_acquire); }

 private:
  std::mutex mu_;
  std::vector<std::coroutine_handle<>> waiters_;
  std::atomic<std::size_t> nwaiters_{0};
};

mpg::task<int> child(int x) { co_return x; }

// After a foreign await: still on a G of the runtime, not on the resumer's
// thread, and spawn works.
mpg::task<int> after_foreign_checks(mpg::detail::g* before, std::thread::id resumer) {
  CHECK(mpg::detail::current_g() != nullptr);
  CHECK(mpg::detail::current_g() == before);
  CHECK(std::this_thread::get_id() != resumer);
  co_return co_await mpg::spawn(child(1));
}

mpg::task<int> await_thread_resume(std::chrono::milliseconds delay) {
  mpg::detail::g* before = mpg::detail::current_g();
  std::thread::id resumer;
  int v = co_await thread_resume{delay, &resumer};
  co_return v + co_await after_foreign_checks(before, resumer);
}

}  // namespace

TEST_CASE("runtime awaiters are recognised; others are foreign") {
  mpg::chan<int> ch;
  mpg::mutex m;
  mpg::rwmutex rw;
  mpg::semaphore sem(1);
  mpg::wait_group wg;
  mpg::once o;
  auto fn = [] { return 1; };
  auto init = [] {};
  using mpg::detail::runtime_awaitable;
  static_assert(runtime_awaitable<mpg::task<int>>);
  static_assert(runtime_awaitable<mpg::task<int>&>);
  static_assert(runtime_awaitable<mpg::join_handle<int>&>);
  static_assert(runtime_awaitable<mpg::join_handle<void>>);
  static_assert(runtime_awaitable<decltype(ch.recv())>);
  static_assert(runtime_awaitable<decltype(ch.send(1))>);
  static_assert(runtime_awaitable<decltype(mpg::select(ch.recv(), ch.send(1)))>);
  static_assert(runtime_awaitable<decltype(m.lock())>);
  static_assert(runtime_awaitable<decltype(m.scoped_lock())>);
  // mutex ops are runtime requests: await_transform builds their awaiter.
  static_assert(mpg::detail::runtime_request<decltype(m.lock())>);
  static_assert(mpg::detail::runtime_request<decltype(m.scoped_lock())>);
  static_assert(mpg::detail::runtime_request<decltype(ch.recv())>);
  static_assert(!mpg::detail::runtime_request<decltype(ch.send(1))>);
  static_assert(runtime_awaitable<decltype(rw.lock())>);
  static_assert(runtime_awaitable<decltype(rw.lock_shared())>);
  static_assert(runtime_awaitable<decltype(sem.acquire())>);
  static_assert(runtime_awaitable<decltype(wg.wait())>);
  static_assert(runtime_awaitable<decltype(o.call(init))>);
  static_assert(runtime_awaitable<decltype(mpg::sleep_for(1ms))>);
  static_assert(runtime_awaitable<decltype(mpg::blocking(fn))>);
  static_assert(runtime_awaitable<decltype(mpg::io::submit([](io_uring_sqe*) {}))>);
  static_assert(runtime_awaitable<mpg::yield_awaiter>);
  static_assert(runtime_awaitable<mpg::budget_awaiter>);
  static_assert(!runtime_awaitable<thread_resume>);
  static_assert(!runtime_awaitable<event&>);
  static_assert(!runtime_awaitable<std::suspend_always>);
  // A passed-through awaiter costs nothing in the frame.
  static_assert(sizeof(mpg::detail::runtime_await<mpg::task<int>::awaiter>) ==
                sizeof(mpg::task<int>::awaiter));
}

TEST_CASE("a foreign awaitable resumed on another thread continues on a P") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(await_thread_resume(0ms)) == 43);
}

TEST_CASE("a foreign wait of 300 ms is not a deadlock") {
  mpg::runtime rt({.procs = 1});
  CHECK(rt.block_on(await_thread_resume(300ms)) == 43);
}

TEST_CASE("foreign awaiters that complete inside await_suspend") {
  mpg::runtime rt({.procs = 2});
  auto body = []() -> mpg::task<int> {
    mpg::detail::g* before = mpg::detail::current_g();
    int sum = co_await inline_resume{};
    CHECK(mpg::detail::current_g() == before);
    sum += co_await declines{};
    CHECK(mpg::detail::current_g() == before);
    sum += co_await returns_handle{};
    CHECK(mpg::detail::current_g() == before);
    for (int i = 0; i < 50; ++i) {
      sum += co_await resume_during_suspend{};
      CHECK(mpg::detail::current_g() == before);
    }
    co_return sum + co_await after_foreign_checks(before, std::thread::id());
  };
  CHECK(rt.block_on(body()) == 7 + 8 + 9 + 50 * 10 + 1);
}

TEST_CASE(
    "an event set inline by another task does not hijack that task's G; dump shows the wait") {
  mpg::runtime rt({.procs = 2});
  event ev;
  std::string dump;
  auto waiter = [](event& e) -> mpg::task<int> {
    mpg::detail::g* before = mpg::detail::current_g();
    co_await e;
    CHECK(mpg::detail::current_g() == before);
    co_return 3;
  };
  auto setter = [&]() -> mpg::task<int> {
    auto h = mpg::spawn(waiter(ev), "event-waiter");
    while (ev.waiters() == 0) co_await mpg::yield();
    std::ostringstream os;
    rt.dump(os);
    dump = os.str();
    mpg::detail::g* me = mpg::detail::current_g();
    ev.set();  // resumes the waiter's bridge inline, on this G's thread
    CHECK(mpg::detail::current_g() == me);
    co_return co_await h;
  };
  CHECK(rt.block_on(setter()) == 3);
  INFO(dump);
  CHECK(dump.find("(event-waiter) [waiting: external at ") != std::string::npos);
  CHECK(dump.find("foreign_await_tests.cpp:") != std::string::npos);
}

TEST_CASE("the deadlock check still fires once foreign waits are over") {
  mpg::runtime rt({.procs = 2});
  auto body = []() -> mpg::task<int> {
    std::thread::id resumer;
    int v = co_await thread_resume{0ms, &resumer};
    v += co_await declines{};
    v += co_await inline_resume{};
    mpg::chan<int> never;
    auto r = co_await never.recv();  // nobody sends: a deadlock
    co_return v + (r ? *r : 0);
  };
  CHECK_THROWS_AS(rt.block_on(body()), mpg::deadlock_error);
}

TEST_CASE("stress: many tasks awaiting foreign awaitables resumed by a pool of plain threads") {
  constexpr int kTasks = mpg_test::kSanitized ? 64 : 256;
  constexpr int kRounds = mpg_test::kSanitized ? 20 : 100;
  constexpr int kThreads = 4;
  struct pool {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::coroutine_handle<>> q;
    bool stop = false;
  } p;
  struct pooled {
    pool* p;
    int* slot;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      {
        std::lock_guard<std::mutex> l(p->mu);
        p->q.push_back(h);
      }
      p->cv.notify_one();
    }
    int await_resume() const noexcept { return *slot; }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&p] {
      for (;;) {
        std::coroutine_handle<> h;
        {
          std::unique_lock<std::mutex> l(p.mu);
          p.cv.wait(l, [&] { return p.stop || !p.q.empty(); });
          if (p.q.empty()) return;
          h = p.q.front();
          p.q.pop_front();
        }
        h.resume();
      }
    });
  mpg::runtime rt({.procs = 2});
  auto one = [](pool* pp, int id) -> mpg::task<long> {
    long sum = 0;
    int slot = id;
    for (int r = 0; r < kRounds; ++r) {
      slot = id + r;
      sum += co_await pooled{pp, &slot};
      CHECK(mpg::detail::current_g() != nullptr);
    }
    co_return sum;
  };
  auto all = [&]() -> mpg::task<long> {
    std::vector<mpg::join_handle<long>> hs;
    for (int i = 0; i < kTasks; ++i) hs.push_back(mpg::spawn(one(&p, i)));
    long total = 0;
    for (auto& h : hs) total += co_await h;
    co_return total;
  };
  long expect = 0;
  for (int i = 0; i < kTasks; ++i)
    for (int r = 0; r < kRounds; ++r) expect += i + r;
  CHECK(rt.block_on(all()) == expect);
  {
    std::lock_guard<std::mutex> l(p.mu);
    p.stop = true;
  }
  p.cv.notify_all();
  for (auto& t : threads) t.join();
}

namespace {
// Claims to be a runtime awaiter but resumes the task on a thread of its
// own: the task is resumed outside its runtime.
struct lying_awaiter {
  using mpg_awaiter = mpg::detail::runtime_awaiter_tag;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    std::thread([h] { h.resume(); }).detach();
  }
  void await_resume() const noexcept {}
};
}  // namespace

TEST_CASE("a task resumed outside its runtime aborts naming the task") {
  bool aborted = false;
  std::string err = mpg_test::run_in_child(
      [] {
        mpg::runtime rt({.procs = 1});
        rt.block_on([]() -> mpg::task<void> {
          auto h = mpg::spawn(
              []() -> mpg::task<void> { co_await lying_awaiter{}; }(), "runs-away");
          co_await mpg::yield();  // let it start on its own G (not inline in the join)
          co_await h;
        }());
      },
      &aborted);
  INFO(err);
  CHECK(aborted);
  CHECK(err.find("(runs-away) was resumed outside its runtime") != std::string::npos);
}

#ifndef NDEBUG
namespace {
// Parks through the runtime but lacks the tag (and is readied by nobody).
struct untagged_park {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { mpg::detail::park(h, "untagged"); }
  void await_resume() const noexcept {}
};
}  // namespace

TEST_CASE("an awaiter that parks without the tag is caught (assertions on)") {
  bool aborted = false;
  std::string err = mpg_test::run_in_child(
      [] {
        mpg::runtime rt({.procs = 1});
        rt.block_on([]() -> mpg::task<void> { co_await untagged_park{}; }());
      },
      &aborted);
  INFO(err);
  CHECK(aborted);
  CHECK(err.find("runtime_awaiter_tag") != std::string::npos);
}
#endif

TEST_CASE("a task killed by the shutdown while it waits leaves the bridge to free itself") {
  event ev;
  {
    mpg::runtime rt({.procs = 1});
    auto waiter = [](event& e) -> mpg::task<void> { co_await e; };
    rt.go(waiter(ev), "killed-while-external");
    while (ev.waiters() == 0) std::this_thread::yield();
    CHECK(mpg_test::dump_shows(rt, "external"));
  }  // ~runtime kills the waiter: its foreign wait is abandoned
  ev.set();  // the bridge sees that and frees itself (ASan: no leak, no use after free)
}
