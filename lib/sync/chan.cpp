// lib/sync/chan.cpp: the out-of-line parts of channels (chan.hpp): the errors.
//
// Everything else about a channel is a template over its element type and
// lives in the header; only the throwing paths are kept out of line so that
// the inlined fast paths stay small.
#include <string>

#include "mpg/chan.hpp"

namespace mpg::detail {

void throw_send_on_closed() { throw closed_channel_error("send on closed channel"); }

void throw_close_of_closed() { throw closed_channel_error("close of closed channel"); }

void throw_moved_from_chan(const char* what) {
  throw runtime_misuse_error(std::string("mpg: ") + what + " on a moved-from chan");
}

}  // namespace mpg::detail
