// mpg/errors.hpp: the exceptions mpg throws for programming errors.
//
// What Go answers with a panic, mpg throws as a std::logic_error-derived
// exception. Operational failures (I/O, timeouts, cancellation) are never
// thrown: they are absl::Status values; an I/O failure's errno, and whether
// it means "use of a closed stream", are read with mpg/io_error.hpp.
#pragma once

#include <stdexcept>
#include <string>

namespace mpg {

// closed_channel_error: send on a closed channel, closing a closed channel.
class closed_channel_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// deadlock_error: block_on found every task asleep with nothing able to wake
// any of them ("all goroutines are asleep - deadlock!"). what() names them.
class deadlock_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// sync_misuse_error: unlock of an unlocked mutex, negative wait_group counter,
// semaphore released past its size, and similar misuse.
class sync_misuse_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// runtime_misuse_error: spawn/go/yield outside a task (and an await there
// that would wait), block_on inside one,
// a task awaited twice, a join on a task the runtime killed at shutdown, an
// await of a moved-from oneshot_receiver, a send, try_send or close on a
// moved-from chan.
class runtime_misuse_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace mpg
