// examples/smoke_poll.hpp: the example servers' self-tests (--smoke) wait
// for a state of the server under test with poll_until().
#pragma once

#include <chrono>

#include "mpg/mpg.hpp"
#include "mpg/net.hpp"

namespace example {

// poll_until(): pred holds, checked every millisecond for up to 10 s; false
// if it never did (a failure).
template <class Pred>
mpg::task<bool> poll_until(Pred pred) {
  using namespace std::chrono_literals;
  const auto deadline = mpg::net::clock::now() + 10s;
  while (!pred()) {
    if (mpg::net::clock::now() > deadline) co_return false;
    co_await mpg::sleep_for(1ms);
  }
  co_return true;
}

}  // namespace example
