// test/close_race_tests.cpp: a task that close() wakes may destroy the object
// at once (lib/io/fd_close.hpp). The closer is a thread outside the runtime,
// held by a test hook right after it cancelled the object's first slot,
// the point where the woken task can first run. The hook lets it go on
// once the woken task has destroyed the object (a close() that touches the
// object after that point then uses freed memory: AddressSanitizer reports
// it, and every build sees the order) or is waiting for the closer in the
// destructor (the protocol: the expected order). A receive() is not among them: close() takes its waiter out of
// the queue and readies it after it has finished with the stream.
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>
#include <mpg/udp.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <thread>
#include <utility>

#include "io/fd_close.hpp"
#include "stream_pair.hpp"

namespace {

using mpg::task;
using mpg_test::connect_pair;

enum class order { none, closer_waited_for, freed_first, timed_out };

// What the hook and the woken task share; the hook acts once, for the
// object under test.
struct scene {
  std::atomic<const void*> target{nullptr};
  std::uint64_t waits_before = 0;
  std::atomic<bool> hooked{false};
  std::atomic<bool> freed{false};
  std::atomic<order> seen{order::none};
};
scene* g_scene = nullptr;

void hold_closer(const void* object) {
  scene& sc = *g_scene;
  if (object != sc.target.load() || sc.hooked.exchange(true)) return;
  // Bounded: the woken task normally gets there within microseconds.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    if (mpg::detail::close_waits() > sc.waits_before) {
      sc.seen = order::closer_waited_for;
      return;
    }
    if (sc.freed.load()) {
      sc.seen = order::freed_first;
      return;
    }
    if (std::chrono::steady_clock::now() > give_up) {
      sc.seen = order::timed_out;
      return;
    }
    std::this_thread::yield();
  }
}

struct hook_installed {
  explicit hook_installed(scene& sc) {
    g_scene = &sc;
    mpg::detail::g_close_hook.store(&hold_closer);
  }
  ~hook_installed() {
    mpg::detail::g_close_hook.store(nullptr);
    g_scene = nullptr;
  }
};

// The owner: waits on its object, then destroys it as soon as it wakes.
template <class Kind>
task<absl::Status> wait_then_destroy(std::unique_ptr<typename Kind::object> obj, scene& sc) {
  const absl::Status st = co_await Kind::wait(*obj);
  obj.reset();
  sc.freed = true;
  co_return st;
}

// One scene: on one P, the owner parks in Kind::wait; a thread closes the
// object. Kind: `object`, `task<std::unique_ptr<object>> make()` (which
// keeps what the object needs, its peer), `static task<absl::Status>
// wait(object&)`.
template <class Kind>
void close_wakes_owner() {
  using T = typename Kind::object;
  scene sc;
  hook_installed hook(sc);
  std::jthread closer;
  absl::Status st;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on([](scene& sc, std::jthread& closer, absl::Status& st) -> task<void> {
      Kind kind;
      std::unique_ptr<T> obj = co_await kind.make();
      T* raw = obj.get();
      sc.target = raw;
      sc.waits_before = mpg::detail::close_waits();
      auto owner = mpg::spawn(wait_then_destroy<Kind>(std::move(obj), sc));
      co_await mpg::yield();  // one P: the owner ran until it parked
      closer = std::jthread([raw] { raw->close(); });
      st = co_await owner;
    }(sc, closer, st));
  }
  closer.join();
  CHECK(absl::IsCancelled(st));
  CHECK(sc.freed);
  CHECK(sc.seen == order::closer_waited_for);
}

struct stream_read {
  using object = mpg::net::tcp_stream;
  mpg_test::stream_pair pair;  // the peer stays open: the read waits
  task<std::unique_ptr<object>> make() {
    pair = co_await connect_pair();
    co_return std::make_unique<object>(std::move(pair.client));
  }
  static task<absl::Status> wait(object& s) {
    char buf[16];
    auto n = co_await s.read(std::span<char>(buf));
    co_return n.status();
  }
};

struct listener_accept {
  using object = mpg::net::listener;
  task<std::unique_ptr<object>> make() {
    auto ln = mpg::net::listen("127.0.0.1:0");
    REQUIRE(ln.ok());
    co_return std::make_unique<object>(std::move(*ln));
  }
  static task<absl::Status> wait(object& l) {
    auto c = co_await l.accept();
    co_return c.status();
  }
};

struct udp_recv {
  using object = mpg::net::udp_socket;
  task<std::unique_ptr<object>> make() {
    auto u = mpg::net::listen_udp("127.0.0.1:0");
    REQUIRE(u.ok());
    co_return std::make_unique<object>(std::move(*u));
  }
  static task<absl::Status> wait(object& u) {
    char buf[16];
    auto d = co_await u.recv_from(std::span<char>(buf));
    co_return d.status();
  }
};

}  // namespace

TEST_CASE("close: a reader woken by close() may destroy the stream at once") {
  close_wakes_owner<stream_read>();
}

TEST_CASE("close: an accept woken by close() may destroy the listener at once") {
  close_wakes_owner<listener_accept>();
}

TEST_CASE("close: a UDP receive woken by close() may destroy the socket at once") {
  close_wakes_owner<udp_recv>();
}
