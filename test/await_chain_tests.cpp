// Await chains: the task dump, deadlock_error::what() and the leak report at
// ~runtime show, for every parked task, its coroutines from the innermost
// await out to the root, one indented line each, with the function (as the
// source spells it, without g++'s coroutine-body decoration) and file:line.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <thread>

#include "mpg/mpg.hpp"
#include "mpg/net.hpp"

namespace chain_test {

// The line of each co_await, recorded by the coroutine itself on the line
// of its co_await (so the expectations cannot drift from the source).
std::atomic<int> consume_line{0}, stage_line{0}, pipeline_line{0}, join_line{0};

mpg::task<int> consume(mpg::chan<int> c) {
  consume_line = __LINE__; auto v = co_await c.recv();
  co_return v ? *v : -1;
}

mpg::task<int> run_stage(mpg::chan<int> c) {
  stage_line = __LINE__; int v = co_await consume(c);
  co_return v + 1;
}

mpg::task<int> pipeline(mpg::chan<int> c) {
  pipeline_line = __LINE__; int v = co_await run_stage(c);
  co_return v * 2;
}

// joiner(): spawns the pipeline and lets it park before joining it, so that
// the join itself parks (no inline run of the child).
mpg::task<int> joiner(mpg::chan<int> c) {
  mpg::join_handle<int> h = mpg::spawn(pipeline(c), "pipeline");
  for (int i = 0; i < 3; ++i) co_await mpg::yield();
  join_line = __LINE__; int v = co_await h;
  co_return v;
}

// inline_joiner(): joins at once, so the join claims the child and runs it
// inline on this G: the child's frames join this task's chain.
mpg::task<int> inline_joiner(mpg::chan<int> c) {
  mpg::join_handle<int> h = mpg::spawn(consume(c), "consume");
  join_line = __LINE__; int v = co_await h;
  co_return v;
}

std::atomic<int> lock_line{0}, locker_line{0};

mpg::task<void> take_lock(mpg::mutex* m) {
  lock_line = __LINE__; co_await m->lock();
  m->unlock();
}

mpg::task<void> locker(mpg::mutex* m) {
  locker_line = __LINE__; co_await take_lock(m);
}

std::atomic<int> read_line{0}, reader_line{0};

mpg::task<std::size_t> read_some(mpg::net::tcp_stream* s) {
  char buf[16];
  read_line = __LINE__; auto n = co_await s->read(std::span<char>(buf));
  co_return n.ok() ? *n : 0;
}

std::atomic<int> receive_line{0};

mpg::task<std::size_t> receive_some(mpg::net::tcp_stream* s) {
  receive_line = __LINE__; auto b = co_await s->receive();
  co_return b.ok() ? b->size() : 0;
}

mpg::task<std::size_t> reader(mpg::net::tcp_stream* s) {
  reader_line = __LINE__; co_return co_await read_some(s);
}

}  // namespace chain_test

namespace {

std::string dump_of(const mpg::runtime& rt) {
  std::ostringstream os;
  rt.dump(os);
  return os.str();
}

// wait_for_dump(): the dump once it contains `what` (bounded: the task under
// test parks within a few scheduling rounds; fails the test otherwise).
std::string wait_for_dump(const mpg::runtime& rt, const std::string& what) {
  std::string d;
  for (int i = 0; i < 20000; ++i) {
    d = dump_of(rt);
    if (d.find(what) != std::string::npos) return d;
    std::this_thread::yield();
  }
  FAIL("the dump never showed: " << what << "\n" << d);
  return d;
}

// site(): the chain line of a frame: "at FUNCTION FILE:LINE".
std::string site(const std::string& function, int line) {
  return "      at chain_test::" + function + " " + std::string(__FILE__) + ":" +
         std::to_string(line) + "\n";
}

// in_order(): every needle occurs in text, each after the previous one.
bool in_order(const std::string& text, std::initializer_list<std::string> needles) {
  std::size_t at = 0;
  for (const std::string& n : needles) {
    at = text.find(n, at);
    if (at == std::string::npos) return false;
    at += n.size();
  }
  return true;
}

// Captures what fn writes to stderr (the leak report of ~runtime).
template <class F>
std::string capture_stderr(F&& fn) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = dup(2);
  dup2(fileno(tmp), 2);
  fn();
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  std::rewind(tmp);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, tmp)) > 0;) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

}  // namespace

TEST_CASE("dump shows a three-deep chain parked on a channel, innermost first") {
  mpg::runtime rt({.procs = 2});
  mpg::chan<int> c;
  auto h = rt.spawn(chain_test::pipeline(c));
  const std::string d = wait_for_dump(rt, "chan receive");
  INFO(d);
  CHECK(in_order(d, {"[waiting: chan receive at ",
                     site("consume(mpg::chan<int>)", chain_test::consume_line),
                     site("run_stage(mpg::chan<int>)", chain_test::stage_line),
                     site("pipeline(mpg::chan<int>)", chain_test::pipeline_line)}));
  // The task line names the innermost function as the source spells it.
  CHECK(d.find(" in chain_test::consume(mpg::chan<int>)]") != std::string::npos);
  CHECK(d.find(".Frame") == std::string::npos);
  CHECK(d.find("at mpg::task") == std::string::npos);
  CHECK(c.try_send(20));
  CHECK(rt.block_on(std::move(h)) == 42);
}

TEST_CASE("a join that parks reports the caller's co_await, with its chain") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c;
  auto h = rt.spawn(chain_test::joiner(c), "joiner");
  const std::string d = wait_for_dump(rt, "[waiting: join at ");
  INFO(d);
  const std::string join_site = std::string(__FILE__) + ":" + std::to_string(chain_test::join_line);
  CHECK(d.find("(joiner) [waiting: join at " + join_site +
               " in chain_test::joiner(mpg::chan<int>)]") != std::string::npos);
  CHECK(d.find("scheduler.cpp") == std::string::npos);
  CHECK(in_order(
      d, {"(joiner) [waiting: join", site("joiner(mpg::chan<int>)", chain_test::join_line)}));
  // The joined task's own chain is there too.
  CHECK(in_order(d, {"(pipeline) [waiting: chan receive",
                     site("consume(mpg::chan<int>)", chain_test::consume_line),
                     site("pipeline(mpg::chan<int>)", chain_test::pipeline_line)}));
  CHECK(c.try_send(1));
  CHECK(rt.block_on(std::move(h)) == 4);
}

TEST_CASE("a child joined inline is part of its joiner's chain") {
  mpg::runtime rt({.procs = 1});
  mpg::chan<int> c;
  auto h = rt.spawn(chain_test::inline_joiner(c), "joiner");
  const std::string d = wait_for_dump(rt, "chan receive");
  INFO(d);
  CHECK(in_order(d, {"(joiner) [waiting: chan receive",
                     site("consume(mpg::chan<int>)", chain_test::consume_line),
                     site("inline_joiner(mpg::chan<int>)", chain_test::join_line)}));
  CHECK(c.try_send(5));
  CHECK(rt.block_on(std::move(h)) == 5);
}

// How the compiler spells a pointer parameter in a function name.
#ifdef __clang__
constexpr const char* kMutexPtr = "mpg::mutex *";
#else
constexpr const char* kMutexPtr = "mpg::mutex*";
#endif

TEST_CASE("a task parked in the mutex's slow path shows its own frames once") {
  mpg::runtime rt({.procs = 1});
  mpg::mutex m;
  REQUIRE(m.try_lock());
  auto h = rt.spawn(chain_test::locker(&m), "locker");
  const std::string d = wait_for_dump(rt, "mutex lock");
  INFO(d);
  const std::string lock_site =
      site("take_lock(" + std::string(kMutexPtr) + ")", chain_test::lock_line);
  CHECK(in_order(d, {"(locker) [waiting: mutex lock at ", lock_site,
                     site("locker(" + std::string(kMutexPtr) + ")", chain_test::locker_line)}));
  CHECK(d.find(lock_site) == d.rfind(lock_site));  // the slow path's frame is folded in
  CHECK(d.find("mutex.cpp") == std::string::npos);
  m.unlock();
  rt.block_on(std::move(h));
}

#ifdef __clang__
constexpr const char* kStreamPtr = "mpg::net::tcp_stream *";
#else
constexpr const char* kStreamPtr = "mpg::net::tcp_stream*";
#endif

TEST_CASE(
    "a task parked in a socket read shows its co_await, also once the read goes on in a loop") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  mpg::runtime rt({.procs = 1});
  mpg::net::tcp_stream s(fds[0]);
  auto h = rt.spawn(chain_test::reader(&s), "reader");
  // The recv is issued from read_some's own frame (read_op).
  const std::string first = wait_for_dump(rt, "net.read");
  const std::string read_site =
      site("read_some(" + std::string(kStreamPtr) + ")", chain_test::read_line);
  const std::string reader_site =
      site("reader(" + std::string(kStreamPtr) + ")", chain_test::reader_line);
  CHECK_MESSAGE(in_order(first, {"(reader) [waiting: net.read at ", read_site, reader_site}),
                first);
  // A deadline set while the recv is in flight kicks it: the rest of the
  // read runs in the stream's read loop (a task frame of its own), which
  // parks inside the library.
  rt.block_on([](mpg::net::tcp_stream* s) -> mpg::task<void> {
    s->set_read_deadline(std::chrono::steady_clock::now() + std::chrono::hours(1));
    co_return;
  }(&s));
  {
    const std::string d = wait_for_dump(rt, "do_read");
    INFO(d);
    CHECK(in_order(
        d, {"(reader) [waiting: net.read at ", "net.cpp:", "do_read", read_site, reader_site}));
  }
  REQUIRE(write(fds[1], "hi", 2) == 2);
  CHECK(rt.block_on(std::move(h)) == 2);
  close(fds[1]);
}

TEST_CASE("a task parked in receive() shows its co_await") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  mpg::runtime rt({.procs = 1});
  mpg::net::tcp_stream s(fds[0]);
  auto h = rt.spawn(chain_test::receive_some(&s), "receiver");
  const std::string d = wait_for_dump(rt, "net.receive");
  const std::string receive_site =
      site("receive_some(" + std::string(kStreamPtr) + ")", chain_test::receive_line);
  CHECK_MESSAGE(in_order(d, {"(receiver) [waiting: net.receive at ", receive_site}), d);
  REQUIRE(write(fds[1], "hey", 3) == 3);
  CHECK(rt.block_on(std::move(h)) == 3);
  close(fds[1]);
}

TEST_CASE("deadlock_error::what() shows the blocked task's chain") {
  mpg::runtime rt({.procs = 2});
  std::string what;
  try {
    rt.block_on(chain_test::pipeline(mpg::chan<int>()));
  } catch (const mpg::deadlock_error& e) {
    what = e.what();
  }
  INFO(what);
  CHECK(in_order(what, {"deadlock", "[waiting: chan receive",
                        site("consume(mpg::chan<int>)", chain_test::consume_line),
                        site("run_stage(mpg::chan<int>)", chain_test::stage_line),
                        site("pipeline(mpg::chan<int>)", chain_test::pipeline_line)}));
}

TEST_CASE("the leak report at ~runtime shows each task's chain") {
  mpg::chan<int> c;
  std::string report = capture_stderr([&] {
    mpg::runtime rt({.procs = 1});
    rt.spawn(chain_test::pipeline(c), "leaked").detach();
    wait_for_dump(rt, "chan receive");
  });
  INFO(report);
  CHECK(in_order(report, {"still alive", "(leaked): waiting on chan receive",
                          site("consume(mpg::chan<int>)", chain_test::consume_line),
                          site("run_stage(mpg::chan<int>)", chain_test::stage_line),
                          site("pipeline(mpg::chan<int>)", chain_test::pipeline_line)}));
}

TEST_CASE("a dump from inside a task stops the other Ps and shows the chains") {
  mpg::runtime rt({.procs = 3});
  mpg::chan<int> c;
  auto parked = rt.spawn(chain_test::pipeline(c), "parked");
  wait_for_dump(rt, "chan receive");
  std::string d = rt.block_on([](const mpg::runtime* r) -> mpg::task<std::string> {
    std::ostringstream os;
    r->dump(os);
    co_return os.str();
  }(&rt));
  INFO(d);
  CHECK(d.find("await chains left out") == std::string::npos);
  CHECK(in_order(d, {"(parked) [waiting: chan receive",
                     site("consume(mpg::chan<int>)", chain_test::consume_line),
                     site("pipeline(mpg::chan<int>)", chain_test::pipeline_line)}));
  CHECK(c.try_send(0));
  CHECK(rt.block_on(std::move(parked)) == 2);
}

TEST_CASE("clean_function_name: no return type, g++'s coroutine bodies named as written") {
  using mpg::detail::clean_function_name;
  CHECK(clean_function_name("void ns::f(f(int, const char*)::_ZN2ns1fEiPKc.Frame*)") ==
        "ns::f(int, const char*)");
  CHECK(clean_function_name("void ns::K::m(ns::K::m(int) const::_ZNK2ns1K1mEi.Frame*)") ==
        "ns::K::m(int) const");
  CHECK(
      clean_function_name("void ns::tf(tf<double>(double, int)::_ZN2ns2tfIdEENS_2coET_i.Frame*)") ==
      "ns::tf<double>(double, int)");
  CHECK(clean_function_name("mpg::task<int> ns::f(int, const char *)") ==
        "ns::f(int, const char *)");
  CHECK(clean_function_name("co ns::tf(T, int) [T = double]") == "ns::tf(T, int) [T = double]");
  CHECK(clean_function_name("auto ns::f(int)::(anonymous class)::operator()(int) const") ==
        "ns::f(int)::(anonymous class)::operator()(int) const");
  CHECK(clean_function_name("int main()") == "main()");
}
