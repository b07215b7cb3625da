// perf/coroutine_floor.hpp: fib with no runtime, the compiler's floor under
// the fib workload's instruction count.
//
// The same recursion as mpg_bench's fib, written with the least a C++20
// coroutine can do: a lazily started task whose awaiter stores its
// continuation and transfers into it, a final awaiter that transfers back,
// frames from a free list of a few instructions, no
// scheduler, no G, no spawn (the "spawned" child is started by its join,
// inline, as mpg's join does with a child no other P took), no exceptions
// kept, no cooperative budget. Whatever a runtime does, fib cannot cost
// fewer instructions per call than this with the same compiler and flags:
// perf/run.py --instructions prints it beside mpg's fib (perf/callgrind.py
// counts it the same way), so the table shows which part of mpg's count
// is the runtime's and which the coroutines' own.
#pragma once

#include <coroutine>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

namespace mpg_perf::floor {

// frame_pool: one free list of 256-byte blocks (fib's frames are smaller),
// single-threaded as the workload is; a bigger frame is a malloc of its own.
class frame_pool {
 public:
  static constexpr std::size_t kBlock = 256;
  static void* allocate(std::size_t n) {
    if (n <= kBlock && free_ != nullptr) {
      void* p = free_;
      free_ = *static_cast<void**>(p);
      return p;
    }
    void* p = std::malloc(n <= kBlock ? kBlock : n);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  static void release(void* p, std::size_t n) noexcept {
    if (n > kBlock) return std::free(p);
    *static_cast<void**>(p) = free_;
    free_ = p;
  }

 private:
  static inline void* free_ = nullptr;
};

template <class T>
class task {
 public:
  struct promise_type {
    T value{};
    std::coroutine_handle<> continuation;

    static void* operator new(std::size_t n) { return frame_pool::allocate(n); }
    static void operator delete(void* p, std::size_t n) noexcept { frame_pool::release(p, n); }

    task get_return_object() noexcept {
      return task(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().continuation;
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_value(T v) noexcept { value = v; }
    void unhandled_exception() noexcept { std::abort(); }
  };

  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  task(task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  task& operator=(task&&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> c) noexcept {
    h_.promise().continuation = c;
    return h_;
  }
  T await_resume() noexcept { return h_.promise().value; }

 private:
  std::coroutine_handle<promise_type> h_;
};

inline task<long> fib(int n) {
  if (n < 2) co_return n;
  task<long> a = fib(n - 1);  // "spawned": started by its join below
  long b = co_await fib(n - 2);
  co_return co_await a + b;
}

// run(): fib(n) from a plain function: a driver coroutine that starts when
// called and ends with the result stored.
struct driver {
  struct promise_type {
    driver get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::abort(); }
  };
};
inline driver run_into(int n, long* out) { *out = co_await fib(n); }
inline long run(int n) {
  long r = 0;
  run_into(n, &r);
  return r;
}

}  // namespace mpg_perf::floor
