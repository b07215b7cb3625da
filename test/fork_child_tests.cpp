// test/fork_child_tests.cpp: the child of a fork() without exec. It has only
// the forking thread, and mpg resets its process-wide state there ("Fork" in
// lib/sched/signal_handler.cpp and lib/runtime.cpp): in the child, a new
// runtime gets its channel signals, its dump signal and its deadlock check;
// the signals mpg held get their old dispositions back; the parent's relay,
// dumper and runtimes neither serve the child nor are reached from it; and
// a fork that comes while the relay holds its lock waits for it, as one that
// comes while another thread holds a leaf lock (lib/sched/leaf_locks.hpp: the
// frame depot's, the post caches' orphan list's) waits for that.
//
// Each child checks without doctest (its assertions would stay in the
// child): it writes each failed check to its output, which run_child()
// collects, and exits with status 3. A hang ends it: the child arms a
// watchdog (exit status 1) or, to start no thread, an alarm (SIGALRM), and
// run_child() kills any child past a limit of its own.
//
// TSan does not support a child of a multithreaded process that starts
// threads: its die_after_fork option (on by default) ends such a child at
// its first new thread. ASan before LLVM 18 installs no fork handlers of its
// own (llvm-project pull request 75290 added them): a parent thread that
// holds one of its locks at the fork (its allocator's, its thread
// registry's) leaves it held in the child, whose new threads then wait for
// it for ever (seen once under clang 16's ASan: the child's dumper, relay
// and watchdog never ran, and run_child() killed it). The parents here are
// multithreaded at the fork, as they must be for the relay or the dumper to
// run. So under TSan and such an ASan (kNoThreadsInChild) the tests whose
// children need a runtime are skipped, and the forks during a delivery or
// while a leaf lock is held check in the child only what needs no thread;
// the release build runs them all.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <mpg/mpg.hpp>
#include <mpg/signal.hpp>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "io/signal_relay.hpp"
#include "mpg/detail/sched/frame.hpp"
#include "mpg/detail/sched/post_node.hpp"
#include "sched/leaf_locks.hpp"
#include "stderr_capture.hpp"
#include "test_support.hpp"
#include "watchdog.hpp"

namespace {

using mpg::task;

// kNoThreadsInChild: the sanitizer cannot run a thread that a child of a
// multithreaded parent starts (the file comment).
#if defined(__clang__) && __clang_major__ >= 18
constexpr bool kAsanForks = true;  // ASan with fork handlers of its own
#else
constexpr bool kAsanForks = false;
#endif
constexpr bool kNoThreadsInChild =
    mpg_test::kThreadSanitized || (mpg_test::kAddressSanitized && !kAsanForks);

constexpr auto kChildLimit = std::chrono::seconds(60);  // run_child kills the child after it
constexpr auto kHangLimit = std::chrono::seconds(10);   // a child's watchdog or alarm

// child_checks: a child's checks. Each failure is written to the child's
// output at once (write(2): stdio's buffer would be lost at _exit).
class child_checks {
 public:
  void check(bool ok, const char* what) {
    if (ok) return;
    failed_ = true;
    say(std::string("child: FAILED: ") + what + "\n");
  }
  static void say(const std::string& s) {
    [[maybe_unused]] ssize_t n = ::write(1, s.data(), s.size());
  }
  bool failed() const { return failed_; }
  // finish(): ends the child, with status 0 if every check held, else 3.
  [[noreturn]] void finish() const { ::_exit(failed_ ? 3 : 0); }

 private:
  bool failed_ = false;
};

enum class disposition { dfl, ign, handler };

disposition disposition_of(int sig) {
  struct sigaction sa {};
  ::sigaction(sig, nullptr, &sa);
  if (sa.sa_handler == SIG_DFL) return disposition::dfl;
  if (sa.sa_handler == SIG_IGN) return disposition::ign;
  return disposition::handler;
}

using handler_t = void (*)(int);
handler_t handler_of(int sig) {
  struct sigaction sa {};
  ::sigaction(sig, nullptr, &sa);
  return sa.sa_handler;
}

extern "C" void app_handler(int) {}

mpg::task<int> wait_for_value(mpg::chan<int> c) {
  auto v = co_await c.recv();
  co_return v ? *v : -1;
}

// In a task of a runtime: a channel for SIGUSR1, a SIGUSR1 raised, the
// signal received.
mpg::task<int> notify_and_raise() {
  mpg::chan<int> sigs = mpg::signal::notify({SIGUSR1});
  ::raise(SIGUSR1);
  auto v = co_await sigs.recv();
  mpg::signal::stop(sigs);
  co_return v.value_or(0);
}

// check_exited_zero(): the child ran to its end with every check held.
void check_exited_zero(const mpg_test::child_result& r) {
  INFO("child output:\n" << r.output);
  INFO("wait status: " << r.status);
  CHECK(!r.timed_out);
  CHECK(WIFEXITED(r.status));
  CHECK(WEXITSTATUS(r.status) == 0);
}

}  // namespace

TEST_CASE("a new runtime in a child of fork gets its signals and dumps, and not the parent's" *
          doctest::skip(kNoThreadsInChild)) {
  REQUIRE(disposition_of(SIGUSR1) == disposition::dfl);
  REQUIRE(disposition_of(SIGUSR2) == disposition::dfl);
  mpg_test::stderr_capture pcap;
  // At the fork the parent's relay and dumper run: a channel wants SIGUSR1
  // and a runtime dumps on SIGUSR2 (the same signals the child uses).
  mpg::runtime prt({.procs = 1, .dump_signal = SIGUSR2});
  // A second dump signal, to tell the parent's dumps apart (below).
  mpg::runtime marker({.procs = 1, .dump_signal = SIGWINCH});
  mpg::chan<int> pwait;
  auto ph = prt.spawn(wait_for_value(pwait), "parent-task");
  mpg::chan<int> psigs = mpg::signal::notify({SIGUSR1});
  ::raise(SIGUSR1);
  REQUIRE(mpg_test::wait_until([&] { return psigs.size() == 1; }));
  CHECK(psigs.try_recv().value_or(0) == SIGUSR1);
  ::raise(SIGUSR2);
  REQUIRE(pcap.wait_for("(parent-task)"));

  const mpg_test::child_result r = mpg_test::run_child(
      [] {
        mpg_test::watchdog dog(kHangLimit, "the child of fork's runtime");
        child_checks c;
        // The parent's channel and runtime are not in the child: their
        // signals have the dispositions they had before mpg claimed them.
        c.check(disposition_of(SIGUSR1) == disposition::dfl,
                "SIGUSR1 (the parent's channel's) has its disposition from before notify");
        c.check(disposition_of(SIGUSR2) == disposition::dfl,
                "SIGUSR2 (the parent's dump signal) has its disposition from before the runtime");
        {
          mpg::runtime rt({.procs = 1, .dump_signal = SIGUSR2});
          mpg::chan<int> cwait;
          auto h = rt.spawn(wait_for_value(cwait), "child-task");
          {
            mpg_test::stderr_capture cap;
            ::raise(SIGUSR2);
            c.check(cap.wait_for("(child-task)", 1, std::chrono::seconds(5)),
                    "SIGUSR2 dumps the child's runtime");
            c.check(cap.count("(parent-task)") == 0, "the child's dump leaves the parent's out");
          }
          dog.pet();
          c.check(rt.block_on(notify_and_raise()) == SIGUSR1,
                  "a channel of the child receives SIGUSR1");
          cwait.close();
          c.check(rt.block_on(std::move(h)) == -1, "the child's task ends");
        }
        c.check(disposition_of(SIGUSR1) == disposition::dfl,
                "SIGUSR1's disposition is back once the child's channel stopped");
        c.check(disposition_of(SIGUSR2) == disposition::dfl,
                "SIGUSR2's disposition is back once the child's runtime is gone");
        c.finish();
      },
      kChildLimit);
  check_exited_zero(r);

  // The parent's relay and dumper go on. The dumper writes its dumps in the
  // order of their signals' bytes in its pipe, so once the SIGWINCH dump
  // raised now is out, a dump for a SIGUSR2 of the child's that reached the
  // parent's pipe would be out too: there is none.
  ::raise(SIGUSR1);
  CHECK(mpg_test::wait_until([&] { return psigs.size() == 1; }));
  ::raise(SIGWINCH);
  CHECK(pcap.wait_for("mpg: signal " + std::to_string(SIGWINCH) + " ("));
  CHECK(pcap.count("(parent-task)") == 1);
  mpg::signal::stop(psigs);
  pwait.close();
  CHECK(prt.block_on(std::move(ph)) == -1);
}

namespace {
// The moment of the test below: the relay holds its registry lock (inside a
// delivery) when another thread forks.
std::atomic<bool> relay_held{false};
std::atomic<bool> fork_preparing{false};
std::atomic<bool> child_ended{false};

void hold_relay() {
  mpg::detail::g_signal_deliver_hook.store(nullptr, std::memory_order_relaxed);  // once
  relay_held.store(true);
  // Until the fork waits for the lock (F1), or else until its child ended
  // (a fork that takes no lock copies it held).
  (void)mpg_test::wait_until([] { return fork_preparing.load() || child_ended.load(); },
                             std::chrono::seconds(90));
}
void note_fork() { fork_preparing.store(true); }
}  // namespace

TEST_CASE("a fork while the relay holds its lock waits for it, and the child's notify works") {
  mpg::chan<int> psigs = mpg::signal::notify({SIGUSR1});
  mpg::detail::g_signal_fork_hook.store(&note_fork, std::memory_order_relaxed);
  mpg::detail::g_signal_deliver_hook.store(&hold_relay, std::memory_order_relaxed);
  ::raise(SIGUSR1);
  REQUIRE(mpg_test::wait_until([] { return relay_held.load(); }));
  mpg_test::child_result r;
  std::thread forker([&] {
    r = mpg_test::run_child(
        [] {
          ::alarm(static_cast<unsigned>(kHangLimit.count()));
          child_checks c;
          // Takes the registry lock and starts no thread: it returns only
          // if the fork did not copy the lock held.
          mpg::signal::stop(mpg::chan<int>(1));
          child_checks::say("child: the relay's lock is free\n");
          if constexpr (!kNoThreadsInChild) {
            mpg::runtime rt({.procs = 1});
            c.check(rt.block_on(notify_and_raise()) == SIGUSR1,
                    "a channel of the child receives SIGUSR1");
          }
          c.finish();
        },
        kChildLimit);
    child_ended.store(true);
  });
  forker.join();
  mpg::detail::g_signal_fork_hook.store(nullptr, std::memory_order_relaxed);
  check_exited_zero(r);
  CHECK(r.output.find("child: the relay's lock is free") != std::string::npos);
  CHECK(fork_preparing.load());
  // The delivery held across the fork went on in the parent.
  CHECK(mpg_test::wait_until([&] { return psigs.size() == 1; }));
  mpg::signal::stop(psigs);
}

TEST_CASE("in a child of fork, each signal mpg held has its old disposition or the program's") {
  REQUIRE(disposition_of(SIGUSR1) == disposition::dfl);
  REQUIRE(disposition_of(SIGUSR2) == disposition::dfl);
  ::signal(SIGUSR2, SIG_IGN);
  mpg::chan<int> usr = mpg::signal::notify({SIGUSR1, SIGUSR2});
  mpg::chan<int> hup = mpg::signal::notify({SIGHUP});
  // The program's own handler, installed after the claim.
  struct sigaction app {};
  app.sa_handler = app_handler;
  sigemptyset(&app.sa_mask);
  struct sigaction hup_before {};
  REQUIRE(::sigaction(SIGHUP, &app, &hup_before) == 0);

  const mpg_test::child_result r = mpg_test::run_child(
      [] {
        child_checks c;  // nothing here can wait: run_child's limit bounds it
        c.check(disposition_of(SIGUSR1) == disposition::dfl, "SIGUSR1 is SIG_DFL again");
        c.check(disposition_of(SIGUSR2) == disposition::ign, "SIGUSR2 is SIG_IGN again");
        c.check(handler_of(SIGHUP) == app_handler, "SIGHUP keeps the program's handler");
        if (!c.failed()) child_checks::say("child: dispositions as before mpg\n");
        // SIG_DFL: the signal ends the child (raise() delivers it before it
        // returns), rather than being caught and dropped for want of a
        // channel.
        ::raise(SIGUSR1);
        c.check(false, "SIGUSR1 ends the child");
        c.finish();
      },
      kChildLimit);
  {
    INFO("child output:\n" << r.output);
    CHECK(!r.timed_out);
    CHECK(WIFSIGNALED(r.status));
    CHECK(WTERMSIG(r.status) == SIGUSR1);
    CHECK(r.output.find("child: dispositions as before mpg") != std::string::npos);
  }
  // The parent's are untouched: mpg's handler until the channels stop.
  CHECK(disposition_of(SIGUSR1) == disposition::handler);
  CHECK(disposition_of(SIGUSR2) == disposition::handler);
  mpg::signal::stop(usr);
  CHECK(disposition_of(SIGUSR1) == disposition::dfl);
  CHECK(disposition_of(SIGUSR2) == disposition::ign);
  mpg::signal::stop(hup);
  CHECK((handler_of(SIGHUP) == app_handler));
  ::sigaction(SIGHUP, &hup_before, nullptr);
  ::signal(SIGUSR2, SIG_DFL);
}

TEST_CASE("a new runtime in a child of fork reports a deadlock the parent's runtimes cannot end" *
          doctest::skip(kNoThreadsInChild)) {
  // At the fork the parent has a runtime that counts as a possible waker
  // for any other runtime's deadlock check (an external_work guard lives).
  mpg::runtime prt({.procs = 1});
  mpg::external_work busy(prt.handle());
  const mpg_test::child_result r = mpg_test::run_child(
      [] {
        mpg_test::watchdog dog(kHangLimit, "the deadlock check in the child of fork");
        child_checks c;
        mpg::runtime rt({.procs = 1});
        bool reported = false;
        try {
          rt.block_on([]() -> task<void> {
            mpg::chan<int> never;
            (void)co_await never.recv();
          }());
        } catch (const mpg::deadlock_error&) {
          reported = true;
        }
        c.check(reported, "block_on reports the deadlock");
        c.finish();
      },
      kChildLimit);
  check_exited_zero(r);
}

namespace {
// The moment of the tests below: a thread of the parent holds a leaf lock
// (lib/sched/leaf_locks.hpp) when another thread forks.
std::atomic<bool> leaf_fork_preparing{false};
void note_leaf_fork() { leaf_fork_preparing.store(true); }

// fork_while_held(): runs `child` in a child of a fork made by a new thread
// while a third thread holds a leaf lock (taken by lock(), released by
// unlock()). The holder lets go once the fork prepares (the leaf handlers'
// hook runs before they take their locks), or else once the child ended: a
// fork that takes no leaf lock copies it held. The forking thread is new, so
// it has no frame list and no post cache: the child's first frames and
// first post need the depot and the orphan list.
template <class F>
mpg_test::child_result fork_while_held(void (*lock)() noexcept, void (*unlock)() noexcept,
                                       F child) {
  leaf_fork_preparing.store(false);
  std::atomic<bool> held{false};
  std::atomic<bool> child_ended{false};
  mpg::detail::g_leaf_fork_hook.store(&note_leaf_fork, std::memory_order_relaxed);
  std::thread holder([&] {
    lock();
    held.store(true);
    (void)mpg_test::wait_until([&] { return leaf_fork_preparing.load() || child_ended.load(); },
                               std::chrono::seconds(90));
    unlock();
  });
  const bool was_held = mpg_test::wait_until([&] { return held.load(); });
  mpg_test::child_result r;
  std::thread forker([&] {
    r = mpg_test::run_child(child, kChildLimit);
    child_ended.store(true);
  });
  forker.join();
  holder.join();
  mpg::detail::g_leaf_fork_hook.store(nullptr, std::memory_order_relaxed);
  CHECK(was_held);
  CHECK(leaf_fork_preparing.load());
  return r;
}

// More frames than a thread's list of one class takes (at most 4096,
// lib/sched/frame_allocator.cpp), so that freeing them all on one thread
// hands batches to the depot.
constexpr int kManyFrames = 6000;

// hold_many(): n tasks alive at once, then ended and joined: with one P,
// their frames are made and freed on the runtime's one M.
// Unused under TSan, whose children start no threads.
[[maybe_unused]] task<int> hold_many(int n) {
  mpg::chan<int> gate;
  std::vector<mpg::join_handle<int>> hs;
  hs.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) hs.push_back(mpg::spawn(wait_for_value(gate)));
  gate.close();
  int ended = 0;
  for (auto& h : hs) ended += (co_await std::move(h)) == -1 ? 1 : 0;
  co_return ended;
}
}  // namespace

TEST_CASE("a fork while another thread holds the frame depot's lock waits for it, and the "
          "child's frames go through the depot") {
  const mpg_test::child_result r = fork_while_held(
      mpg::detail::frame_depot_lock, mpg::detail::frame_depot_unlock, [] {
        ::alarm(static_cast<unsigned>(kHangLimit.count()));
        child_checks c;
        // The frame cache is off by default under AddressSanitizer; on,
        // frames go through the depot.
        mpg::detail::set_frame_cache_enabled(true);
        if constexpr (!kNoThreadsInChild) {
          mpg::runtime rt({.procs = 1});
          c.check(rt.block_on(hold_many(kManyFrames)) == kManyFrames,
                  "the child's tasks all end");
        } else {
          // No thread (TSan ends a child that starts one): frames of the
          // largest cached class (its list takes 512), made and freed here.
          constexpr std::size_t kSize = 2048 - sizeof(mpg::detail::frame_header);
          std::vector<void*> frames(1000);
          for (void*& f : frames) f = mpg::detail::allocate_frame(kSize);
          for (void* f : frames) mpg::detail::free_frame(f, kSize);
        }
        child_checks::say("child: the depot's lock is free\n");
        c.finish();
      });
  check_exited_zero(r);
  CHECK(r.output.find("child: the depot's lock is free") != std::string::npos);
}

TEST_CASE("a fork while another thread holds the post caches' orphan list's lock waits for it, "
          "and the child's posts work") {
  const mpg_test::child_result r = fork_while_held(
      mpg::detail::post_orphans_lock, mpg::detail::post_orphans_unlock, [] {
        ::alarm(static_cast<unsigned>(kHangLimit.count()));
        child_checks c;
        if constexpr (!kNoThreadsInChild) {
          mpg::runtime rt({.procs = 1});
          mpg::chan<int> ran(1);
          // This thread's first post: it adopts an orphan cache or makes
          // one, under the orphan list's lock.
          c.check(rt.handle().post([ran]() mutable { (void)ran.try_send(1); }),
                  "the child's post is queued");
          c.check(rt.block_on(wait_for_value(ran)) == 1, "the child's posted function runs");
        } else {
          // No thread (see above): this thread's first post cache, by hand.
          const mpg::detail::post_memory m = mpg::detail::post_alloc(0);
          mpg::detail::post_free(m.home, 0, m.p);
        }
        child_checks::say("child: the orphan list's lock is free\n");
        c.finish();
      });
  check_exited_zero(r);
  CHECK(r.output.find("child: the orphan list's lock is free") != std::string::npos);
}
