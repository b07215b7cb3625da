// test/io_park_switch_tests.cpp: the switch at park for stream operations
// (scheduler.cpp, "Switching at park"). A task that parks on a read or a
// write hands its M to the P's next G without a pass through the loop, so
// the SQE it leaves in its P's ring waits for the loop's next I/O turn
// (find_runnable.cpp, step 2). Checked here: a chain of switches that ends
// with work still queued (at a fairness tick or when its budget is spent)
// does not put that turn off further, and the SQEs are submitted within
// about kBudget tasks; and many connections whose tasks park on reads and
// writes, resumed on either of 2 Ps while their M switches, pass every
// byte (TSan and ASan see any touch of a parked frame).
#include <doctest/doctest.h>

#include <mpg/mpg.hpp>
#include <mpg/net.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "io/reactor.hpp"
#include "sched/machine.hpp"
#include "stream_pair.hpp"
#include "test_support.hpp"

namespace {

using mpg::task;
using mpg::net::tcp_stream;
using mpg_test::connect_pair;
using mpg_test::stream_pair;

// -- The I/O turn after a chain ---------------------------------------------

// A round of one reader and kFillers tasks, all readied at once on the
// runtime's one P by the close of the channel they wait on (ready_chain,
// waitq.hpp: its first waiter into runnext, the rest to the ring's tail in
// order). The reader, spawned last, runs first (spawns run newest first),
// so it waits first and runs first again: its read (of a stream with
// nothing to read) leaves an SQE in the ring and parks, switching to the
// ring's head. Each filler then notes whether an SQE still waits
// unsubmitted and parks on a channel that is never sent on, switching to
// the next: one long chain, cut by the fairness ticks (every 61st) and
// the budget, with the ring never empty until the last filler. Fewer
// fillers than the ring's 256 slots, so none spills into the global queue.
constexpr int kFillers = 240;

struct round_state {
  mpg::chan<int> gate;
  mpg::chan<int> never;
  int waiting = 0;  // tasks parked on gate (1 P: counted just before the park)
  int ran = 0;      // fillers past the gate
  int saw_unsubmitted = 0;
};

bool sqe_unsubmitted() { return mpg::detail::current_reactor()->has_unsubmitted(); }

task<void> filler(round_state* st) {
  ++st->waiting;
  (void)co_await st->gate.recv();
  if (sqe_unsubmitted()) ++st->saw_unsubmitted;
  ++st->ran;
  (void)co_await st->never.recv();
}

task<void> reader(round_state* st, tcp_stream* s) {
  ++st->waiting;
  (void)co_await st->gate.recv();
  char c = 0;
  auto got = co_await s->read(std::span<char>(&c, 1));
  REQUIRE(got.ok());
  CHECK(*got == 1);
}

// One round: how many fillers ran while an SQE waited in the ring.
task<int> one_round(stream_pair* p) {
  round_state st;
  // The reader last: it waits on the gate first.
  std::vector<mpg::join_handle<void>> fs;
  for (int i = 0; i < kFillers; ++i) fs.push_back(mpg::spawn(filler(&st)));
  auto r = mpg::spawn(reader(&st, &p->client));
  while (st.waiting < kFillers + 1) co_await mpg::yield();
  st.gate.close();
  while (st.ran < kFillers) co_await mpg::yield();
  const std::string_view one = "x";
  REQUIRE((co_await p->server.write(one)).ok());
  co_await r;
  st.never.close();
  for (auto& f : fs) co_await f;
  co_return st.saw_unsubmitted;
}

task<int> most_fillers_behind_an_sqe(int rounds) {
  stream_pair p = co_await connect_pair();
  int most = 0;
  for (int i = 0; i < rounds; ++i) {
    const int n = co_await one_round(&p);
    most = std::max(most, n);
  }
  co_return most;
}

TEST_CASE("a chain of parks that ends with work queued leaves no SQE behind for long (1 P)") {
  mpg::runtime rt({.procs = 1});
  // Rounds start at different ticks, so the chains' ends fall at
  // different ticks modulo 16.
  const int most = rt.block_on(most_fillers_behind_an_sqe(16));
  INFO("most fillers that ran while the reader's SQE waited: " << most);
  // A chain ends within kBudget switches (at most 61 ticks: the fairness
  // turn), and the loop's pass after it takes the I/O turn when 16 ticks
  // or more have gone by since the last one. (A turn kept only at ticks
  // that are multiples of 16 let a whole ring of fillers run past it.)
  CHECK(most <= mpg::detail::kBudget);
  CHECK(most > 0);  // the reader's SQE did wait behind the chain
}

// -- Resumed elsewhere while the M switches ---------------------------------

// echo_side(): reads what comes and writes it back, until end of stream.
task<void> echo_side(tcp_stream* s) {
  std::array<char, 64> buf{};
  for (;;) {
    auto got = co_await s->read(std::span<char>(buf.data(), buf.size()));
    REQUIRE(got.ok());
    if (*got == 0) co_return;
    const std::string_view back(buf.data(), *got);
    REQUIRE((co_await s->write(back)).ok());
  }
}

// talk(): rounds of one message and its echo; "ok" if each came back whole.
task<std::string> talk(tcp_stream* s, int rounds) {
  for (int i = 0; i < rounds; ++i) {
    const std::string msg = absl::StrCat("m", i);
    REQUIRE((co_await s->write(msg)).ok());
    std::string back;
    std::array<char, 64> buf{};
    while (back.size() < msg.size()) {
      auto got = co_await s->read(std::span<char>(buf.data(), msg.size() - back.size()));
      REQUIRE(got.ok());
      if (*got == 0) co_return absl::StrCat("end of stream at round ", i);
      back.append(buf.data(), *got);
    }
    if (back != msg) co_return absl::StrCat("round ", i, ": ", back);
  }
  s->close();
  co_return "ok";
}

task<std::string> many_connections(int conns, int rounds) {
  std::vector<stream_pair> ps;
  for (int i = 0; i < conns; ++i) {
    stream_pair p = co_await connect_pair();
    ps.push_back(std::move(p));
  }
  std::vector<mpg::join_handle<void>> echoes;
  std::vector<mpg::join_handle<std::string>> talks;
  for (auto& p : ps) echoes.push_back(mpg::spawn(echo_side(&p.server)));
  for (auto& p : ps) talks.push_back(mpg::spawn(talk(&p.client, rounds)));
  std::string result = "ok";
  for (auto& t : talks) {
    std::string r = co_await t;
    if (r != "ok") result = r;
  }
  for (auto& e : echoes) co_await e;
  co_return result;
}

TEST_CASE("connections whose tasks park on reads and writes pass every byte (2 Ps)") {
  mpg::runtime rt({.procs = 2});
  CHECK(rt.block_on(many_connections(16, mpg_test::kSanitized ? 200 : 1'000)) == "ok");
}

}  // namespace
