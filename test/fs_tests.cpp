// test/fs_tests.cpp: mpg::fs over io_uring: files read back what was
// written, reads stop at end of file, stat reports the size, errors are
// statuses, many tasks read one file at once, an operation racing close()
// never reaches a file that reused the number, bad input is refused, an
// error names its path whole on one line, and an operation awaited outside
// a task throws and leaves close() free.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <mpg/fs.hpp>
#include <mpg/io_error.hpp>
#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "io/fs_hooks.hpp"
#include "temp_files.hpp"
#include "test_support.hpp"

namespace {
using mpg::task;
using mpg_test::temp_dir;
using mpg_test::write_file;

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 251) % 26);
  return s;
}
}  // namespace

TEST_CASE("files read back what was written") {
  temp_dir dir;
  mpg::runtime rt({.procs = 2});
  rt.block_on([](std::string path) -> task<void> {
    const std::string data = pattern(3 * 1024 * 1024 + 17);
    {
      auto f = co_await mpg::fs::open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
      REQUIRE(f.ok());
      CHECK((co_await f->write_at(data, 0)).ok());
      CHECK((co_await f->fsync()).ok());
      CHECK((co_await f->fsync(/*data_only=*/true)).ok());
      CHECK(f->close().ok());
      CHECK(f->close().ok());  // idempotent
    }
    auto info = co_await mpg::fs::stat(path);
    REQUIRE(info.ok());
    CHECK(info->size == data.size());
    CHECK(info->is_regular());

    auto f = co_await mpg::fs::open(path, O_RDONLY);
    REQUIRE(f.ok());
    std::string back(data.size(), '\0');
    auto n = co_await f->read_at(std::span<char>(back), 0);
    REQUIRE(n.ok());
    CHECK(*n == data.size());
    CHECK(back == data);
    // Short only at end of file.
    std::string tail(100, '\0');
    auto m = co_await f->read_at(std::span<char>(tail), data.size() - 10);
    REQUIRE(m.ok());
    CHECK(*m == 10);
    CHECK(tail.substr(0, 10) == data.substr(data.size() - 10));
    auto z = co_await f->read_at(std::span<char>(tail), data.size() + 5);
    REQUIRE(z.ok());
    CHECK(*z == 0);
    auto fi = co_await f->stat();
    REQUIRE(fi.ok());
    CHECK(fi->size == data.size());
  }(dir.path + "/data.bin"));
}

TEST_CASE("write_at at an offset, and many tasks reading one file at once") {
  temp_dir dir;
  mpg::runtime rt({.procs = 2});
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path, O_CREAT | O_RDWR, 0600);
    REQUIRE(f.ok());
    constexpr int kBlocks = 64;
    constexpr std::size_t kBlock = 4096;
    for (int i = 0; i < kBlocks; ++i) {
      std::string b(kBlock, static_cast<char>('A' + i % 26));
      REQUIRE((co_await f->write_at(b, i * kBlock)).ok());
    }
    mpg::fs::file& file = *f;
    std::vector<mpg::join_handle<bool>> readers;
    for (int i = 0; i < kBlocks; ++i) {
      readers.push_back(mpg::spawn([](mpg::fs::file& file, int i) -> task<bool> {
        std::string b(kBlock, '\0');
        auto n = co_await file.read_at(std::span<char>(b), i * kBlock);
        co_return n.ok() && *n == kBlock &&
                  b == std::string(kBlock, static_cast<char>('A' + i % 26));
      }(file, i)));
    }
    bool all = true;
    for (auto& r : readers) all = (co_await r) && all;
    CHECK(all);
  }(dir.path + "/blocks.bin"));
}

TEST_CASE("errors are statuses with the errno's meaning") {
  temp_dir dir;
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path + "/missing", O_RDONLY);
    CHECK(f.status().code() == absl::StatusCode::kNotFound);
    auto s = co_await mpg::fs::stat(path + "/missing");
    CHECK(s.status().code() == absl::StatusCode::kNotFound);
    auto d = co_await mpg::fs::stat(path);
    REQUIRE(d.ok());
    CHECK(d->is_directory());
    mpg::fs::file closed;
    char b[4];
    auto r = co_await closed.read_at(std::span<char>(b), 0);
    CHECK(r.status().code() == absl::StatusCode::kFailedPrecondition);
    auto ro = co_await mpg::fs::open(path + "/ro", O_CREAT | O_RDONLY, 0600);
    REQUIRE(ro.ok());
    auto w = co_await ro->write_at("x", 0);
    CHECK(w.code() == absl::StatusCode::kFailedPrecondition);  // EBADF
  }(dir.path));
}

namespace {
// The moment of the test below: a read has loaded its file's number and
// is about to submit it, while another thread closes the file and opens
// another one under the same number.
std::string other_path;
int other_fd = -1;
std::thread closer;
std::atomic<bool> closer_waits{false};
std::atomic<bool> closer_done{false};

void close_and_reuse(mpg::fs::file* f) {
  mpg::detail::g_file_submit_hook.store(nullptr, std::memory_order_relaxed);  // once
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
    closer_done.store(true);
  });
  // Until the close either ends or waits for this submission.
  (void)mpg_test::wait_until([] { return closer_done.load() || closer_waits.load(); });
}
}  // namespace

TEST_CASE("an operation racing close() never reaches a file that reused the number") {
  temp_dir dir;
  write_file(dir.path + "/mine", "mine");
  other_path = dir.path + "/other";
  write_file(other_path, "othr");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path, O_RDONLY);
    REQUIRE(f.ok());
    mpg::detail::g_file_close_wait_hook.store([] { closer_waits.store(true); });
    mpg::detail::g_file_submit_hook.store(&close_and_reuse);
    std::string buf(4, '\0');
    auto n = co_await f->read_at(std::span<char>(buf), 0);
    closer.join();
    mpg::detail::g_file_close_wait_hook.store(nullptr);
    // The read reached the kernel before close(2): it read its own file.
    // (Refused as closed would do too; reading the other file would not.)
    if (n.ok()) {
      CHECK(buf == "mine");
    } else {
      CHECK(mpg::net::is_closed(n.status()));
    }
    CHECK(closer_waits.load());  // close() waited for the submission
    CHECK(!f->is_open());
    if (other_fd >= 0) ::close(other_fd);
  }(dir.path + "/mine"));
}

TEST_CASE("a lazy stat started after close() reports the file closed") {
  temp_dir dir;
  write_file(dir.path + "/a", "aaaa");
  write_file(dir.path + "/b", "bbbbbbbb");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string d) -> task<void> {
    auto f = co_await mpg::fs::open(d + "/a", O_RDONLY);
    REQUIRE(f.ok());
    auto pending = f->stat();  // a task: nothing runs until awaited
    CHECK(f->close().ok());
    auto g = co_await mpg::fs::open(d + "/b", O_RDONLY);  // likely the same number
    REQUIRE(g.ok());
    auto info = co_await std::move(pending);
    CHECK(mpg::net::is_closed(info.status()));
  }(dir.path));
}

TEST_CASE("bad input: a path with a NUL byte, an offset past INT64_MAX") {
  temp_dir dir;
  write_file(dir.path + "/f", "abcdef");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string d) -> task<void> {
    auto bad = co_await mpg::fs::open(d + std::string("/g\0h", 4), O_CREAT | O_WRONLY, 0600);
    CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(::access((d + "/g").c_str(), F_OK) != 0);  // nothing was created at the cut path
    auto st = co_await mpg::fs::stat(d + std::string("/f\0x", 4));
    CHECK(st.status().code() == absl::StatusCode::kInvalidArgument);
    auto f = co_await mpg::fs::open(d + "/f", O_RDWR);
    REQUIRE(f.ok());
    char b[3];
    // UINT64_MAX is -1 to the kernel: "the current position", which reads.
    auto r = co_await f->read_at(std::span<char>(b), UINT64_MAX);
    CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
    auto r2 = co_await f->read_at(std::span<char>(b), std::uint64_t{INT64_MAX} - 1);
    CHECK(r2.status().code() == absl::StatusCode::kInvalidArgument);  // offset + size overflows
    auto w = co_await f->write_at("xyz", UINT64_MAX);
    CHECK(w.code() == absl::StatusCode::kInvalidArgument);
    auto back = co_await f->read_at(std::span<char>(b), 0);  // nothing was written
    REQUIRE(back.ok());
    CHECK(std::string(b, 3) == "abc");
    mpg::fs::file adopted(-100);  // AT_FDCWD's value: not a file
    CHECK(!adopted.is_open());
    auto s2 = co_await adopted.stat();
    CHECK(mpg::net::is_closed(s2.status()));
  }(dir.path));
}

namespace {
// path_named(): "" if st's message is "<op> \"<path, escaped>\": ..." on one
// line that a C string holds whole (a line break, a NUL or a quote in the
// path escaped by absl::CHexEscape, so that the path shows whole and
// nothing of the message is cut off or split), else the message.
std::string path_named(const absl::Status& st, const char* op, const std::string& path) {
  const std::string msg(st.message());
  const std::string head = absl::StrCat(op, " \"", absl::CHexEscape(path), "\": ");
  const bool ok = msg.find_first_of(std::string("\n\r\0", 3)) == std::string::npos &&
                  msg.starts_with(head) && msg.size() > head.size();
  return ok ? "" : absl::StrCat("message (escaped): ", absl::CHexEscape(msg));
}
}  // namespace

TEST_CASE("an error names its path whole, escaped, on one line") {
  temp_dir dir;
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string d) -> task<void> {
    const std::string missing = d + "/no\nsuch \"file\"\r\x7f\xff";
    auto o = co_await mpg::fs::open(missing, O_RDONLY);
    CHECK(o.status().code() == absl::StatusCode::kNotFound);
    CHECK(path_named(o.status(), "open", missing) == "");
    auto s = co_await mpg::fs::stat(missing);
    CHECK(s.status().code() == absl::StatusCode::kNotFound);
    CHECK(path_named(s.status(), "stat", missing) == "");
    // A NUL: refused before the kernel, naming the path after the NUL too.
    const std::string nul = d + std::string("/g\0h\nafter", 10);
    auto bad = co_await mpg::fs::open(nul, O_CREAT | O_WRONLY, 0600);
    CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(path_named(bad.status(), "open", nul) == "");
    CHECK(std::string(bad.status().message()).ends_with(": the path has a NUL byte"));
    auto bad_stat = co_await mpg::fs::stat(nul);
    CHECK(bad_stat.status().code() == absl::StatusCode::kInvalidArgument);
    CHECK(path_named(bad_stat.status(), "stat", nul) == "");
  }(dir.path));
}

namespace {
// A coroutine of no runtime: an fs await inside it finds no task to park
// (detail::park throws runtime_misuse_error) after its submission counted
// itself on the file.
struct bare_coroutine {
  struct promise_type {
    std::exception_ptr failure;
    bare_coroutine get_return_object() {
      return {std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { failure = std::current_exception(); }
  };
  std::coroutine_handle<promise_type> h;
};

bare_coroutine read_outside_any_task(mpg::fs::file& f) {
  char b[4];
  (void)co_await f.read_at(std::span<char>(b), 0);
}

std::atomic<bool> bare_close_waited{false};
std::atomic<bool> bare_close_done{false};
}  // namespace

TEST_CASE("an fs operation awaited outside a task throws, and close() still returns") {
  temp_dir dir;
  write_file(dir.path + "/f", "abcd");
  const int fd = ::open((dir.path + "/f").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  // On the heap: if close() never returned, the thread spinning in it keeps
  // the file, which is then leaked rather than destroyed under it.
  auto* f = new mpg::fs::file(fd);
  bare_coroutine co = read_outside_any_task(*f);
  REQUIRE(co.h.done());
  bool misuse = false;
  try {
    if (co.h.promise().failure) std::rethrow_exception(co.h.promise().failure);
  } catch (const mpg::runtime_misuse_error&) {
    misuse = true;
  } catch (...) {
  }
  CHECK(misuse);
  co.h.destroy();
  // No operation is being submitted now: close() must not wait at all.
  mpg::detail::g_file_close_wait_hook.store([] { bare_close_waited.store(true); });
  std::thread closer([f] {
    (void)f->close();
    bare_close_done.store(true);
  });
  CHECK(mpg_test::wait_until([] { return bare_close_done.load() || bare_close_waited.load(); }));
  CHECK(!bare_close_waited.load());
  CHECK(bare_close_done.load());
  mpg::detail::g_file_close_wait_hook.store(nullptr);
  if (bare_close_done.load()) {
    closer.join();
    CHECK(!f->is_open());
    delete f;
  } else {
    closer.detach();  // stuck in close() for ever: the failure checked above
  }
}

namespace {
// The moment of the test below: a read is being submitted (counted on the
// gate) while one thread's close() waits for it and a second close() races
// the first.
std::thread first_closer;
std::thread second_closer;
std::atomic<int> close_waits{0};
std::atomic<bool> second_returned{false};
std::atomic<bool> second_saw_open{false};

void race_two_closes(mpg::fs::file* f) {
  mpg::detail::g_file_submit_hook.store(nullptr, std::memory_order_relaxed);  // once
  first_closer = std::thread([f] { (void)f->close(); });
  (void)mpg_test::wait_until([] { return close_waits.load() >= 1; });  // waits for this read
  second_closer = std::thread([f] {
    (void)f->close();
    second_saw_open.store(f->is_open());
    second_returned.store(true);
  });
  // Until the second close() either returns or waits too.
  (void)mpg_test::wait_until([] { return second_returned.load() || close_waits.load() >= 2; });
}
}  // namespace

TEST_CASE("a close() racing another close() returns only once the file is closed") {
  temp_dir dir;
  write_file(dir.path + "/mine", "mine");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path, O_RDONLY);
    REQUIRE(f.ok());
    mpg::detail::g_file_close_wait_hook.store([] { close_waits.fetch_add(1); });
    mpg::detail::g_file_submit_hook.store(&race_two_closes);
    std::string buf(4, '\0');
    auto n = co_await f->read_at(std::span<char>(buf), 0);
    first_closer.join();
    second_closer.join();
    mpg::detail::g_file_close_wait_hook.store(nullptr);
    CHECK(n.ok());  // submitted before the first close(2)
    CHECK(buf == "mine");
    CHECK(close_waits.load() == 2);  // the first for the read, the second for the first
    CHECK(second_returned.load());
    CHECK(!second_saw_open.load());  // the second returned after the descriptor was closed
    CHECK(!f->is_open());
  }(dir.path + "/mine"));
}

namespace {
// The moment of the test below: a read's first pass is being submitted
// while a thread move-assigns another file onto the one it reads (its
// close() waits for this submission).
mpg::fs::file* assign_target = nullptr;
mpg::fs::file* assign_source = nullptr;
std::thread assigner;
std::atomic<bool> assigner_waits{false};
std::atomic<bool> assign_done{false};
std::atomic<bool> first_pass_submitting{false};

void assign_while_submitting(mpg::fs::file*) {
  mpg::detail::g_file_submit_hook.store(nullptr, std::memory_order_relaxed);  // once
  assigner = std::thread([] {
    *assign_target = std::move(*assign_source);
    assign_done.store(true);
  });
  (void)mpg_test::wait_until([] { return assign_done.load() || assigner_waits.load(); });
  first_pass_submitting.store(true);
}

task<absl::StatusOr<std::size_t>> read_into(mpg::fs::file& f, std::span<char> buf) {
  co_return co_await f.read_at(buf, 0);
}
}  // namespace

TEST_CASE("a read in flight when its file is move-assigned never goes on with the new file") {
  temp_dir dir;
  write_file(dir.path + "/short", "aa");  // the read of 4 bytes takes two passes
  write_file(dir.path + "/other", "bbbbbbbb");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string d) -> task<void> {
    auto f = co_await mpg::fs::open(d + "/short", O_RDONLY);
    auto g = co_await mpg::fs::open(d + "/other", O_RDONLY);
    REQUIRE(f.ok());
    REQUIRE(g.ok());
    assign_target = &*f;
    assign_source = &*g;
    mpg::detail::g_file_close_wait_hook.store([] { assigner_waits.store(true); });
    mpg::detail::g_file_submit_hook.store(&assign_while_submitting);
    std::string buf(4, '\0');
    auto reader = mpg::spawn(read_into(*f, std::span<char>(buf)));
    // The reader runs its first pass on the only P while this task yields.
    for (int i = 0; i < 1000 && !first_pass_submitting.load(); ++i) co_await mpg::yield();
    REQUIRE(first_pass_submitting.load());
    // Hold the only P (no yield) until the assignment is done, so that the
    // reader's second pass comes after it.
    CHECK(mpg_test::wait_until([] { return assign_done.load(); }));
    auto n = co_await reader;
    assigner.join();
    mpg::detail::g_file_close_wait_hook.store(nullptr);
    CHECK(assigner_waits.load());  // the assignment's close() waited for the first pass
    CHECK(mpg::net::is_closed(n.status()));  // not 4 bytes, the last two from "other"
    CHECK(buf.substr(0, 2) == "aa");
    CHECK(buf.substr(2) == std::string(2, '\0'));
    // Operations that start now use the file assigned.
    auto again = co_await f->read_at(std::span<char>(buf), 0);
    REQUIRE(again.ok());
    CHECK(buf == "bbbb");
  }(dir.path));
}

namespace {
// The moment of the test below: a submission refused because its file is
// closed holds its count on the gate while another file is move-assigned
// onto it.
std::atomic<int> refusals{0};
void assign_while_refused(mpg::fs::file* f) {
  mpg::detail::g_file_refused_hook.store(nullptr, std::memory_order_relaxed);  // once
  refusals.fetch_add(1);
  *f = std::move(*assign_source);
}
}  // namespace

TEST_CASE("a move-assignment racing a refused submission leaves a usable, closable file") {
  temp_dir dir;
  write_file(dir.path + "/a", "aaaa");
  write_file(dir.path + "/b", "bbbbbbbb");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string d) -> task<void> {
    auto f = co_await mpg::fs::open(d + "/a", O_RDONLY);
    auto g = co_await mpg::fs::open(d + "/b", O_RDONLY);
    REQUIRE(f.ok());
    REQUIRE(g.ok());
    CHECK(f->close().ok());
    assign_source = &*g;
    mpg::detail::g_file_refused_hook.store(&assign_while_refused);
    auto refused = co_await f->stat();  // started on the closed file
    CHECK(refusals.load() == 1);
    CHECK(mpg::net::is_closed(refused.status()));
    REQUIRE(f->is_open());  // the file assigned
    auto info = co_await f->stat();
    CHECK(info.ok());
    if (info.ok()) CHECK(info->size == 8);
    CHECK(f->close().ok());
    CHECK(!f->is_open());  // closed, not leaked
  }(dir.path));
}

// Go's File.WriteAt refuses a file opened with O_APPEND: pwrite(2), and
// io_uring's write, ignore the offset there and append.
TEST_CASE("write_at on a file opened O_APPEND fails and leaves the file alone") {
  temp_dir dir;
  const std::string path = dir.path + "/log";
  write_file(path, "hello");
  mpg::runtime rt({.procs = 1});
  rt.block_on([](std::string path) -> task<void> {
    auto f = co_await mpg::fs::open(path, O_RDWR | O_APPEND);
    REQUIRE(f.ok());
    absl::Status w = co_await f->write_at(std::string_view("XY"), 0);
    CHECK(w.code() == absl::StatusCode::kInvalidArgument);
    std::string back(16, '\0');
    auto n = co_await f->read_at(std::span<char>(back), 0);
    REQUIRE(n.ok());
    back.resize(*n);
    CHECK(back == "hello");
    // A file adopted from a descriptor in append mode, and one moved.
    mpg::fs::file adopted(::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    mpg::fs::file moved(std::move(adopted));
    const absl::Status m = co_await moved.write_at(std::string_view("Z"), 1);
    CHECK(m.code() == absl::StatusCode::kInvalidArgument);
    CHECK(moved.close().ok());
  }(path));
}

// pread(2) and pwrite(2) at an offset of a pipe fail with ESPIPE; io_uring
// would ignore the offset and read the stream's first bytes.
TEST_CASE("read_at and write_at on a pipe fail with ESPIPE") {
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  REQUIRE(::write(p[1], "abcdef", 6) == 6);
  mpg::runtime rt({.procs = 1});
  rt.block_on([](int rfd, int wfd) -> task<void> {
    mpg::fs::file r(rfd), w(wfd);
    char buf[3];
    auto n = co_await r.read_at(std::span<char>(buf), 3);
    CHECK(mpg::errno_of(n.status()) == ESPIPE);
    const absl::Status ws = co_await w.write_at(std::string_view("zz"), 100);
    CHECK(mpg::errno_of(ws) == ESPIPE);
  }(p[0], p[1]));
}
