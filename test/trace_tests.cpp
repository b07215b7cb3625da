// runtime_options.trace_file / MPG_TRACE: the run as Chrome trace-event
// JSON, written by ~runtime: a track per M, a span per task run named after
// the task, instant events for parks, steals and timers.
#include <doctest/doctest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mpg/detail/sync/cpu_relax.hpp"
#include "mpg/mpg.hpp"
#include "stderr_capture.hpp"
#include "watchdog.hpp"

using namespace std::chrono_literals;

namespace {

// A small JSON reader, enough to check that the file is valid JSON (RFC
// 8259 syntax: objects, arrays, strings with escapes, numbers, literals)
// and to look at its events. Throws std::runtime_error on bad input.
struct json {
  enum kind_t { null, boolean, number, string, array, object } kind = null;
  double num = 0;
  std::string str;
  std::vector<json> items;
  std::map<std::string, json> fields;
  const json* get(const std::string& k) const {
    auto it = fields.find(k);
    return it == fields.end() ? nullptr : &it->second;
  }
  std::string s(const std::string& k) const {
    const json* v = get(k);
    return v && v->kind == string ? v->str : std::string();
  }
};

class json_reader {
 public:
  explicit json_reader(const std::string& text) : t_(text) {}
  json parse() {
    json v = value();
    ws();
    if (i_ != t_.size()) fail("trailing text");
    return v;
  }

 private:
  [[noreturn]] void fail(const char* what) {
    throw std::runtime_error(std::string("bad JSON: ") + what + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r'))
      ++i_;
  }
  char peek() {
    ws();
    if (i_ >= t_.size()) fail("unexpected end");
    return t_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail("unexpected character");
    ++i_;
  }
  json value() {
    const char c = peek();
    json v;
    if (c == '{') {
      v.kind = json::object;
      ++i_;
      if (peek() == '}') { ++i_; return v; }
      for (;;) {
        if (peek() != '"') fail("object key");
        std::string k = str();
        expect(':');
        v.fields[k] = value();
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = json::array;
      ++i_;
      if (peek() == ']') { ++i_; return v; }
      for (;;) {
        v.items.push_back(value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = json::string;
      v.str = str();
      return v;
    }
    for (const char* lit : {"true", "false", "null"}) {
      if (t_.compare(i_, std::strlen(lit), lit) == 0) {
        i_ += std::strlen(lit);
        v.kind = lit[0] == 'n' ? json::null : json::boolean;
        return v;
      }
    }
    const std::size_t start = i_;
    if (t_[i_] == '-') ++i_;
    if (i_ >= t_.size() || !std::isdigit(static_cast<unsigned char>(t_[i_]))) fail("value");
    if (t_[i_] == '0') ++i_;
    else while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    if (i_ < t_.size() && t_[i_] == '.') {
      ++i_;
      if (i_ >= t_.size() || !std::isdigit(static_cast<unsigned char>(t_[i_]))) fail("fraction");
      while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    }
    if (i_ < t_.size() && (t_[i_] == 'e' || t_[i_] == 'E')) {
      ++i_;
      if (i_ < t_.size() && (t_[i_] == '+' || t_[i_] == '-')) ++i_;
      if (i_ >= t_.size() || !std::isdigit(static_cast<unsigned char>(t_[i_]))) fail("exponent");
      while (i_ < t_.size() && std::isdigit(static_cast<unsigned char>(t_[i_]))) ++i_;
    }
    v.kind = json::number;
    v.num = std::stod(t_.substr(start, i_ - start));
    return v;
  }
  std::string str() {
    ++i_;  // the opening quote
    std::string out;
    for (;;) {
      if (i_ >= t_.size()) fail("unterminated string");
      const char c = t_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
      if (c != '\\') { out.push_back(c); continue; }
      if (i_ >= t_.size()) fail("escape");
      const char e = t_[i_++];
      if (e == 'u') {
        if (i_ + 4 > t_.size()) fail("\\u escape");
        for (int k = 0; k < 4; ++k)
          if (!std::isxdigit(static_cast<unsigned char>(t_[i_ + k]))) fail("\\u escape");
        out.push_back('?');
        i_ += 4;
      } else if (std::string_view("\"\\/bfnrt").find(e) != std::string_view::npos) {
        out.push_back(e);
      } else {
        fail("escape");
      }
    }
  }
  const std::string& t_;
  std::size_t i_ = 0;
};

json read_trace(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "no trace file at " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return json_reader(ss.str()).parse();
}

std::string temp_dir() {
  char tmpl[] = "/tmp/mpg_trace_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

mpg::task<int> helper(std::atomic<bool>* started, mpg::chan<int> c) {
  started->store(true, std::memory_order_release);
  co_await c.send(7);
  co_return 1;
}

// holder spawns helper into its own P's queue and then keeps that P busy
// without suspending until helper has started: helper can only run on the
// other M, taken from holder's P by stealing (sysmon marks a stuck P's
// runnext stealable after a millisecond). Then one of the two parks on the
// unbuffered channel, whichever comes first.
mpg::task<int> holder(std::atomic<bool>* started) {
  mpg::chan<int> c;
  auto h = mpg::spawn(helper(started, c), "helper");
  while (!started->load(std::memory_order_acquire)) mpg::detail::cpu_relax();
  auto v = co_await c.recv();
  co_await mpg::sleep_for(1ms);  // a timer firing
  co_return *v + co_await h;
}

mpg::task<int> add_one(int x) { co_return x + 1; }

}  // namespace

TEST_CASE("trace_file: valid JSON, task spans named and on two tracks, parks, steals, timers") {
  const std::string dir = temp_dir();
  const std::string path = dir + "/run.json";
  {
    mpg_test::watchdog wd(30s, "holder waits for helper to be stolen");
    mpg::runtime rt({.procs = 2, .trace_file = path});
    std::atomic<bool> started{false};
    CHECK(rt.block_on(rt.spawn(holder(&started), "holder")) == 8);
  }
  const json doc = read_trace(path);
  const json* events = doc.get("traceEvents");
  REQUIRE(events != nullptr);
  REQUIRE(events->kind == json::array);
  std::map<std::string, std::set<double>> tracks_of;  // task name -> tids of its spans
  std::set<double> thread_names;
  int parks = 0, steals = 0, timers = 0;
  for (const json& e : events->items) {
    REQUIRE(e.kind == json::object);
    const std::string ph = e.s("ph");
    REQUIRE(e.get("tid") != nullptr);
    const double tid = e.get("tid")->num;
    if (ph == "M" && e.s("name") == "thread_name") thread_names.insert(tid);
    if (ph == "X" && e.s("cat") == "task") {
      REQUIRE(e.get("dur") != nullptr);
      CHECK(e.get("dur")->num >= 0);
      tracks_of[e.s("name")].insert(tid);
    }
    if (ph == "i" && e.s("name") == "park") {
      const json* args = e.get("args");
      REQUIRE(args != nullptr);
      const std::string reason = args->s("reason");
      CHECK(!reason.empty());
      if (reason.rfind("chan", 0) == 0) {
        CHECK(args->s("site").find("trace_tests.cpp:") != std::string::npos);
        ++parks;
      }
    }
    if (ph == "i" && e.s("name") == "steal") {
      CHECK(e.get("args")->s("from").rfind("P", 0) == 0);
      ++steals;
    }
    if (ph == "i" && e.s("name") == "timer") ++timers;
  }
  CHECK(tracks_of.count("holder") == 1);
  CHECK(tracks_of.count("helper") == 1);
  std::set<double> task_tracks;
  for (const auto& [name, tids] : tracks_of) task_tracks.insert(tids.begin(), tids.end());
  CHECK(task_tracks.size() >= 2);
  CHECK(thread_names.size() >= 2);
  CHECK(parks >= 1);
  CHECK(steals >= 1);
  CHECK(timers >= 1);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("trace: nothing is written when no trace is configured") {
  ::unsetenv("MPG_TRACE");
  const std::string dir = temp_dir();
  char cwd[4096];
  REQUIRE(::getcwd(cwd, sizeof cwd) != nullptr);
  REQUIRE(::chdir(dir.c_str()) == 0);
  {
    mpg::runtime rt({.procs = 2});
    CHECK(rt.block_on(add_one(1)) == 2);
  }
  REQUIRE(::chdir(cwd) == 0);
  CHECK(::rmdir(dir.c_str()) == 0);  // fails with ENOTEMPTY if a file appeared
}

TEST_CASE("MPG_TRACE: each runtime writes its own file; unnamed tasks are \"task <id>\"") {
  const std::string dir = temp_dir();
  const std::string path = dir + "/env.json";
  ::setenv("MPG_TRACE", path.c_str(), 1);
  {
    mpg::runtime a({.procs = 1});
    mpg::runtime b({.procs = 1});
    CHECK(a.block_on(a.spawn(add_one(1))) == 2);
    CHECK(b.block_on(add_one(2)) == 3);
  }
  ::unsetenv("MPG_TRACE");
  // The first runtime of the process that reads MPG_TRACE gets the path,
  // the next "path.2".
  for (const std::string& p : {path, path + ".2"}) {
    const json doc = read_trace(p);
    bool unnamed = false;
    for (const json& e : doc.get("traceEvents")->items)
      if (e.s("ph") == "X" && e.s("name").rfind("task ", 0) == 0) unnamed = true;
    if (p == path) CHECK_MESSAGE(unnamed, p);  // a.spawn(add_one(1)) has no name
    ::unlink(p.c_str());
  }
  ::rmdir(dir.c_str());
}

TEST_CASE("trace_file: an unwritable path is reported, not fatal") {
  mpg_test::stderr_capture cap;
  {
    mpg::runtime rt({.procs = 1, .trace_file = "/nonexistent-dir/run.json"});
    CHECK(rt.block_on(add_one(1)) == 2);
  }
  REQUIRE(cap.sync());
  CHECK(cap.count("mpg: cannot write the trace to /nonexistent-dir/run.json") == 1);
}
