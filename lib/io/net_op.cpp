// lib/io/net_op.cpp: the coroutines of net_op.hpp, one logical network
// operation's issue and its wait for readiness, shared by the TCP
// (net.cpp, listen_dial.cpp) and UDP (udp.cpp) sockets.
#include "io/net_op.hpp"

namespace mpg::net::op {

task<int> await_op(const io_request* rq, detail::io_slot* slot, const char* reason,
                   const op_bounds& b) {
  io_awaiter op = make_op(rq, slot, reason, b);
  int res = co_await op;
  if (b.bind != nullptr) res = b.bind->result(res, op.op);
  co_return res;
}

task<int> wait_ready(int fd, unsigned events, detail::io_slot* slot, const op_bounds& b) {
  io_request rq{.op = io_opcode::poll, .fd = fd, .len = events};
  co_return co_await await_op(&rq, slot, "net.poll", b);
}

}  // namespace mpg::net::op
