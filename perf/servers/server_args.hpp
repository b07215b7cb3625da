// perf/servers/server_args.hpp: the tiny "--name value" command line of the
// server and load programs in perf/servers/.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

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
      std::string v = (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) ? argv[++i] : "1";
      values_[a.substr(2)] = v;
    }
  }
  std::string str(const std::string& name, const std::string& def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : it->second;
  }
  long num(const std::string& name, long def) const {
    auto it = values_.find(name);
    return it == values_.end() ? def : std::strtol(it->second.c_str(), nullptr, 10);
  }

 private:
  std::map<std::string, std::string> values_;
};

}  // namespace perf
