// test/fake_gs.hpp: fake Gs for the run-queue and deque seams (the queues only
// store and hand back pointers), and a tally that checks every G comes out
// of a concurrent stress exactly once.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>

#include "mpg/detail/sched/g.hpp"

namespace mpg_test {

struct fake_gs {
  explicit fake_gs(std::size_t n) : n(n), gs(new mpg::detail::g[n]) {}
  mpg::detail::g* operator[](std::size_t i) const { return &gs[i]; }
  std::size_t index(const mpg::detail::g* gp) const {
    return static_cast<std::size_t>(gp - gs.get());
  }
  std::size_t n;
  std::unique_ptr<mpg::detail::g[]> gs;
};

// exactly_once: got() from any thread for each G taken out.
class exactly_once {
 public:
  explicit exactly_once(const fake_gs& gs) : gs_(gs), seen_(new std::atomic<int>[gs.n]) {
    for (std::size_t i = 0; i < gs.n; ++i) seen_[i].store(0);
  }
  void got(mpg::detail::g* gp) {
    if (seen_[gs_.index(gp)].fetch_add(1) != 0) dupes_.fetch_add(1);
    total_.fetch_add(1);
  }
  std::size_t total() const { return total_.load(); }
  std::size_t dupes() const { return dupes_.load(); }
  std::size_t missing() const {
    std::size_t m = 0;
    for (std::size_t i = 0; i < gs_.n; ++i) m += seen_[i].load() == 1 ? 0 : 1;
    return m;
  }

 private:
  const fake_gs& gs_;
  std::unique_ptr<std::atomic<int>[]> seen_;
  std::atomic<std::size_t> total_{0};
  std::atomic<std::size_t> dupes_{0};
};

}  // namespace mpg_test
