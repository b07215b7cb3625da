// mpg/select.hpp: select over channel operations (Go's select statement).
//
//   auto r = co_await mpg::select(a.recv(), b.send(x), mpg::after(100ms).recv());
//   switch (r.index()) { case 0: ... std::get<0>(r) is std::optional<int> ... }
//   auto n = co_await mpg::select(a.recv(), mpg::default_case);   // never waits
//
// The cases are the awaiters that chan<T>::recv() and chan<T>::send(v) return,
// and oneshot receives (oneshot.hpp: rx.recv(), or the receiver rx itself);
// any channels, any element types, the same channel more than once. The
// result is a std::variant whose alternative I is case I's result: a recv
// case gives std::optional<T> (nullopt: closed), a oneshot case
// absl::StatusOr<T> (absl::Status for void), a send case and the default
// case give std::monostate. Alternatives are built with std::in_place_index,
// so equal types in different positions stay distinct. A oneshot state takes
// part in the algorithm below like a channel: its lock joins the lock order,
// its one waiter queue takes the case's waiter, and its sender is the waker.
//
// The algorithm is Go's selectgo (runtime/select.go):
//   1. Draw a uniformly random poll order of the cases (inside-out
//      Fisher-Yates), and sort the distinct channels by address: the lock
//      order. A plain channel operation holds one channel lock at a time and
//      every select takes its locks in address order, so no cycle of lock
//      waits can form.
//   2. Lock all the channels. Poll the cases in poll order; the first that
//      can complete now completes (under the locks) and wins. Because the
//      poll order is a uniform permutation, the winner is uniform among the
//      ready cases. A send case on a closed channel is "ready": it wins and
//      throws closed_channel_error. If nothing is ready and there is a
//      default case, it wins.
//   3. Otherwise park (g.hpp, step 1), enqueue one waiter per case, all
//      pointing at this select's select_state, and unlock (step 2: the first
//      unlock publishes). From this point the awaiter is not touched: the
//      lock list used to unlock is a copy on the thread's stack.
//   4. A waker that dequeues one of our waiters must first CAS
//      select_state::done 0 -> 1 (waitq::dequeue); the one that succeeds
//      completes its case, records it as the winner and readies us. Wakers
//      that fail drop our waiter and take nothing.
//   5. Resumed, we lock all channels again, take our remaining waiters off
//      every queue (those already removed are skipped), unlock, and return
//      the winner's result. The relock is also what makes step 4 safe: a
//      losing waker holds the lock of a channel we still have to relock, so
//      our frame (and the done flag it reads) outlives its CAS.
//
// Rejected: polling the cases in declaration order (Go did, early on): the
// first ready case would starve the others. Taking one global lock for all
// selects: serialises unrelated channels. Locking in poll order: two selects
// over the same two channels in opposite orders deadlock.
//
// Invariants:
//   - At most one case of a select completes, exactly once.
//   - A case that did not win takes nothing from its channel and gives
//     nothing to it (no value lost or duplicated).
//   - While parked, the select has exactly one waiter per case queued on
//     its channel, minus those that wakers already dropped.
#pragma once

#include <absl/base/thread_annotations.h>

#include <algorithm>
#include <array>
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
struct select_case_traits;
template <class T>
struct select_case_traits<recv_op<T>> {
  using result = std::optional<T>;
  static constexpr bool is_channel = true;
};
template <class T>
struct select_case_traits<send_op<T>> {
  using result = std::monostate;
  static constexpr bool is_channel = true;
};
template <class T>
struct select_case_traits<oneshot_recv_op<T>> {
  using result = typename oneshot_recv_op<T>::result_type;
  static constexpr bool is_channel = true;
};
template <>
struct select_case_traits<default_case_t> {
  using result = std::monostate;
  static constexpr bool is_channel = false;
};

// as_select_case(): what select() stores for an argument. A oneshot
// receiver, named as a case, stands for its recv(); every other case is
// moved (or copied) in as it is.
template <class C>
std::remove_cvref_t<C> as_select_case(C&& c) {
  return std::remove_cvref_t<C>(std::forward<C>(c));
}
template <class T>
oneshot_recv_op<T> as_select_case(oneshot_receiver<T>& rx) noexcept {
  return rx.recv();
}
template <class C>
using select_case_t = decltype(as_select_case(std::declval<C>()));

// The lock order: the distinct locks of the cases' channels (and oneshot
// states), sorted by address. Returns how many.
template <std::size_t N>
std::size_t sort_lock_order(std::array<spinlock*, N>& c) noexcept {
  std::sort(c.begin(), c.end(), std::less<spinlock*>());
  return static_cast<std::size_t>(std::unique(c.begin(), c.end()) - c.begin());
}
// lock_all(), unlock_all(): the first n channels' locks. Unchecked: the
// analysis tracks locks it can name, not a set of runtime size; the select
// hooks that run under these locks assert them (chan.hpp).
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
// the task that completed the winning case (sender, receiver or closer), or
// does not suspend at all when a case is ready (modulo the budget yield).
template <class... Cases>
class [[nodiscard]] select_awaiter {
 public:
  using mpg_awaiter = detail::runtime_awaiter_tag;  // g.hpp
 private:
  static constexpr std::size_t kCases = sizeof...(Cases);
  static_assert(kCases > 0, "select needs at least one case");
  static_assert(kCases < 255, "too many select cases");
  static constexpr std::size_t kDefaults =
      (std::size_t{0} + ... + (select_case_traits<Cases>::is_channel ? 0 : 1));
  static_assert(kDefaults <= 1, "at most one default_case per select");
  static constexpr std::size_t kChannels = kCases - kDefaults;

  // Tuple index of each channel case, and of the default case (or kCases).
  static constexpr std::array<std::uint8_t, kChannels> kChanIdx = [] {
    std::array<std::uint8_t, kChannels> a{};
    constexpr bool is_chan[] = {select_case_traits<Cases>::is_channel...};
    std::size_t k = 0;
    for (std::size_t i = 0; i < kCases; ++i)
      if (is_chan[i]) a[k++] = static_cast<std::uint8_t>(i);
    return a;
  }();
  static constexpr std::size_t kDefault = [] {
    constexpr bool is_chan[] = {select_case_traits<Cases>::is_channel...};
    for (std::size_t i = 0; i < kCases; ++i)
      if (!is_chan[i]) return i;
    return kCases;
  }();
  static constexpr std::uint8_t kNone = 255;

 public:
  using result_type = std::variant<typename select_case_traits<Cases>::result...>;

  explicit select_awaiter(Cases&&... cases) : cases_(std::move(cases)...) {}
  select_awaiter(select_awaiter&&) = default;
  select_awaiter& operator=(select_awaiter&&) = delete;

  bool await_ready() const noexcept { return false; }

  bool await_suspend(std::coroutine_handle<> h) {
    if constexpr (kChannels == 0) {
      chosen_ = static_cast<std::uint8_t>(kDefault);
      return yield_if_over_budget(h);
    } else {
      // 1. Poll order and lock order.
      std::array<std::uint8_t, kChannels> order{};
      for (std::uint32_t i = 0; i < kChannels; ++i) {
        const std::uint32_t j = fastrandn(i + 1);
        order[i] = order[j];
        order[j] = static_cast<std::uint8_t>(i);
      }
      std::array<spinlock*, kChannels> locks = channels();
      const std::size_t nlocks = sort_lock_order(locks);

      // 2. Poll.
      lock_all(locks, nlocks);
      g* wake = nullptr;
      for (std::uint8_t k : order) {
        if (poll_case(kChanIdx[k], wake)) {
          chosen_ = kChanIdx[k];
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

      // 3. Park, enqueue everywhere, unlock (publishes).
      state_.gp = current_g();
      try {
        park(h, "select", where());
      } catch (...) {
        unlock_all(locks, nlocks);
        throw;
      }
      // In poll order, as Go does: cases on the same channel then queue in
      // random order, so a waker picks among them at random too.
      for (std::uint8_t k : order)
        visit_case(kChanIdx[k], [&](auto& c) { c.sel_enqueue(&state_); });
      unlock_all(locks, nlocks);  // `this` must not be touched from here on
      return true;
    }
  }

  result_type await_resume() {
    if constexpr (kChannels > 0) {
      if (chosen_ == kNone) {
        // 5. Woken by the winner's waker: find the winner, drop the rest.
        waiter* win = state_.winner;
        if constexpr (kChannels == 1) {
          chosen_ = kChanIdx[0];  // the waker took our only waiter off
        } else {
          std::array<spinlock*, kChannels> locks = channels();
          const std::size_t nlocks = sort_lock_order(locks);
          lock_all(locks, nlocks);
          std::size_t k = 0;
          for_each_channel_case([&](auto& c) {
            if (c.sel_node() == win)
              chosen_ = kChanIdx[k];
            else
              c.sel_dequeue();
            ++k;
          });
          unlock_all(locks, nlocks);
        }
      }
    }
    return result_for(chosen_, std::make_index_sequence<kCases>());
  }

 private:
  // channels(): the lock of each channel case (a oneshot case: its state's).
  std::array<spinlock*, kChannels> channels() noexcept {
    std::array<spinlock*, kChannels> a;
    std::size_t k = 0;
    for_each_channel_case([&](auto& c) {
      if constexpr (requires { c.sel_lock(); })
        a[k++] = c.sel_lock();
      else
        a[k++] = &c.sel_chan()->lock_;
    });
    return a;
  }

  // The park location: where the first channel case was written.
  std::source_location where() const noexcept {
    return std::get<kChanIdx[0]>(cases_).sel_where();
  }

  template <class F>
  void for_each_channel_case(F&& f) {
    std::apply(
        [&](auto&... c) {
          (
              [&](auto& one) {
                if constexpr (select_case_traits<std::remove_cvref_t<decltype(one)>>::is_channel)
                  f(one);
              }(c),
              ...);
        },
        cases_);
  }

  // visit_case(): f(case i) for the channel case with tuple index i.
  template <class F>
  void visit_case(std::size_t i, F&& f) {
    visit_case_impl(i, f, std::make_index_sequence<kCases>());
  }
  template <class F, std::size_t... I>
  void visit_case_impl(std::size_t i, F& f, std::index_sequence<I...>) {
    (
        [&] {
          if constexpr (select_case_traits<std::tuple_element_t<I, std::tuple<Cases...>>>::
                            is_channel) {
            if (i == I) f(std::get<I>(cases_));
          }
        }(),
        ...);
  }

  bool poll_case(std::size_t i, g*& wake) noexcept {
    bool done = false;
    visit_case(i, [&](auto& c) { done = c.sel_poll(wake); });
    return done;
  }

  template <std::size_t I>
  result_type result_at() {
    auto& c = std::get<I>(cases_);
    if constexpr (!select_case_traits<std::remove_cvref_t<decltype(c)>>::is_channel) {
      return result_type(std::in_place_index<I>);
    } else {
      return result_type(std::in_place_index<I>, c.sel_result());
    }
  }
  template <std::size_t... I>
  result_type result_for(std::size_t i, std::index_sequence<I...>) {
    using fn = result_type (select_awaiter::*)();
    static constexpr fn table[] = {&select_awaiter::template result_at<I>...};
    return (this->*table[i])();
  }

  std::tuple<Cases...> cases_;
  select_state state_;
  std::uint8_t chosen_ = kNone;
};

}  // namespace detail

// select()
//
// `co_await mpg::select(case...)`: waits until one case can proceed, performs
// exactly that one, and returns its index and result as a std::variant. With
// mpg::default_case it never waits. Cases are taken by value (moved in).
// A oneshot_receiver named as a case (an lvalue) stands for rx.recv().
template <class... Cases>
detail::select_awaiter<detail::select_case_t<Cases>...> select(Cases&&... cases) {
  return detail::select_awaiter<detail::select_case_t<Cases>...>(
      detail::as_select_case(std::forward<Cases>(cases))...);
}

}  // namespace mpg
