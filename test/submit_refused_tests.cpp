// test/submit_refused_tests.cpp: when the kernel refuses submissions, an
// SQE left in the SQ must not be submitted after close() against whatever
// file reused its number: an operation that must be in the kernel when it
// starts (a file's read: fs.cpp's close gate) is not started (lib/io/
// reactor.cpp, "Submitting now"), and a socket's read queued before its
// close() loses its fd (lib/io/reactor_cancel.cpp, "A close with the op's
// SQE still in the SQ").
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <mpg/fs.hpp>
#include <mpg/mpg.hpp>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "io/fs_hooks.hpp"
#include "io/reactor.hpp"
#include "stream_pair.hpp"
#include "temp_files.hpp"
#include "test_support.hpp"

namespace {

using mpg_test::temp_dir;
using mpg_test::write_file;

// The moment: a read has loaded its file's number and submits it while
// the kernel refuses submissions; another thread closes the file, opens
// another under the same number, lets submissions through again and wakes
// the runtime (a post), whose next flush would submit what the SQ holds.
std::string other_path;
int other_fd = -1;
std::thread closer;
std::atomic<bool> refuse{false};
std::atomic<bool> closer_waits{false};
std::atomic<bool> closer_done{false};
mpg::runtime_handle* handle = nullptr;

bool refuse_while_set() { return refuse.load(); }

void close_and_reuse(mpg::fs::file* f) {
  mpg::detail::g_file_submit_hook.store(nullptr, std::memory_order_relaxed);  // once
  refuse.store(true);
  const int n = f->native_handle();
  closer = std::thread([f, n] {
    (void)f->close();
    int g = ::open(other_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (g >= 0 && g != n) {  // another hole was lower: put it at n, as a racing open could
      ::dup2(g, n);
      ::close(g);
      g = n;
    }
    other_fd = g;
    refuse.store(false);
    closer_done.store(true);
    (void)handle->post([] {});  // the M flushes when it looks for work
  });
  // Until the close either ends or waits for this submission.
  (void)mpg_test::wait_until([] { return closer_done.load() || closer_waits.load(); });
}

}  // namespace

TEST_CASE("a file operation the kernel refuses to take is not submitted after close()") {
  temp_dir dir;
  write_file(dir.path + "/mine", "mine");
  other_path = dir.path + "/other";
  write_file(other_path, "othr");
  mpg::runtime rt({.procs = 1});
  mpg::runtime_handle h = rt.handle();
  handle = &h;
  mpg::detail::g_flush_refuse_hook.store(&refuse_while_set);
  rt.block_on([](std::string path) -> mpg::task<void> {
    auto f = co_await mpg::fs::open(path, O_RDONLY);
    REQUIRE(f.ok());
    mpg::detail::g_file_close_wait_hook.store([] { closer_waits.store(true); });
    mpg::detail::g_file_submit_hook.store(&close_and_reuse);
    std::string buf(4, '\0');
    auto n = co_await f->read_at(std::span<char>(buf), 0);
    closer.join();
    mpg::detail::g_file_close_wait_hook.store(nullptr);
    // Not taken by the kernel, the read is not started (an error: EBUSY,
    // or closed on a retry); reading the other file is what must not be.
    if (n.ok()) CHECK(buf == "mine");
    CHECK(closer_done.load());
    CHECK(!f->is_open());
    if (other_fd >= 0) ::close(other_fd);
  }(dir.path + "/mine"));
  mpg::detail::g_flush_refuse_hook.store(nullptr);
}

namespace {

mpg::task<void> read_into(mpg::net::tcp_stream* s, std::string* out, bool* ok) {
  char buf[16];
  absl::StatusOr<std::size_t> n = co_await s->read(std::span<char>(buf));
  *ok = n.ok();
  if (n.ok()) out->assign(buf, *n);
}

}  // namespace

TEST_CASE("a socket read still in the SQ at close() never reads a socket that reused the number") {
  mpg::runtime rt({.procs = 1});
  mpg::detail::g_flush_refuse_hook.store(&refuse_while_set);
  rt.block_on([]() -> mpg::task<void> {
    mpg_test::stream_pair mine = co_await mpg_test::connect_pair();
    mpg_test::stream_pair other = co_await mpg_test::connect_pair();
    REQUIRE((co_await other.server.write("othr")).ok());
    // From here the kernel takes no SQE: the read below stays in the SQ.
    refuse.store(true);
    std::string got;
    bool read_ok = false;
    auto reader = mpg::spawn(read_into(&mine.client, &got, &read_ok));
    for (int i = 0; i < 1000 && !mine.client.read_pending(); ++i) co_await mpg::yield();
    REQUIRE(mine.client.read_pending());
    const int n = mine.client.native_handle();
    // close() cancels the read and releases n; the number then names the
    // other connection, whose bytes wait, before the kernel takes SQEs again.
    co_await mpg::blocking([&] {
      mine.client.close();
      REQUIRE(::dup2(other.client.native_handle(), n) == n);
      refuse.store(false);
    });
    co_await reader;
    ::close(n);
    CHECK_FALSE(read_ok);
    CHECK(got.empty());
  }());
  mpg::detail::g_flush_refuse_hook.store(nullptr);
}
