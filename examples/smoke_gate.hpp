// examples/smoke_gate.hpp: a gate that holds a server's task at one point,
// for the example servers' self-tests (--smoke): a check of a race holds
// one side at the gate, brings the other to the point it wants (polling
// with poll_until, smoke_poll.hpp), then opens the gate, and so reaches the
// race's window every time.
#pragma once

#include <atomic>

#include "mpg/mpg.hpp"

namespace example {

class smoke_gate {
 public:
  // pass(): waits until the gate is open.
  mpg::task<> pass() {
    reached_.fetch_add(1, std::memory_order_relaxed);
    (void)co_await open_.recv();
  }
  // open(): lets every task at the gate, and every later one, pass (the
  // first call; later ones do nothing).
  void open() {
    if (!opened_.exchange(true, std::memory_order_relaxed)) open_.close();
  }
  // reached(): how many tasks came to the gate.
  int reached() const { return reached_.load(std::memory_order_relaxed); }

 private:
  mpg::chan<int> open_;  // closed: open
  std::atomic<bool> opened_{false};
  std::atomic<int> reached_{0};
};

// smoke_gates: the gates of an example server; null (the default, and
// always when serving) lets its tasks go on. accepted: the accept loop,
// with a connection accept() has just returned; conn_start: a connection's
// task, as it starts.
struct smoke_gates {
  smoke_gate* accepted = nullptr;
  smoke_gate* conn_start = nullptr;
};

}  // namespace example
