// perf/site_naming.cpp: how well each candidate way of naming an await site
// names it in the build at hand. The task dump's await chains
// (docs/diagnostics.md) could be built from either of:
//
//   source_location  a std::source_location default argument of the task
//                    promise's await_transform (what mpg records: the
//                    site is a constant, stored when the task awaits)
//   resume address   the coroutine frame's resume pointer (its first word
//                    in the g++ and clang ABIs), symbolized at dump time
//                    with Abseil's symbolizer: nothing stored
//   return address   __builtin_return_address(0) of an out-of-line call
//                    made at the co_await, symbolized: one store
//
// A three-deep chain (outer -> middle -> inner, each a coroutine awaiting
// the next) records all three at each co_await; the program prints what
// each gives next to the function and line that hold the co_await, and a
// summary line:
//
//   site_naming: <way> functions=<right>/3 lines=<right>/3
//
// Build it optimised with each compiler, and once stripped
// (`strip -o s BUILD/perf/site_naming && ./s`), to see which way holds.
// Standard library and Abseil only; it measures the compilers, not mpg.
#include <absl/debugging/symbolize.h>

#include <coroutine>
#include <cstdio>
#include <cstring>
#include <exception>
#include <source_location>
#include <string>
#include <vector>

namespace {

struct record {
  std::source_location where;
  void* resume_fn;
  void* return_address;
};
std::vector<record> g_records;

// A lazy coroutine type, awaited by its parent (symmetric transfer), with
// an await_transform that records the three candidates.
struct chain_task {
  struct promise_type;
  using handle = std::coroutine_handle<promise_type>;

  struct promise_type {
    std::coroutine_handle<> parent;
    chain_task get_return_object() { return chain_task{handle::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct final_awaiter {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(handle h) noexcept {
        std::coroutine_handle<> p = h.promise().parent;
        return p ? p : std::noop_coroutine();
      }
      void await_resume() noexcept {}
    };
    final_awaiter final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }

    // Records the candidates for the co_await being transformed.
    template <class A>
    A&& await_transform(A&& a, std::source_location where = std::source_location::current()) {
      void* resume_fn = *static_cast<void**>(handle::from_promise(*this).address());
      g_records.push_back({where, resume_fn, return_address_here()});
      return static_cast<A&&>(a);
    }
    [[gnu::noinline]] static void* return_address_here() { return __builtin_return_address(0); }
  };

  struct awaiter {
    handle h;
    bool await_ready() noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
      h.promise().parent = parent;
      return h;
    }
    void await_resume() noexcept {}
  };
  awaiter operator co_await() && noexcept { return awaiter{h_}; }

  explicit chain_task(handle h) : h_(h) {}
  chain_task(chain_task&& o) noexcept : h_(o.h_) { o.h_ = {}; }
  ~chain_task() {
    if (h_) h_.destroy();
  }
  handle h_;
};

// The chain; the line of each co_await is kept to check the output.
chain_task inner() { co_await std::suspend_never{}; }
constexpr int kInnerLine = __LINE__ - 1;
chain_task middle() { co_await inner(); }
constexpr int kMiddleLine = __LINE__ - 1;
chain_task outer() { co_await middle(); }
constexpr int kOuterLine = __LINE__ - 1;

std::string symbolized(void* pc) {
  char buf[1024];
  if (!absl::Symbolize(pc, buf, sizeof buf)) return "?";
  return buf;
}

// names(): whether text names the function `fn` (its unqualified name, as
// the symbol or the source_location's function_name() spells it).
bool names(const std::string& text, const char* fn) {
  const std::string want = std::string(fn) + "(";
  return text.find(want) != std::string::npos;
}

}  // namespace

int main(int, char** argv) {
  absl::InitializeSymbolizer(argv[0]);
  chain_task t = outer();
  t.h_.resume();

  // Records come in the order the co_awaits ran: outer, middle, inner.
  const char* fns[] = {"outer", "middle", "inner"};
  const int lines[] = {kOuterLine, kMiddleLine, kInnerLine};
  if (g_records.size() != 3) {
    std::fprintf(stderr, "site_naming: %zu records, expected 3\n", g_records.size());
    return 1;
  }
  int loc_fn = 0, loc_line = 0, res_fn = 0, ret_fn = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    const record& r = g_records[i];
    const std::string loc = r.where.function_name();
    const std::string res = symbolized(r.resume_fn);
    // The return address points after the call: back up one byte so that
    // it symbolizes inside the calling function.
    const std::string ret = symbolized(static_cast<char*>(r.return_address) - 1);
    const bool line_ok = static_cast<int>(r.where.line()) == lines[i];
    loc_fn += names(loc, fns[i]);
    loc_line += line_ok;
    res_fn += names(res, fns[i]);
    ret_fn += names(ret, fns[i]);
    std::printf("co_await in %s() line %d\n", fns[i], lines[i]);
    std::printf("  source_location: %s line %u%s\n", loc.c_str(), r.where.line(),
                line_ok ? "" : " (wrong line)");
    std::printf("  resume address:  %s\n", res.c_str());
    std::printf("  return address:  %s\n", ret.c_str());
  }
  std::printf("site_naming: source_location functions=%d/3 lines=%d/3\n",
              loc_fn, loc_line);
  std::printf("site_naming: resume_address functions=%d/3 lines=0/3\n", res_fn);
  std::printf("site_naming: return_address functions=%d/3 lines=0/3\n", ret_fn);
  return 0;
}
