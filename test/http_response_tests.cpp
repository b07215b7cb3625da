// test/http_response_tests.cpp: perf/servers/http_response.hpp, the responses
// of the http_hello server and their per-thread cache, which the server's
// tasks reach from whichever M they run on.
#include <doctest/doctest.h>

#include <coroutine>
#include <cstddef>
#include <latch>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "http_response.hpp"
#include "test_support.hpp"

namespace {

using http_response::response_cache;

// The calling thread's cache, looked up outside any coroutine: the
// reference the checks compare with.
[[gnu::noinline]] const response_cache* own_cache() {
  return &http_response::thread_response_cache();
}

// Resumes the coroutine on a new thread, as a task resumes on another M,
// once the thread that ran it has ended (its thread_locals destroyed).
// Each thread is kept in `threads` (under `mu`) and joined by the next one.
struct hop {
  std::vector<std::thread>* threads;
  std::mutex* mu;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    std::lock_guard<std::mutex> l(*mu);
    const std::size_t previous = threads->size() - 1;  // the thread running this
    threads->emplace_back([h, threads = threads, mu = mu, previous] {
      std::thread* ended;
      {
        std::lock_guard<std::mutex> wait_for_emplace(*mu);
        ended = &(*threads)[previous];
      }
      ended->join();
      h.resume();
    });
  }
  void await_resume() const noexcept {}
};

constexpr int kTurns = 8;

struct turn_result {
  bool response_ok = false;     // append_ok() appended a whole 200
  bool own_cache_made = false;  // from the calling thread's own cache
};

bool is_ok_response(const std::string& out) {
  const std::string_view body = http_response::kBody;
  return out.rfind("HTTP/1.1 200 OK\r\nDate: ", 0) == 0 && out.size() > body.size() &&
         out.compare(out.size() - body.size(), std::string::npos, body) == 0;
}

// Each turn runs on a thread that has never built a response, after the
// thread of the turn before has ended and destroyed its thread_locals.
// The loop has the shape of the server's handler: the responses to what
// one receive brought, appended to a buffer that lives across the awaits,
// then an await. Built at -O3 (test/meson.build), clang 16 kept the
// address of a thread_local of the server's first append_ok() from the
// coroutine's first thread in such a loop: the later turns used that
// ended thread's cache (AddressSanitizer: a use after free of its
// response; without it, a response of freed bytes).
mpg_test::eager_coroutine respond_on_each_thread(std::vector<std::thread>* threads, std::mutex* mu,
                                                 turn_result* results, std::latch* done) {
  std::string out;
  for (int i = 0; i < kTurns; ++i) {
    for (int n = 0; n <= i % 3; ++n) http_response::append_ok(out);
    const response_cache* own = own_cache();
    results[i].response_ok = is_ok_response(out);
    results[i].own_cache_made = own->ok_second != 0 && !own->ok.empty() &&
                                out.size() >= own->ok.size() &&
                                out.compare(out.size() - own->ok.size(), std::string::npos,
                                            own->ok) == 0;
    out.clear();
    if (i + 1 < kTurns) co_await hop{threads, mu};
  }
  done->count_down();
}

}  // namespace

TEST_CASE("append_ok uses the cache of the thread that calls it, as a task moves between threads") {
  std::vector<std::thread> threads;
  std::mutex mu;
  turn_result results[kTurns];
  std::latch done(1);
  {
    std::lock_guard<std::mutex> l(mu);
    threads.emplace_back([&] { respond_on_each_thread(&threads, &mu, results, &done); });
  }
  // The latch orders every turn's results before the reads here; each
  // thread but the last was joined by the next, so all are in the vector.
  done.wait();
  std::lock_guard<std::mutex> l(mu);
  REQUIRE(threads.size() == static_cast<std::size_t>(kTurns));
  threads.back().join();
  for (int i = 0; i < kTurns; ++i) {
    CAPTURE(i);
    CHECK(results[i].response_ok);
    CHECK(results[i].own_cache_made);
  }
}

TEST_CASE("append_ok is the keep-alive 200 with the body and a Date") {
  std::string out;
  http_response::append_ok(out);
  CHECK(out.rfind("HTTP/1.1 200 OK\r\nDate: ", 0) == 0);
  CHECK(out.find("\r\nContent-Length: 13\r\n") != std::string::npos);
  CHECK(out.find("Connection:") == std::string::npos);
  CHECK(out.size() >= http_response::kBody.size());
  CHECK(out.compare(out.size() - http_response::kBody.size(), std::string::npos,
                    http_response::kBody) == 0);
}
