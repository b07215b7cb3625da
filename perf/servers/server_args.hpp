// perf/servers/server_args.hpp: the tiny "--name value" command line of the
// server and load programs in perf/servers/.
#pragma once

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <system_error>

namespace perf {

// args: every "--name value" pair; "--flag" alone is "1".
class args {
 public:
  args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) {
        std::fprintf(stderr, "unexpected argument %s\n", argv[i]);
        std::exit(2);
      }
      std::string v =
          (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) ? argv[++i] : "1";
      values_[a.substr(2)] = v;
    }
  }
  std::string str(const std::string& name, const std::string& def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  // int_in(): *out is the value of --name (left alone when absent); false
  // when that is not a whole decimal number in [lo, hi].
  bool int_in(const std::string& name, long lo, long hi, long* out) const {
    auto it = values_.find(name);
    if (it == values_.end()) return true;
    const std::string& v = it->second;
    long n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) return false;
    *out = n;
    return true;
  }
  long num(const std::string& name, long def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : std::strtol(it->second.c_str(), nullptr, 10);
  }

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace perf
