// lib/sched/trace.cpp: the execution trace of a runtime as Chrome
// trace-event JSON (the format chrome://tracing and Perfetto open).
//
// What is recorded, one track (tid) per M:
//   - "X" span per run of a task: from the M resuming it until it suspends
//     (or finishes), named after the task ("task <id>" when unnamed);
//   - "X" spans for mpg::blocking calls (inside the run of their task) and
//     for the M's sleeps: "io_uring wait" (asleep in the ring of the P it
//     holds) and "idle" (asleep on its futex);
//   - instant events: "park" (the reason and the site where the task waits),
//     "steal" (the victim P and how many tasks), "timer" (a timer fired).
//
// Protocol. Each M appends to its own trace_buffer, without a lock; the
// buffer is attached when the M starts (trace_recorder::attach, under the
// recorder's lock, once per M) and read only by write(), which ~runtime
// calls after stop() has joined every M: the join orders every append
// before the read. Events of threads that are not Ms of this runtime
// (sysmon running a stuck P's timers, plain threads) are not recorded.
// Timestamps are CLOCK_MONOTONIC ns, written relative to the runtime's
// construction in microseconds, the unit of the format.
#include "sched/trace.hpp"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "mpg/detail/sched/clock.hpp"
#include "mpg/detail/sched/g.hpp"
#include "sched/machine.hpp"

namespace mpg::detail {

void trace_buffer::add(const trace_event& e) noexcept {
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  try {
    events_.push_back(e);
  } catch (const std::bad_alloc&) {
    ++dropped_;
  }
}

std::atomic<std::uint32_t> tracing_runtimes{0};

namespace {

trace_buffer* current_buffer() noexcept {
  machine* m = current_m();
  return m != nullptr ? m->trace : nullptr;
}

void append_escaped(std::string& out, const char* s) {
  out.push_back('"');
  for (; *s != '\0'; ++s) {
    const unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out.append(buf);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
}

void append_u64(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// append_us(): ns as microseconds with three decimals (the format's unit).
void append_us(std::string& out, std::int64_t ns) {
  if (ns < 0) {
    out.push_back('-');
    ns = -ns;
  }
  append_u64(out, static_cast<std::uint64_t>(ns) / 1000);
  const unsigned frac = static_cast<unsigned>(ns % 1000);
  const char digits[4] = {'.', static_cast<char>('0' + frac / 100),
                          static_cast<char>('0' + frac / 10 % 10),
                          static_cast<char>('0' + frac % 10)};
  out.append(digits, 4);
}

void append_head(std::string& out, const char* ph, std::int64_t ts_ns, std::uint32_t tid) {
  out.append("{\"ph\":\"");
  out.append(ph);
  out.append("\",\"pid\":1,\"tid\":");
  append_u64(out, tid);
  out.append(",\"ts\":");
  append_us(out, ts_ns);
}

void append_span_head(std::string& out, const trace_event& e, std::int64_t ts, std::uint32_t tid) {
  append_head(out, "X", ts, tid);
  out.append(",\"dur\":");
  append_us(out, e.dur_ns);
}

void append_event(std::string& out, const trace_event& e, std::int64_t start_ns,
                  std::uint32_t tid) {
  const std::int64_t ts = e.ts_ns - start_ns;
  switch (e.kind) {
    case trace_kind::run:
      append_span_head(out, e, ts, tid);
      out.append(",\"cat\":\"task\",\"name\":");
      if (e.name != nullptr) {
        append_escaped(out, e.name);
      } else {
        out.append("\"task ");
        append_u64(out, e.gid);
        out.push_back('"');
      }
      out.append(",\"args\":{\"task\":");
      append_u64(out, e.gid);
      out.append("}}");
      break;
    case trace_kind::blocking:
      append_span_head(out, e, ts, tid);
      out.append(",\"cat\":\"blocking\",\"name\":\"blocking\",\"args\":{\"task\":");
      append_u64(out, e.gid);
      out.append("}}");
      break;
    case trace_kind::wait_ring:
      append_span_head(out, e, ts, tid);
      out.append(",\"cat\":\"wait\",\"name\":\"io_uring wait\"}");
      break;
    case trace_kind::wait_futex:
      append_span_head(out, e, ts, tid);
      out.append(",\"cat\":\"wait\",\"name\":\"idle\"}");
      break;
    case trace_kind::park: {
      append_head(out, "i", ts, tid);
      out.append(",\"s\":\"t\",\"cat\":\"park\",\"name\":\"park\",\"args\":{\"task\":");
      append_u64(out, e.gid);
      if (e.name != nullptr) {
        out.append(",\"name\":");
        append_escaped(out, e.name);
      }
      out.append(",\"reason\":");
      append_escaped(out, e.reason != nullptr ? e.reason : "?");
      const char* file = e.where.file_name();
      if (file != nullptr && *file != '\0') {
        out.append(",\"site\":");
        append_escaped(out, file);
        out.pop_back();  // the closing quote: the line follows
        out.push_back(':');
        append_u64(out, e.where.line());
        out.push_back('"');
      }
      out.append("}}");
      break;
    }
    case trace_kind::steal:
      append_head(out, "i", ts, tid);
      out.append(",\"s\":\"t\",\"cat\":\"steal\",\"name\":\"steal\",\"args\":{\"from\":\"P");
      append_u64(out, e.arg);
      out.append("\",\"tasks\":");
      append_u64(out, e.count);
      out.append("}}");
      break;
    case trace_kind::timer:
      append_head(out, "i", ts, tid);
      out.append(",\"s\":\"t\",\"cat\":\"timer\",\"name\":\"timer\",\"args\":{\"P\":");
      append_u64(out, e.arg);
      out.append("}}");
      break;
  }
}

}  // namespace

trace_recorder::trace_recorder(std::string path)
    : path_(std::move(path)), start_ns_(mono_now_ns()) {
  // Relaxed: see trace.hpp; the Ms that will record start after this.
  tracing_runtimes.fetch_add(1, std::memory_order_relaxed);
}

trace_recorder::~trace_recorder() { tracing_runtimes.fetch_sub(1, std::memory_order_relaxed); }

trace_buffer* trace_recorder::attach(std::uint32_t m_id) {
  thread_mutex_lock l(mu_);
  buffers_.push_back(std::make_unique<trace_buffer>(m_id));
  return buffers_.back().get();
}

void trace_recorder::write() {
  thread_mutex_lock l(mu_);
  if (written_) return;
  written_ = true;
  std::FILE* f = std::fopen(path_.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "mpg: cannot write the trace to %s: %s\n", path_.c_str(),
                 std::strerror(errno));
    return;
  }
  std::string out = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  out.append(
      "{\"ph\":\"M\",\"pid\":1,\"tid\":0,\"name\":\"process_name\","
      "\"args\":{\"name\":\"mpg runtime\"}}");
  std::uint64_t dropped = 0;
  for (const auto& b : buffers_) {
    const std::uint32_t tid = b->m_id() + 1;  // tid 0 would be the process track in some viewers
    out.append(",\n{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(tid) +
               ",\"name\":\"thread_name\",\"args\":{\"name\":\"M" + std::to_string(b->m_id()) +
               "\"}}");
    out.append(",\n{\"ph\":\"M\",\"pid\":1,\"tid\":" + std::to_string(tid) +
               ",\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":" + std::to_string(tid) +
               "}}");
    for (const trace_event& e : b->events()) {
      out.append(",\n");
      append_event(out, e, start_ns_, tid);
      if (out.size() > (std::size_t{1} << 20)) {
        std::fwrite(out.data(), 1, out.size(), f);
        out.clear();
      }
    }
    dropped += b->dropped();
  }
  out.append("\n],\"otherData\":{\"dropped_events\":" + std::to_string(dropped) + "}}\n");
  std::fwrite(out.data(), 1, out.size(), f);
  if (std::fclose(f) != 0)
    std::fprintf(stderr, "mpg: error writing the trace to %s: %s\n", path_.c_str(),
                 std::strerror(errno));
}

// --- the hooks ---------------------------------------------------------------

void traced_resume(machine* m, g* gp) {
  trace_event e{};
  e.kind = trace_kind::run;
  e.gid = gp->id.load(std::memory_order_relaxed);
  e.name = gp->name.load(std::memory_order_relaxed);
  e.ts_ns = mono_now_ns();
  gp->resume.resume();  // gp may be retired or run elsewhere from here on
  e.dur_ns = mono_now_ns() - e.ts_ns;
  m->trace->add(e);
}

void trace_park(g* gp, const char* reason, std::source_location where) noexcept {
  trace_buffer* b = current_buffer();
  if (b == nullptr) return;
  trace_event e{};
  e.kind = trace_kind::park;
  e.ts_ns = mono_now_ns();
  e.gid = gp->id.load(std::memory_order_relaxed);
  e.name = gp->name.load(std::memory_order_relaxed);
  e.reason = reason;
  e.where = where;
  b->add(e);
}

void trace_steal(machine* m, std::uint32_t victim, std::uint32_t count) noexcept {
  trace_event e{};
  e.kind = trace_kind::steal;
  e.ts_ns = mono_now_ns();
  e.arg = victim;
  e.count = count;
  m->trace->add(e);
}

void trace_timer_fired(std::uint32_t p_id) noexcept {
  trace_buffer* b = current_buffer();
  if (b == nullptr) return;
  trace_event e{};
  e.kind = trace_kind::timer;
  e.ts_ns = mono_now_ns();
  e.arg = p_id;
  b->add(e);
}

void trace_blocking_enter(machine* m) noexcept { m->trace->blocking_since = mono_now_ns(); }

void trace_blocking_exit(machine* m, g* gp) noexcept {
  trace_event e{};
  e.kind = trace_kind::blocking;
  e.ts_ns = m->trace->blocking_since;
  e.dur_ns = mono_now_ns() - e.ts_ns;
  e.gid = gp->id.load(std::memory_order_relaxed);
  m->trace->add(e);
}

void trace_sleep(machine* m, bool in_ring, std::int64_t since_ns) noexcept {
  trace_event e{};
  e.kind = in_ring ? trace_kind::wait_ring : trace_kind::wait_futex;
  e.ts_ns = since_ns;
  e.dur_ns = mono_now_ns() - since_ns;
  m->trace->add(e);
}

}  // namespace mpg::detail
