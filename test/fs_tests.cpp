// test/fs_tests.cpp: mpg::fs over io_uring: files read back what was
// written, reads stop at end of file, stat reports the size, errors are
// statuses, and many tasks read one file at once.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <mpg/fs.hpp>
#include <mpg/mpg.hpp>

#include <cstdlib>
#include <string>
#include <vector>

namespace {
using mpg::task;

struct temp_dir {
  std::string path;
  temp_dir() {
    char tmpl[] = "/tmp/mpg_fs_tests.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~temp_dir() { std::system(("rm -rf " + path).c_str()); }
};

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
        co_return n.ok() && *n == kBlock && b == std::string(kBlock, static_cast<char>('A' + i % 26));
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
