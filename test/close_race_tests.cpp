// test/close_race_tests.cpp: a task that close() wakes may destroy the object
// at once (lib/io/fd_close.hpp). The closer is a thread outside the runtime,
// held by a test hook right after it cancelled the object's first slot,
// the point where the woken task can first run. The hook lets it go on
// once the woken task has destroyed the object (a close() that touches the
// object after that point then uses freed memory: AddressSanitizer reports
// it, and every build sees the order) or is waiting for the closer in the
// destructor (the protocol: the expected order). A receive() is not among
// them: close() takes its waiter out of the queue and readies it after it
// has finished with the stream.
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
  // Set by the closer thread once its close() returned. Relaxed where it is
  // read: the test must add no happens-before of its own.
  std::atomic<bool> closer_returned{false};
  bool moved_to_closed = false;
};

// What the owner does once its wait ends.
enum class then {
  destroy,             // destroys the object (the closer held by the hook)
  move_then_destroy,   // moves it out and destroys the source (held by the hook)
  destroy_after_close  // waits until close() has returned, then destroys (no hook)
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

// The owner: waits on its object, then destroys it as `how` says.
template <class Kind>
task<absl::Status> wait_then_destroy(std::unique_ptr<typename Kind::object> obj, scene& sc,
                                     then how) {
  const absl::Status st = co_await Kind::wait(*obj);
  if (how == then::move_then_destroy) {
    typename Kind::object moved = std::move(*obj);
    obj.reset();
    sc.freed = true;
    sc.moved_to_closed = !moved.is_open();
    co_return st;  // moved's destructor: closed already, it returns
  }
  if (how == then::destroy_after_close) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!sc.closer_returned.load(std::memory_order_relaxed) &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::yield();
    }
  }
  obj.reset();
  sc.freed = true;
  co_return st;
}

// One scene: on one P, the owner parks in Kind::wait; a thread closes the
// object. Kind: `object`, `task<std::unique_ptr<object>> make()` (which
// keeps what the object needs, its peer), `static task<absl::Status>
// wait(object&)`.
template <class Kind>
void close_wakes_owner(then how = then::destroy) {
  using T = typename Kind::object;
  scene sc;
  const bool held = how != then::destroy_after_close;
  hook_installed hook(sc);
  std::jthread closer;
  absl::Status st;
  {
    mpg::runtime rt({.procs = 1});
    rt.block_on([](scene& sc, std::jthread& closer, absl::Status& st, then how,
                   bool held) -> task<void> {
      Kind kind;
      std::unique_ptr<T> obj = co_await kind.make();
      T* raw = obj.get();
      if (held) sc.target = raw;
      sc.waits_before = mpg::detail::close_waits();
      auto owner = mpg::spawn(wait_then_destroy<Kind>(std::move(obj), sc, how));
      co_await mpg::yield();  // one P: the owner ran until it parked
      closer = std::jthread([raw, &sc] {
        raw->close();
        sc.closer_returned.store(true, std::memory_order_relaxed);
      });
      st = co_await owner;
    }(sc, closer, st, how, held));
  }
  closer.join();
  CHECK(absl::IsCancelled(st));
  CHECK(sc.freed);
  if (held) CHECK(sc.seen == order::closer_waited_for);
  if (how == then::move_then_destroy) CHECK(sc.moved_to_closed);
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

TEST_CASE("close: a reader woken by close() may move the stream out and destroy the source") {
  close_wakes_owner<stream_read>(then::move_then_destroy);
}

// Under ThreadSanitizer: the destructor's close() finds the word closed and
// returns; its load must be an acquire of the closer's release, or the
// closer's accesses race with the free.
TEST_CASE("close: a reader may destroy the stream after the close() that woke it returned") {
  close_wakes_owner<stream_read>(then::destroy_after_close);
}

TEST_CASE("close: a stream that adopted a negative number is closed; its destructor returns") {
  mpg::net::tcp_stream s(-3);
  CHECK(!s.is_open());
  CHECK(s.native_handle() == -1);
  s.close();
  CHECK(!s.is_open());
}

TEST_CASE("close: an accept woken by close() may move the listener out and destroy the source") {
  close_wakes_owner<listener_accept>(then::move_then_destroy);
}

TEST_CASE("close: an accept woken by close() may destroy the listener at once") {
  close_wakes_owner<listener_accept>();
}

TEST_CASE("close: a UDP receive woken by close() may destroy the socket at once") {
  close_wakes_owner<udp_recv>();
}
