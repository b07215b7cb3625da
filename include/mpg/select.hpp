// mpg/select.hpp: select over channel operations and other events (Go's
// select statement).
//
//   auto r = co_await mpg::select(a.recv(), b.send(x), mpg::after(100ms).recv());
//   switch (r.index()) { case 0: ... std::get<0>(r) is std::optional<int> ... }
//   auto n = co_await mpg::select(a.recv(), mpg::default_case);   // never waits
//   auto j = co_await mpg::select(h, rx, wg.wait(), ctx.done().recv());
//
// The cases, and what each gives as its alternative of the result:
//   ch.recv()           std::optional<T> (nullopt: closed and drained)
//   ch.send(v)          std::monostate (throws closed_channel_error if chosen
//                       on a closed channel, runtime_misuse_error on a
//                       moved-from handle)
//   rx, rx.recv()       a oneshot_receiver<T> (oneshot.hpp): absl::StatusOr<T>,
//                       absl::Status for void
//   h, h.join()         a join_handle<T> (spawn.hpp): T, what `co_await h`
//                       gives (std::monostate for void); rethrows the task's
//                       exception. A join case that loses leaves h unjoined.
//   wg.wait()           a wait_group (wait_group.hpp): std::monostate
//   ctx.done().recv()   a context's cancellation: a recv case on a channel
//                       that is closed on cancel, so it gives nullopt
//   default_case        std::monostate; wins when nothing else is ready
// Any channels, any element types, the same object more than once. The
// result is a std::variant whose alternative I is case I's result, built
// with std::in_place_index, so equal types in different positions stay
// distinct. Lvalue receivers and join handles are named by reference (the
// select awaiter must not outlive them); every other case is moved in.
//
// The case contract. A case is any object with these members (they may be
// private if the class befriends detail::select_awaiter):
//   result_type                   (public) the case's alternative type.
//   sel_lock() -> spinlock*       the lock that guards the object's waiters;
//               or std::nullptr_t a lock-free case (a join): its waker
//                                 takes no lock of the select's lock set.
//   sel_poll(g*& wake) -> bool    under the lock: complete now if possible
//                                 (taking its value); *wake: a G to ready
//                                 after unlocking.
//   sel_enqueue(select_state*)    under the lock: queue the case's waiter,
//               -> void or bool   tagged with the select (waiter::
//                                 set_select). false: the case became ready
//                                 between poll and queue and is not queued.
//                                 Allowed only for cases whose completion
//                                 takes nothing (observing a finished task,
//                                 a zero counter), so a late case that then
//                                 loses has taken nothing.
//   sel_dequeue()                 under the lock: take the waiter off if it
//                                 is still queued. For a lock-free case also:
//                                 return only once no waker can touch the
//                                 waiter any more.
//   sel_dequeue_woken()           optional: step 6's clean-up of a case that
//                                 lost, called with no lock of the select's
//                                 held; the case locks its object itself,
//                                 only while the object is sure to live, and
//                                 returns once no waker can touch the waiter
//                                 (wait_group.hpp, W4: a group may be
//                                 destroyed by a task its zero released).
//                                 Such a case is left out of step 6's relock.
//   sel_node() -> waiter*         the waiter it queues (told apart from the
//                                 winner by address).
//   sel_result() -> result_type   the winner's result, once.
//   sel_result_as<V, I>() -> V    optional, instead of sel_result for the
//                                 winner: the select's result V built in
//                                 place as alternative I (a oneshot case:
//                                 its value then moves once, see take_with).
//   sel_where() -> source_location  for the task dump.
// The waker side: whoever takes a queued waiter w with w->sel() set claims
// the select with select_state::claim(w) before completing anything
// (waitq::dequeue does it for queue owners); it completes the case only if
// it won, and readies the select's G only on `won` (waitq.hpp).
//
// The algorithm is Go's selectgo (runtime/select.go), extended with an
// arming phase for lock-free cases:
//   1. Draw a uniformly random poll order of the cases (inside-out
//      Fisher-Yates), and sort the distinct locks by address: the lock
//      order. A plain channel operation holds one lock at a time and every
//      select takes its locks in address order, so no cycle of lock waits
//      can form.
//   2. Lock all. Poll the cases in poll order; the first that can complete
//      now completes (under the locks) and wins. Because the poll order is
//      a uniform permutation, the winner is uniform among the ready cases.
//      A send case on a closed channel is "ready": it wins and throws. If
//      nothing is ready and there is a default case, it wins.
//   3. Otherwise park (g.hpp, step 1), set the state word to kArming (if
//      any case is lock-free; else it stays kOpen: no waker can act before
//      we unlock) and enqueue one waiter per case, in poll order. A lockful case's waker
//      cannot act (we hold its lock); a lock-free case is visible to its
//      waker as soon as it is queued, and that waker may claim the select
//      (won_arming) but does not ready us.
//   4. End arming: CAS kArming -> kOpen, then unlock (the first unlock
//      publishes the lockful cases). From the CAS on, a claim readies us,
//      so `this` is not touched after it: the lock list used to unlock is
//      a copy on the thread's stack. Were the compiler to keep that copy in
//      the frame (a local of an inlined await_suspend: llvm/llvm-project
//      #56301), it would still outlive its last read: the loop reads each
//      entry while it holds that entry's lock and every lower one; a
//      lockful winner's waker can act only once its lock is unlocked, and
//      the locks still held then are losers' (or shared with one), which a
//      resumed select relocks (step 6) before it can finish (a case that
//      cleans up by itself locks its object too, unless a waker took its
//      waiter off under that lock, after our unlock); a lock-free winner's
//      select relocks the whole set; with one waitable case the one unlock
//      is the last access. If
//      instead the CAS fails (a lock-free waker claimed during arming), or
//      a case's sel_enqueue said it is ready (then we claim for it, which
//      fails only to such a waker), the select does not sleep: it takes
//      every queued case off again (a lock-free winner's dequeue waits for
//      its waker to finish), undoes the park and unlocks; the winner's
//      result follows at once.
//   5. Parked: a waker claims us (waitq.hpp), completes its case and readies
//      us. Wakers that lose take nothing.
//   6. Resumed, we find the winner among our own waiters by address, lock
//      again every lock of the set but the winner's (unless another of our
//      cases shares it) and those of cases that clean up by themselves
//      (sel_dequeue_woken), take our remaining waiters off their queues
//      (those already removed are skipped; a lock-free one waits for its
//      waker), unlock, let each case that cleans up by itself do so, and
//      return the winner's result. The clean-up does not relock the
//      winner's object: its waker took our waiter off under that lock and
//      readied us after unlocking, as it does a plain waiter, so a task
//      that returns from waiting on the same release may destroy the
//      object before we run (a wait_group whose owner's wait() returns
//      first). (The winner's result may still use what its case holds a
//      reference to: a oneshot's state, a join's word.) The relock of the
//      others is also what makes step 5 safe for lockful cases: a losing
//      waker holds the lock of an object we still have to relock, so our
//      frame (and the state word it CASes) outlives its claim. A losing
//      waker on the winner's object would have to take another of our
//      waiters, queued there: its lock is then in the set. A lock-free case
//      gets the same guarantee from its dequeue's wait (spawn.hpp,
//      join_op), and a case that cleans up by itself from its own protocol
//      (wait_group.hpp, W1-W4), which also keeps it off an object that a
//      release it lost may have let another waiter destroy.
//
// Rejected: polling the cases in declaration order (Go did, early on): the
// first ready case would starve the others. Taking one global lock for all
// selects: serialises unrelated channels. Locking in poll order: two selects
// over the same two channels in opposite orders deadlock. Giving the join
// state a spinlock so that joins could be ordinary lockful cases: every
// task's completion would pay for a lock that only selects need; the
// arming state costs nothing outside select.
//
// Invariants:
//   - At most one case of a select completes, exactly once: the state word
//     leaves kOpen/kArming once, by one CAS.
//   - A case that did not win takes nothing from its object and gives
//     nothing to it (no value lost or duplicated; a join handle stays
//     unjoined).
//   - The select's G is readied at most once, and only by a claim that
//     found kOpen; a select that finds a claim when ending arming never
//     sleeps.
//   - While parked, the select has exactly one waiter per case queued,
//     minus those that wakers already took.
#pragma once

#include <absl/base/thread_annotations.h>

#include <algorithm>
#include <array>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

#include "mpg/chan.hpp"
#include "mpg/oneshot.hpp"
#include "mpg/spawn.hpp"
#include "mpg/wait_group.hpp"
#include "mpg/detail/sched/fastrand.hpp"
#include "mpg/detail/sched/g.hpp"
#include "mpg/detail/sync/waitq.hpp"

namespace mpg {

// default_case: a select case that wins when no other case is ready; its
// result is std::monostate. At most one per select.
struct default_case_t {
  explicit constexpr default_case_t() = default;
};
inline constexpr default_case_t default_case{};

namespace detail {

template <class C>
struct select_case_traits {
  using result = typename C::result_type;
  static constexpr bool is_waitable = true;
};
template <>
struct select_case_traits<default_case_t> {
  using result = std::monostate;
  static constexpr bool is_waitable = false;
};

// as_select_case(): what select() stores for an argument. A oneshot
// receiver or a join handle, named as a case (an lvalue), stands for its
// recv() or join(); every other case is moved (or copied) in as it is.
template <class C>
std::remove_cvref_t<C> as_select_case(C&& c) {
  return std::remove_cvref_t<C>(std::forward<C>(c));
}
template <class T>
oneshot_recv_op<T> as_select_case(oneshot_receiver<T>& rx) {
  return rx.recv();  // throws on a moved-from receiver
}
template <class T>
join_op<T> as_select_case(join_handle<T>& h) {
  return h.join();
}
// A join handle moved into a select would be dropped (detached) if its case
// lost: name it as an lvalue.
template <class T>
join_op<T> as_select_case(join_handle<T>&& h) = delete;
// A channel's recv() (a runtime request, chan.hpp) stands for its recv_op.
template <class T>
recv_op<T> as_select_case(request_base<chan<T>, chan_recv_op>& r) noexcept {
  return r.make_awaiter({});
}
template <class C>
using select_case_t = decltype(as_select_case(std::declval<C>()));

// The lock order: the distinct locks, sorted by address. Returns how many.
template <std::size_t N>
std::size_t sort_lock_order(std::array<spinlock*, N>& c) noexcept {
  std::sort(c.begin(), c.end(), std::less<spinlock*>());
  return static_cast<std::size_t>(std::unique(c.begin(), c.end()) - c.begin());
}
// lock_all(), unlock_all(): the first n locks. Unchecked: the analysis
// tracks locks it can name, not a set of runtime size; the select hooks
// that run under these locks assert them (chan.hpp).
template <std::size_t N>
void lock_all(const std::array<spinlock*, N>& c, std::size_t n) noexcept
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = 0; i < n; ++i) c[i]->lock();
}
template <std::size_t N>
void unlock_all(const std::array<spinlock*, N>& c, std::size_t n) noexcept
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = n; i-- > 0;) c[i]->unlock();
}

// select_awaiter: the awaiter returned by mpg::select. Resumes on the P of
// the task that completed the winning case (sender, receiver, closer,
// finisher, the done() that reached zero), or does not suspend at all when
// a case is ready (modulo the budget yield).
template <class... Cases>
class [[nodiscard]] select_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
 private:
  static constexpr std::size_t kCases = sizeof...(Cases);
  static_assert(kCases > 0, "select needs at least one case");
  static_assert(kCases < 255, "too many select cases");
  static constexpr std::size_t kDefaults =
      (std::size_t{0} + ... + (select_case_traits<Cases>::is_waitable ? 0 : 1));
  static_assert(kDefaults <= 1, "at most one default_case per select");
  static constexpr std::size_t kWaits = kCases - kDefaults;

  // A case with a lock (in the select's lock set), as opposed to a
  // lock-free one whose sel_lock() gives std::nullptr_t.
  template <class C>
  static constexpr bool has_lock() {
    if constexpr (!select_case_traits<C>::is_waitable)
      return false;
    else
      return !std::is_same_v<decltype(std::declval<C&>().sel_lock()), std::nullptr_t>;
  }
  // A case with its own clean-up after a wake-up (sel_dequeue_woken):
  // left out of step 6's relock.
  template <class C>
  static constexpr bool cleans_up_alone() {
    if constexpr (!select_case_traits<C>::is_waitable)
      return false;
    else
      return requires(C& c) { c.sel_dequeue_woken(); };
  }
  static constexpr std::size_t kLocks = (std::size_t{0} + ... + (has_lock<Cases>() ? 1 : 0));
  // Some case is lock-free: the select needs its arming phase (step 3).
  static constexpr bool kLockFree = kLocks < kWaits;

  // The hook set (see the top of the file), checked here where private
  // hooks are accessible.
  template <class C>
  static constexpr bool has_hooks() {
    if constexpr (!select_case_traits<C>::is_waitable) {
      return true;
    } else {
      return requires(C& c, g*& wake, select_state* st) {
        c.sel_lock();
        { c.sel_poll(wake) } -> std::same_as<bool>;
        c.sel_enqueue(st);
        c.sel_dequeue();
        { c.sel_node() } -> std::convertible_to<waiter*>;
        { c.sel_result() } -> std::convertible_to<typename C::result_type>;
        { c.sel_where() } -> std::same_as<std::source_location>;
      };
    }
  }
  static_assert((has_hooks<Cases>() && ...), "a select case lacks the sel_* hooks (select.hpp)");

  // Tuple index of each waitable case, and of the default case (or kCases).
  static constexpr std::array<std::uint8_t, kWaits> kWaitIdx = [] {
    constexpr bool is_waitable[] = {select_case_traits<Cases>::is_waitable...};
    std::array<std::uint8_t, kWaits> a{};
    std::size_t k = 0;
    for (std::size_t i = 0; i < kCases; ++i)
      if (is_waitable[i]) a[k++] = static_cast<std::uint8_t>(i);
    return a;
  }();
  static constexpr std::size_t kDefault = [] {
    constexpr bool is_waitable[] = {select_case_traits<Cases>::is_waitable...};
    for (std::size_t i = 0; i < kCases; ++i)
      if (!is_waitable[i]) return i;
    return kCases;
  }();
  static constexpr std::uint8_t kNone = 255;

 public:
  using result_type = std::variant<typename select_case_traits<Cases>::result...>;

  explicit select_awaiter(Cases&&... cases) : cases_(std::move(cases)...) {}
  select_awaiter(select_awaiter&&) = default;
  select_awaiter& operator=(select_awaiter&&) = delete;

  // link_parent(): the site of the awaiting task's co_await (its
  // await_transform calls it, task.hpp): where the task shows as parked.
  void link_parent(std::source_location where) noexcept { where_ = where; }

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    if constexpr (kWaits == 0) {
      chosen_ = static_cast<std::uint8_t>(kDefault);
      return yield_if_over_budget(h);
    } else {
      // 1. Poll order and lock order.
      std::array<std::uint8_t, kWaits> order{};
      for (std::uint32_t i = 0; i < kWaits; ++i) {
        const std::uint32_t j = fastrandn(i + 1);
        order[i] = order[j];
        order[j] = static_cast<std::uint8_t>(i);
      }
      std::array<spinlock*, kLocks> locks = lock_set();
      const std::size_t nlocks = sort_lock_order(locks);

      // 2. Poll.
      lock_all(locks, nlocks);
      g* wake = nullptr;
      for (std::uint8_t k : order) {
        if (poll_case(kWaitIdx[k], wake)) {
          chosen_ = kWaitIdx[k];
          unlock_all(locks, nlocks);
          if (wake) ready(wake);
          return yield_if_over_budget(h);
        }
      }
      if constexpr (kDefault < kCases) {
        chosen_ = static_cast<std::uint8_t>(kDefault);
        unlock_all(locks, nlocks);
        return yield_if_over_budget(h);
      }

      // 3. Park and arm. Relaxed: nobody sees the state before the first
      // case is queued (a lock-free case's queueing CAS publishes it).
      // Without lock-free cases no waker can act before we unlock, so the
      // state stays kOpen and step 4 needs no CAS.
      state_.gp = current_g();
      if constexpr (kLockFree)
        state_.state.store(select_state::kArming, std::memory_order_relaxed);
      try {
        park(h, "select", where());
      } catch (...) {
        unlock_all(locks, nlocks);
        throw;
      }
      // In poll order, as Go does: cases on the same object then queue in
      // random order, so a waker picks among them at random too.
      std::size_t queued = 0;
      std::uint8_t late = kNone;
      for (std::uint8_t k : order) {
        if (!enqueue_case(kWaitIdx[k])) {
          late = kWaitIdx[k];
          break;
        }
        ++queued;
      }

      // 4. End arming. acq_rel: release publishes gp and the queued cases
      // to lock-free wakers (their claim acquires); acquire on failure
      // reads a claim made during arming.
      if (late == kNone) {
        bool armed = true;
        if constexpr (kLockFree) {
          std::uintptr_t arming = select_state::kArming;
          armed = state_.state.compare_exchange_strong(arming, select_state::kOpen,
                                                       std::memory_order_acq_rel,
                                                       std::memory_order_acquire);
        }
        if (armed) {
          unlock_all(locks, nlocks);  // `this` must not be touched from here on
          return true;
        }
      }
      // Decided while arming: no claim can ready us (none found kOpen, or
      // nobody but us could claim).
      if (late != kNone) {
        waiter* n = nullptr;
        visit_case(late, [&](auto& c) { n = c.sel_node(); });
        state_.claim(n);  // fails only to a lock-free waker's earlier claim
      }
      waiter* const win = state_.winner();
      for (std::size_t i = 0; i < queued; ++i)
        visit_case(kWaitIdx[order[i]], [&](auto& c) { c.sel_dequeue(); });
      chosen_ = index_of(win);
      cancel_park();
      unlock_all(locks, nlocks);
      return yield_if_over_budget(h);
    }
  }

  result_type await_resume() {
    if constexpr (kWaits > 0) {
      if (chosen_ == kNone) {
        // 6. Woken by the winner's waker: find the winner, drop the rest.
        waiter* const win = state_.winner();
        if constexpr (kWaits == 1) {
          chosen_ = kWaitIdx[0];  // the waker took our only waiter
        } else {
          // The winner is found by the addresses of our own waiters, and
          // its object's lock is left out of the relock unless another of
          // our cases shares it (see the top of the file, step 6).
          chosen_ = index_of(win);
          std::array<spinlock*, kLocks> locks{};
          std::size_t nlocks = 0;
          if constexpr (kLocks > 0) {
            const std::size_t k = lock_set_except<true>(chosen_, locks);
            // The slots the left-out locks leave repeat another lock, which
            // the sort's unique() drops: the whole array sorts as in step 1.
            for (std::size_t i = k; i < kLocks; ++i) locks[i] = locks[0];
            if (k > 0) nlocks = sort_lock_order(locks);
          }
          lock_all(locks, nlocks);
          for_each_waitable_case([&](auto& c, std::size_t i) {
            if constexpr (!cleans_up_alone<std::remove_cvref_t<decltype(c)>>()) {
              if (i != chosen_) c.sel_dequeue();
            }
          });
          unlock_all(locks, nlocks);
          for_each_waitable_case([&](auto& c, std::size_t i) {
            if constexpr (cleans_up_alone<std::remove_cvref_t<decltype(c)>>()) {
              if (i != chosen_) c.sel_dequeue_woken();
            }
          });
        }
      }
    }
    return result_for(chosen_, std::make_index_sequence<kCases>());
  }

 private:
  // lock_set(): the lock of each lockful case (possibly repeated).
  std::array<spinlock*, kLocks> lock_set() noexcept {
    std::array<spinlock*, kLocks> a{};
    (void)lock_set_except<false>(kCases, a);
    return a;
  }
  // lock_set_except(): into a, the lock of each lockful case but the one
  // with tuple index `skip` (and, for step 6's relock, those of cases that
  // clean up by themselves); returns how many.
  template <bool kRelock>
  std::size_t lock_set_except(std::size_t skip, std::array<spinlock*, kLocks>& a) noexcept {
    std::size_t k = 0;
    for_each_waitable_case([&](auto& c, std::size_t i) {
      using C = std::remove_cvref_t<decltype(c)>;
      if constexpr (has_lock<C>() && !(kRelock && cleans_up_alone<C>())) {
        if (i != skip) a[k++] = c.sel_lock();
      }
    });
    return k;
  }

  // The park location: the task's co_await, else where the first waitable
  // case was written (a select awaited outside a task).
  std::source_location where() const noexcept {
    if (where_.line() != 0) return where_;
    return std::get<kWaitIdx[0]>(cases_).sel_where();
  }

  // for_each_waitable_case(): f(case, tuple index) for each waitable case.
  template <class F>
  void for_each_waitable_case(F&& f) {
    for_each_impl(f, std::make_index_sequence<kCases>());
  }
  template <class F, std::size_t... I>
  void for_each_impl(F& f, std::index_sequence<I...>) {
    (
        [&] {
          if constexpr (select_case_traits<
                            std::tuple_element_t<I, std::tuple<Cases...>>>::is_waitable)
            f(std::get<I>(cases_), I);
        }(),
        ...);
  }

  // visit_case(): f(case i) for the waitable case with tuple index i.
  template <class F>
  void visit_case(std::size_t i, F&& f) {
    for_each_waitable_case([&](auto& c, std::size_t j) {
      if (i == j) f(c);
    });
  }

  bool poll_case(std::size_t i, g*& wake) noexcept {
    bool done = false;
    visit_case(i, [&](auto& c) { done = c.sel_poll(wake); });
    return done;
  }

  bool enqueue_case(std::size_t i) noexcept {
    bool queued = true;
    visit_case(i, [&](auto& c) {
      if constexpr (std::is_void_v<decltype(c.sel_enqueue(&state_))>)
        c.sel_enqueue(&state_);
      else
        queued = c.sel_enqueue(&state_);
    });
    return queued;
  }

  std::uint8_t index_of(waiter* w) noexcept {
    std::uint8_t r = kNone;
    for_each_waitable_case([&](auto& c, std::size_t i) {
      if (c.sel_node() == w) r = static_cast<std::uint8_t>(i);
    });
    return r;
  }

  template <std::size_t I>
  result_type result_at() {
    if constexpr (!select_case_traits<std::tuple_element_t<I, std::tuple<Cases...>>>::is_waitable) {
      return result_type(std::in_place_index<I>);
    } else if constexpr (requires(std::tuple_element_t<I, std::tuple<Cases...>>& c) {
                           c.template sel_result_as<result_type, I>();
                         }) {
      // A case that builds the variant itself (its value then moves once).
      return std::get<I>(cases_).template sel_result_as<result_type, I>();
    } else {
      return result_type(std::in_place_index<I>, std::get<I>(cases_).sel_result());
    }
  }
  template <std::size_t... I>
  result_type result_for(std::size_t i, std::index_sequence<I...>) {
    using fn = result_type (select_awaiter::*)();
    static constexpr fn table[] = {&select_awaiter::template result_at<I>...};
    return (this->*table[i])();
  }

  std::tuple<Cases...> cases_;
  std::source_location where_{};
  select_state state_;
  std::uint8_t chosen_ = kNone;
};

}  // namespace detail

// select()
//
// `co_await mpg::select(case...)`: waits until one case can proceed, performs
// exactly that one, and returns its index and result as a std::variant. With
// mpg::default_case it never waits. Cases are taken by value (moved in).
// A oneshot_receiver or a join_handle named as a case (an lvalue) stands for
// rx.recv() or h.join() and is held by reference.
template <class... Cases>
detail::select_awaiter<detail::select_case_t<Cases>...> select(Cases&&... cases) {
  return detail::select_awaiter<detail::select_case_t<Cases>...>(
      detail::as_select_case(std::forward<Cases>(cases))...);
}

}  // namespace mpg
