// test/io_cancel_tests.cpp: a cancel names its op by address (user_data), and
// the io_op of an awaiter is reused at the same address by the next
// operation of the same frame. These tests check that a cancel reaches only
// the op it was issued for: never the next op at that address, whether the
// cancel found its op (0), found it running in io-wq (-EALREADY), found it
// already completed (-ENOENT), or its CQE is reaped after the next op starts.
// The argument is in mpg/detail/io/io_op.hpp ("Cancelling by address").
// The -EALREADY case is also the regression test of io_op::outcome() for an
// io-wq op interrupted by its cancel, whose CQE carries the kernel's
// -ERESTARTSYS: it must read -ECANCELED.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpg/mpg.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "io/reactor.hpp"

namespace {
using namespace std::chrono_literals;
using mpg::task;
using mpg::detail::io_awaiter;
using mpg::detail::io_op;
using mpg::detail::io_opcode;
using mpg::detail::io_request;
using mpg::detail::io_slot;
using mpg::detail::prep_request;
using clock_type = std::chrono::steady_clock;

struct pipe_fds {
  int rd = -1, wr = -1;
  pipe_fds() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rd = fds[0];
    wr = fds[1];
  }
  ~pipe_fds() {
    ::close(rd);
    ::close(wr);
  }
};

// A FIFO in a fresh directory. Opening it for reading blocks until a writer
// opens it; with O_CREAT io_uring issues the open in io-wq straight away
// (without O_CREAT it tries O_NONBLOCK inline, which succeeds on a FIFO), so
// a cancel finds the open running or queued there.
struct fifo_path {
  std::string dir, path;
  fifo_path() {
    char tmpl[] = "/tmp/mpg_io_cancel_XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    path = dir + "/fifo";
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  }
  ~fifo_path() {
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
};

// Threads of this process asleep in the kernel's wait for a FIFO partner:
// the io-wq workers running our FIFO opens (their wchan, from /proc).
int blocked_fifo_opens() {
  int n = 0;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    std::ifstream in(t.path() / "wchan");
    std::string w;
    if (std::getline(in, w) && w == "wait_for_partner") ++n;
  }
  return n;
}

// Yields until pred() holds or 10 s pass; false if it never held.
template <class Pred>
task<bool> until(Pred pred) {
  auto give_up = clock_type::now() + 10s;
  while (!pred()) {
    if (clock_type::now() > give_up) co_return false;
    co_await mpg::yield();
  }
  co_return true;
}

// How the first op of a round ends.
enum class first_end {
  cancel,   // a blocked pipe read, cancelled by the other task
  running,  // an open of a FIFO running in io-wq, cancelled by the other task
  deadline  // a blocked pipe read with a 1 ms deadline (link timeout)
};

struct round_state {
  io_slot slot;
  // phase: 2i+1 from before round i's first op starts, 2i+2 from after it
  // ended (reader, release); acked: i+1 once round i's cancel has been
  // submitted (canceller, release).
  std::atomic<int> phase{0};
  std::atomic<int> acked{0};
  std::atomic<int> bad_first{0};
  std::atomic<int> bad_first_res{0};  // outcome() and cqe res of the last bad first op
  std::atomic<int> bad_first_cqe{0};
  std::atomic<int> bad_second{0};
  std::atomic<int> bad_second_res{0};  // outcome of the last bad second op
  std::atomic<int> moved{0};  // the awaiter's op was not at one address
  std::atomic<int> ran{0};    // first ops seen running (blocked in io-wq) when cancelled
};

// Each round: a first op in the slot that ends by `how`, then a one-byte
// read of the pipe by an awaiter emplaced at the same address, in the same
// slot, which the other task feeds once it is published. The second read
// must return the byte: a cancel meant for the first op would end it with
// -ECANCELED.
task<void> reader(round_state& st, int rounds, first_end how, int pipe_rd, const char* fifo) {
  std::optional<io_awaiter> aw;
  const io_op* first_addr = nullptr;
  char buf[8];
  for (int i = 0; i < rounds; ++i) {
    io_request first{.op = io_opcode::read, .fd = pipe_rd, .addr = buf, .len = sizeof buf};
    if (how == first_end::running) {
      first = io_request{.op = io_opcode::openat, .fd = AT_FDCWD, .addr = const_cast<char*>(fifo),
                         .flags = O_RDONLY | O_CREAT | O_CLOEXEC, .mode = 0600};
    }
    st.phase.store(2 * i + 1, std::memory_order_release);
    if (how == first_end::deadline) {
      aw.emplace(prep_request, &first, &st.slot, "test.first", clock_type::now() + 1ms);
    } else {
      aw.emplace(prep_request, &first, &st.slot, "test.first");
    }
    // Awaited through a named reference: g++ 12 copies an awaiter given as
    // `co_await *aw` and would await the copy.
    io_awaiter& a1 = *aw;
    if (first_addr == nullptr) first_addr = &a1.op;
    if (first_addr != &a1.op) st.moved.fetch_add(1, std::memory_order_relaxed);
    int r1 = co_await a1;
    if (how == first_end::running && r1 >= 0) ::close(r1);
    const int want1 = how == first_end::deadline ? -ETIME : -ECANCELED;
    if (r1 != want1) {
      st.bad_first.fetch_add(1, std::memory_order_relaxed);
      st.bad_first_res.store(r1, std::memory_order_relaxed);
      st.bad_first_cqe.store(a1.op.res, std::memory_order_relaxed);
    }
    if (how != first_end::deadline) {
      // The canceller is done with the slot before the second op starts.
      bool acked =
          co_await until([&] { return st.acked.load(std::memory_order_acquire) == i + 1; });
      if (!acked) st.bad_first.fetch_add(1, std::memory_order_relaxed);
    }
    // Release: orders the first op's dispatch (which cleared the slot)
    // before the other task's reads of the slot for the second op.
    st.phase.store(2 * i + 2, std::memory_order_release);
    io_request second{.op = io_opcode::read, .fd = pipe_rd, .addr = buf, .len = 1};
    aw.emplace(prep_request, &second, &st.slot, "test.second");
    io_awaiter& a2 = *aw;
    a2.op.submit_now = true;  // in the kernel before the canceller writes (below)
    if (first_addr != &a2.op) st.moved.fetch_add(1, std::memory_order_relaxed);
    int r2 = co_await a2;
    if (r2 != 1) {
      st.bad_second.fetch_add(1, std::memory_order_relaxed);
      st.bad_second_res.store(r2, std::memory_order_relaxed);
    }
  }
}

// Cancels each round's first op once it is published in the slot (unless
// it ends by its deadline), then writes the byte for the second op once
// that one is published.
task<void> canceller(round_state& st, int rounds, first_end how, int pipe_wr) {
  bool observable = true;
  for (int i = 0; i < rounds; ++i) {
    if (how != first_end::deadline) {
      bool seen = co_await until([&] {
        // Relaxed slot load: a hint; io_cancel re-checks under the locks.
        return st.phase.load(std::memory_order_acquire) == 2 * i + 1 &&
               st.slot.op.load(std::memory_order_relaxed) != nullptr;
      });
      if (!seen) st.bad_first.fetch_add(1, std::memory_order_relaxed);
      if (how == first_end::running && observable) {
        // Bounded: where wchan is not shown, the first round gives up and
        // the rest do not wait (the check on `ran` then fails).
        observable = co_await until([] { return blocked_fifo_opens() > 0; });
        if (observable) st.ran.fetch_add(1, std::memory_order_relaxed);
      }
      mpg::detail::io_cancel(&st.slot, /*close=*/false);
      st.acked.store(i + 1, std::memory_order_release);
    }
    // Phase 2i+2 was stored after the first op's dispatch cleared the slot,
    // so a non-null slot seen after it is the second op.
    bool published = co_await until([&] {
      return st.phase.load(std::memory_order_acquire) == 2 * i + 2 &&
             st.slot.op.load(std::memory_order_relaxed) != nullptr;
    });
    if (!published) st.bad_second.fetch_add(1, std::memory_order_relaxed);
    // io_start holds the slot lock from publishing the op until its SQE is
    // prepared, and the second op submits at once: once we have had the
    // lock, the read is in the kernel, waiting for this byte.
    st.slot.lock.lock();
    st.slot.lock.unlock();
    if (::write(pipe_wr, "x", 1) != 1) st.bad_second.fetch_add(1, std::memory_order_relaxed);
  }
}

void run_rounds(first_end how, int rounds) {
  mpg::runtime rt({.procs = 2});
  rt.block_on([](first_end how, int rounds) -> task<void> {
    pipe_fds p;
    fifo_path f;
    round_state st;
    auto r = mpg::spawn(reader(st, rounds, how, p.rd, f.path.c_str()));
    auto c = mpg::spawn(canceller(st, rounds, how, p.wr));
    co_await c;
    co_await r;
    CHECK(st.moved.load() == 0);
    INFO("last bad first op: outcome ", st.bad_first_res.load(), ", cqe res ",
         st.bad_first_cqe.load());
    CHECK(st.bad_first.load() == 0);
    INFO("last bad second op: outcome ", st.bad_second_res.load());
    CHECK(st.bad_second.load() == 0);
    // The kernel shows where its workers sleep (wchan): every open was
    // cancelled while running, the -EALREADY path.
    if (how == first_end::running) CHECK(st.ran.load() == rounds);
  }(how, rounds));
}

}  // namespace

TEST_CASE("the kernel resolves an ASYNC_CANCEL when it is issued, in submission order") {
  // What reactor::cancel relies on: a cancel SQE that stays queued in the SQ
  // (submit refused) is still issued before any SQE queued after it, and it
  // looks its target up once; a later op with the same user_data is out of
  // its reach.
  io_uring ring;
  REQUIRE(io_uring_queue_init(8, &ring, 0) == 0);
  pipe_fds p;
  char buf[8];
  constexpr std::uint64_t kKey = 0x1000;
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  io_uring_prep_cancel64(sqe, kKey, 0);
  io_uring_sqe_set_data64(sqe, 1);
  sqe = io_uring_get_sqe(&ring);
  io_uring_prep_read(sqe, p.rd, buf, sizeof buf, 0);
  io_uring_sqe_set_data64(sqe, kKey);
  REQUIRE(io_uring_submit(&ring) == 2);
  io_uring_cqe* cqe = nullptr;
  REQUIRE(io_uring_wait_cqe(&ring, &cqe) == 0);
  CHECK(cqe->user_data == 1);
  CHECK(cqe->res == -ENOENT);
  io_uring_cqe_seen(&ring, cqe);
  REQUIRE(::write(p.wr, "ab", 2) == 2);
  REQUIRE(io_uring_wait_cqe(&ring, &cqe) == 0);
  CHECK(cqe->user_data == kKey);
  CHECK(cqe->res == 2);
  io_uring_cqe_seen(&ring, cqe);

  // The same cancel issued after the read reaches it.
  sqe = io_uring_get_sqe(&ring);
  io_uring_prep_read(sqe, p.rd, buf, sizeof buf, 0);
  io_uring_sqe_set_data64(sqe, kKey);
  sqe = io_uring_get_sqe(&ring);
  io_uring_prep_cancel64(sqe, kKey, 0);
  io_uring_sqe_set_data64(sqe, 1);
  REQUIRE(io_uring_submit(&ring) == 2);
  int seen_read = 0, seen_cancel = 0;
  for (int i = 0; i < 2; ++i) {
    REQUIRE(io_uring_wait_cqe(&ring, &cqe) == 0);
    if (cqe->user_data == kKey) {
      CHECK(cqe->res == -ECANCELED);
      ++seen_read;
    } else {
      CHECK(cqe->res == 0);
      ++seen_cancel;
    }
    io_uring_cqe_seen(&ring, cqe);
  }
  CHECK(seen_read == 1);
  CHECK(seen_cancel == 1);
  io_uring_queue_exit(&ring);
}

TEST_CASE(
    "a cancel that finds its op completed (-ENOENT) leaves the next op at that address alone") {
  // Driven on a bare reactor, so the slot is published by hand as io_start
  // does. The NOP's SQE is submitted together with, and ahead of, the
  // cancel: it completes before the cancel is issued.
  auto made = mpg::detail::reactor::create(16);
  REQUIRE_MESSAGE(made.ok(), made.status().ToString());
  auto& r = *made;
  std::atomic<int> done{0};
  struct counted_op : io_op {
    std::atomic<int>* done = nullptr;
  } op;
  op.complete = [](io_op* o) noexcept {
    static_cast<counted_op*>(o)->done->fetch_add(1, std::memory_order_release);
  };
  op.done = &done;
  io_slot slot;
  auto publish = [&](const io_request* rq) {
    op.res = 0;
    op.got_first = false;
    op.stop = mpg::detail::io_stop::none;
    slot.lock.lock();
    slot.owner = r.get();
    op.slot = &slot;
    slot.op.store(&op);
    r->start(&op, prep_request, rq);
    slot.lock.unlock();
  };
  auto drain = [&](int want) {
    auto give_up = clock_type::now() + 5s;
    while ((done.load(std::memory_order_acquire) < want || r->busy()) &&
           clock_type::now() < give_up) {
      r->wait(clock_type::now() + 100ms);
    }
  };
  io_request nop{};
  publish(&nop);
  mpg::detail::io_cancel(&slot, /*close=*/false);  // submits the NOP, then the cancel
  drain(1);
  REQUIRE(done.load() == 1);
  CHECK(op.outcome() == 0);  // the NOP won: the cancel found nothing
  CHECK_FALSE(r->busy());    // the cancel's own CQE is reaped too

  pipe_fds p;
  char buf[8];
  io_request rd{.op = io_opcode::read, .fd = p.rd, .addr = buf, .len = sizeof buf};
  publish(&rd);  // same io_op, same slot
  r->flush();
  CHECK(r->reap() == 0);
  CHECK(r->busy());
  REQUIRE(::write(p.wr, "hi", 2) == 2);
  drain(2);
  REQUIRE(done.load() == 2);
  CHECK(op.outcome() == 2);
}

TEST_CASE(
    "a cancelled read, then a read by the same awaiter in the same slot: the second is not "
    "cancelled") {
  run_rounds(first_end::cancel, 300);
}

TEST_CASE(
    "a cancel that finds its op running in io-wq (-EALREADY) ends it with -ECANCELED and does not "
    "reach the next op") {
  run_rounds(first_end::running, 100);
}

TEST_CASE(
    "a read that timed out, then a read by the same awaiter in the same slot: the second "
    "completes") {
  run_rounds(first_end::deadline, 50);
}
