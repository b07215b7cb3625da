// lib/io/fault_injector.cpp: I/O fault injection for tests; the design is in
// fault_injector.hpp.
#include "io/fault_injector.hpp"

#include <errno.h>
#include <liburing.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mpg::detail {

namespace {

constexpr const char* kNames[kFaultKinds] = {"eintr",    "eagain",      "short", "reset",
                                              "overflow", "nomultishot", "nosqe", "nopause",
                                              "misspause", "nocancel"};

constexpr unsigned bit(io_fault f) noexcept { return 1u << static_cast<unsigned>(f); }

// "all": every fault the layer above hides at `rate`: not the missing kernel
// feature, nor the refused arm, which a reader sees, nor the refused pause,
// which does not go by `rate`, nor the missed pause, which drains the P's
// ring (see the header).
constexpr unsigned kAllKinds = ((1u << kFaultKinds) - 1) & ~bit(io_fault::no_multishot) &
                               ~bit(io_fault::no_sqe) & ~bit(io_fault::no_pause) &
                               ~bit(io_fault::miss_pause);

// The faults an opcode may legally produce (see the header).
unsigned eligible(unsigned opcode) noexcept {
  const unsigned retry = bit(io_fault::eintr) | bit(io_fault::eagain);
  const unsigned all_ops = bit(io_fault::overflow);
  switch (opcode) {
    case IORING_OP_RECV:
    case IORING_OP_SEND:
      return all_ops | retry | bit(io_fault::short_io) | bit(io_fault::reset);
    case IORING_OP_RECVMSG:
    case IORING_OP_SENDMSG:
      // Not short: the length lives in the caller's msghdr, which is not ours to change.
      return all_ops | retry | bit(io_fault::reset);
    case IORING_OP_READ:
    case IORING_OP_WRITE:
    case IORING_OP_READV:
    case IORING_OP_WRITEV:
      return all_ops | retry | bit(io_fault::short_io);
    case IORING_OP_ACCEPT:
    case IORING_OP_CONNECT:
    case IORING_OP_OPENAT:
    case IORING_OP_FSYNC:
    case IORING_OP_STATX:
      return all_ops | retry;
    case IORING_OP_POLL_ADD:  // a poll waits; it never reports -EAGAIN
      return all_ops | bit(io_fault::eintr);
    default:
      return all_ops;
  }
}

// shortenable(): a shorter transfer is legal for this SQE: a length of at
// least 2 (iovecs for readv/writev), a plain fd (not fixed, no provided
// buffer), and not a socket other than a stream (a datagram cut short is
// truncated, not continued).
bool shortenable(const io_uring_sqe* sqe) noexcept {
  if (sqe->len < 2 || (sqe->flags & (IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT)) != 0) return false;
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(sqe->fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) return type == SOCK_STREAM;
  return errno == ENOTSOCK;
}

// The smallest rate above 0 taken: a fault in a billion ops. Below it a
// rate means nothing a test could see (a denormal would fault nothing at
// all, the threshold rounding to 0) yet would turn on the kinds that any
// rate above 0 turns on (nomultishot, nopause). Spelled once, as text: the
// error message shows it, and parse_rate reads it as it reads a rate, so
// the bound the message names is the one applied, and is itself taken.
constexpr absl::string_view kMinRateText = "1e-9";

// parse_rate(): rate's value: a plain decimal number (ASCII digits with at
// most one '.' and at least one digit, then optionally an exponent: 'e' or
// 'E', an optional sign, digits), either 0 (no digit but '0' before the
// exponent, whatever the exponent) or in [kMinRateText, 1]. No space, sign,
// hex, inf or nan, as MPG_PROCS and a port take ASCII digits only.
std::optional<double> parse_rate(absl::string_view v) {
  std::size_t i = 0, digits = 0;
  bool dot = false, zero = true;
  for (; i < v.size(); ++i) {
    if (v[i] == '.' && !dot) {
      dot = true;
    } else if (absl::ascii_isdigit(static_cast<unsigned char>(v[i]))) {
      ++digits;
      zero = zero && v[i] == '0';
    } else {
      break;
    }
  }
  if (digits == 0) return std::nullopt;
  if (i < v.size()) {
    if (v[i] != 'e' && v[i] != 'E') return std::nullopt;
    ++i;
    if (i < v.size() && (v[i] == '+' || v[i] == '-')) ++i;
    if (i == v.size()) return std::nullopt;
    for (; i < v.size(); ++i) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(v[i]))) return std::nullopt;
    }
  }
  if (zero) return 0.0;
  // The text is one SimpleAtod reads whole; one out of double's range reads
  // as 0 or infinity, which the range refuses. The bound is read the same
  // way (were it unreadable, every rate would be refused, not every taken).
  double r = 0, min = 0;
  if (!absl::SimpleAtod(v, &r) || !absl::SimpleAtod(kMinRateText, &min)) return std::nullopt;
  if (!(r >= min && r <= 1)) return std::nullopt;
  return r;
}

std::uint64_t splitmix(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

const char* fault_name(io_fault f) noexcept { return kNames[static_cast<unsigned>(f)]; }

fault_config parse_faults(std::string_view spec, std::string* errors) {
  fault_config c;
  c.kinds = kAllKinds;
  for (absl::string_view pair : absl::StrSplit(absl::string_view(spec.data(), spec.size()), ',',
                                               absl::SkipWhitespace())) {
    const std::size_t eq = pair.find('=');
    absl::string_view key = pair.substr(0, eq);
    absl::string_view value =
        eq == absl::string_view::npos ? absl::string_view() : pair.substr(eq + 1);
    auto bad = [&](absl::string_view want) {
      // Escaped: a pair holding a line break stays on its one line.
      absl::StrAppend(errors, "ignoring \"", absl::CHexEscape(pair), "\" (", want, ")\n");
    };
    if (key == "rate") {
      if (const std::optional<double> r = parse_rate(value)) {
        c.rate = *r;
      } else {
        bad(absl::StrCat("want rate=0 or a plain decimal number in [", kMinRateText, ", 1]"));
      }
    } else if (key == "seed") {
      // ASCII digits only (from_chars: no space, no sign), as MPG_PROCS.
      std::uint64_t s = 0;
      const char* const end = value.data() + value.size();
      const auto [stop, ec] = std::from_chars(value.data(), end, s);
      if (value.empty() || ec != std::errc{} || stop != end) {
        bad("want seed=an unsigned integer");
      } else {
        c.seed = s;
        c.seeded = true;
      }
    } else if (key == "kinds") {
      unsigned kinds = 0;
      bool ok = !value.empty();
      for (absl::string_view k : absl::StrSplit(value, '+')) {
        unsigned found = k == "all" ? kAllKinds : 0;
        for (unsigned i = 0; i < kFaultKinds; ++i) {
          if (k == kNames[i]) found = 1u << i;
        }
        if (found == 0) ok = false;
        kinds |= found;
      }
      if (!ok) {
        bad("want kinds=names joined by '+' from eintr, eagain, short, reset, overflow, "
            "nomultishot, nosqe, nopause, misspause, nocancel, all");
      } else {
        c.kinds = kinds;
      }
    } else {
      bad("unknown key; want rate, kinds, seed");
    }
  }
  return c;
}

fault_config faults_from_options(const char* option) {
  const char* source = "runtime_options::io_faults";
  const char* spec = option;
  if (spec == nullptr) {
    source = "MPG_FAULTS";
    spec = std::getenv("MPG_FAULTS");
    if (spec == nullptr) return {};
  }
  std::string errors;
  fault_config c = parse_faults(spec, &errors);
  for (absl::string_view line : absl::StrSplit(errors, '\n', absl::SkipEmpty())) {
    std::fprintf(stderr, "mpg: %s: %.*s\n", source, static_cast<int>(line.size()), line.data());
  }
  if (c.on() && !c.seeded) {
    c.seed = static_cast<std::uint64_t>(
        std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return c;
}

fault_injector::fault_injector(const fault_config& c, std::uint64_t stream, bool msg_ring) noexcept
    : threshold_(c.rate >= 1 ? UINT64_MAX
                             : static_cast<std::uint64_t>(c.rate * 18446744073709551616.0)),
      kinds_(c.kinds),
      msg_ring_(msg_ring),
      state_(splitmix(c.seed ^ splitmix(stream))) {}

std::uint64_t fault_injector::next() noexcept {
  state_ = splitmix(state_);
  return state_;
}

void fault_injector::plan(io_op* op, io_uring_sqe* sqe) noexcept {
  op->fault = io_fault_plan::none;
  if (next() >= threshold_) return;
  const unsigned can = eligible(sqe->opcode) & kinds_;
  if (can == 0) return;
  // Uniform among the kinds allowed here.
  unsigned pick = static_cast<unsigned>(next() % static_cast<unsigned>(__builtin_popcount(can)));
  unsigned k = 0;
  for (;; ++k) {
    if ((can & (1u << k)) != 0 && pick-- == 0) break;
  }
  const io_fault f = static_cast<io_fault>(k);
  switch (f) {
    case io_fault::eintr:
    case io_fault::eagain:
    case io_fault::reset:
      io_uring_prep_nop(sqe);
      break;
    case io_fault::short_io:
      if (!shortenable(sqe)) return;
      sqe->len = 1 + static_cast<unsigned>(next() % (sqe->len - 1));
      count(f);
      break;
    default:
      break;
  }
  op->fault = static_cast<io_fault_plan>(static_cast<unsigned>(f) + 1);
}

void fault_injector::plan_multishot(io_op* op, io_uring_sqe* sqe) noexcept {
  op->fault = io_fault_plan::none;
  if ((kinds_ & bit(io_fault::no_multishot)) == 0) return;
  io_uring_prep_nop(sqe);
  op->fault = io_fault_plan::no_multishot;
}

bool fault_injector::refuse_sqe() noexcept {
  if ((kinds_ & bit(io_fault::no_sqe)) == 0 || next() >= threshold_) return false;
  count(io_fault::no_sqe);
  return true;
}

bool fault_injector::refuse_pause() noexcept {
  if ((kinds_ & bit(io_fault::no_pause)) == 0) return false;
  pause_refused_ = !pause_refused_;
  if (pause_refused_) count(io_fault::no_pause);
  return pause_refused_;
}

bool fault_injector::refuse_cancel() noexcept {
  if ((kinds_ & bit(io_fault::no_cancel)) == 0 || next() >= threshold_) return false;
  count(io_fault::no_cancel);
  return true;
}

bool fault_injector::miss_pause() noexcept {
  if ((kinds_ & bit(io_fault::miss_pause)) == 0 || next() >= threshold_) return false;
  count(io_fault::miss_pause);
  return true;
}

fault_injector::verdict fault_injector::on_cqe(std::uint64_t* user_data, int* res,
                                               std::uint32_t flags) noexcept {
  if (*user_data < 8) return verdict::deliver;  // the reactor's own tags
  if ((*user_data & 7) == kCarrierTag) {
    if (*res >= 0) return verdict::carrier_done;
    // The re-post failed (the kernel could not allocate an overflow entry):
    // the held CQE was not posted, so its op is still waiting for it.
    *user_data &= ~std::uint64_t{7};
    io_op* op = reinterpret_cast<io_op*>(static_cast<std::uintptr_t>(*user_data));
    *res = op->res;
    return verdict::carrier_failed;
  }
  io_op* op = reinterpret_cast<io_op*>(static_cast<std::uintptr_t>(*user_data));
  if ((flags & IORING_CQE_F_MORE) != 0 || op->got_first) return verdict::deliver;
  switch (op->fault) {
    case io_fault_plan::eintr:
      *res = -EINTR;
      count(io_fault::eintr);
      break;
    case io_fault_plan::eagain:
      *res = -EAGAIN;
      count(io_fault::eagain);
      break;
    case io_fault_plan::reset:
      *res = -ECONNRESET;
      count(io_fault::reset);
      break;
    case io_fault_plan::no_multishot:
      *res = -EINVAL;
      count(io_fault::no_multishot);
      break;
    case io_fault_plan::overflow:
      op->fault = io_fault_plan::reposted;
      op->res = *res;  // for a carrier that fails
      return verdict::hold;
    default:
      break;
  }
  op->fault = io_fault_plan::none;
  return verdict::deliver;
}

fault_injector::overflow_result fault_injector::overflow(io_uring* ring, std::uint64_t user_data,
                                                         int res,
                                                         std::uint64_t ignore_tag) noexcept {
  overflow_result out;
  // Room left in the CQ, plus a few: the last NOPs and the re-post overflow.
  const unsigned nops = ring->cq.ring_entries - io_uring_cq_ready(ring) + 4;
  auto get = [ring]() -> io_uring_sqe* {
    io_uring_sqe* sqe = io_uring_get_sqe(ring);
    if (sqe == nullptr && io_uring_submit(ring) >= 0) sqe = io_uring_get_sqe(ring);
    return sqe;
  };
  for (unsigned i = 0; i < nops; ++i) {
    io_uring_sqe* sqe = get();
    if (sqe == nullptr) break;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ignore_tag);
    ++out.added;
  }
  if (msg_ring_) {
    if (io_uring_sqe* sqe = get()) {
      io_uring_prep_msg_ring(sqe, ring->ring_fd, static_cast<unsigned>(res), user_data, 0);
      io_uring_sqe_set_data64(sqe, user_data | kCarrierTag);
      ++out.added;
      out.held = true;
    }
  }
  // A refused submit (-EBUSY) leaves the SQEs for the reactor's next flush.
  io_uring_submit(ring);
  count(io_fault::overflow);
  return out;
}

fault_counts fault_injector::counts() const noexcept {
  fault_counts c;
  for (unsigned i = 0; i < kFaultKinds; ++i) {
    c.by_kind[i] = counts_[i].load(std::memory_order_relaxed);  // see the file comment
  }
  return c;
}

}  // namespace mpg::detail
