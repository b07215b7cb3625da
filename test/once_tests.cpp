// test/once_tests.cpp: mpg::once. f runs exactly once among many concurrent
// callers, and every caller returns only after f has completed (f awaits in
// the middle, so callers really do wait); a plain void function works; an
// exception reaches the first caller only and the once counts as done.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct config {
  mpg::once init;
  std::atomic<int> runs{0};
  int value = 0;  // plain: written by f, read by every caller after call()
};

mpg::task<int> use_config(config* c) {
  co_await c->init.call([c]() -> mpg::task<> {
    c->runs.fetch_add(1);
    for (int i = 0; i < 10; ++i) co_await mpg::yield();  // others arrive meanwhile
    c->value = 42;
  });
  co_return c->value;
}

mpg::task<std::string> once_many_callers() {
  config c;
  std::vector<mpg::join_handle<int>> hs;
  for (int i = 0; i < 100; ++i) hs.push_back(mpg::spawn(use_config(&c)));
  for (auto& h : hs)
    if (co_await h != 42) co_return "a caller returned before f completed";
  if (c.runs.load() != 1) co_return "f ran " + std::to_string(c.runs.load()) + " times";
  if (!c.init.done()) co_return "not done";
  // Later calls do not run f.
  if (co_await use_config(&c) != 42 || c.runs.load() != 1) co_return "f ran again";
  co_return "ok";
}

TEST_CASE("once: f runs once; concurrent callers wait for it to finish") {
  mpg::runtime rt({.procs = 2});
  for (int round = 0; round < 20; ++round) {
    CAPTURE(round);
    REQUIRE(rt.block_on(once_many_callers()) == "ok");
  }
}

mpg::task<std::string> once_plain_function() {
  mpg::once o;
  int n = 0;
  co_await o.call([&n] { ++n; });
  co_await o.call([&n] { ++n; });
  co_return n == 1 ? "ok" : "plain f ran twice";
}

TEST_CASE("once: a plain function works too") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(once_plain_function()) == "ok");
}

mpg::task<std::string> once_exception() {
  mpg::once o;
  int calls = 0;
  try {
    co_await o.call([&calls]() -> mpg::task<> {
      ++calls;
      throw std::runtime_error("init failed");
      co_return;
    });
    co_return "exception not propagated";
  } catch (const std::runtime_error&) {
  }
  // As Go's Once: it counts as done; f does not run again.
  co_await o.call([&calls]() -> mpg::task<> {
    ++calls;
    co_return;
  });
  if (calls != 1) co_return "f ran again after throwing";
  if (!o.done()) co_return "not done after a throwing f";
  co_return "ok";
}

TEST_CASE("once: an exception reaches the first caller; the once is then done") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(once_exception()) == "ok");
}

}  // namespace
