// test/temp_files.hpp: a temporary directory removed at the end of a test,
// and a file written in one go, for the file and socket-file tests.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace mpg_test {

// temp_dir: a fresh directory under /tmp named from `prefix` (short: Unix
// socket paths live in it), removed with what is left in it when the test
// ends.
struct temp_dir {
  std::string path;
  explicit temp_dir(const std::string& prefix = "mpg_tests") {
    std::string tmpl = "/tmp/" + prefix + ".XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    const std::string cmd = "rm -rf '" + path + "'";
    [[maybe_unused]] const int rc = std::system(cmd.c_str());
  }
};

// write_file(): path holds exactly data (created or truncated).
inline void write_file(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  ::close(fd);
}

}  // namespace mpg_test
