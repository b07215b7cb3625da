// lib/sched/g_pools.cpp: making and pooling Gs, off the hot path. A P
// keeps a pool of dead Gs and a batch of ids (processor.hpp); the inline
// pop and push that spawns and task ends take are scheduler::new_g_local()
// and retire_g_local() in scheduler.cpp. Here: the refills and spills of
// those pools through the global pool, the allocation of fresh Gs, Gs made
// or retired by threads without a P of the runtime, and the counts.
//
// Gs are never freed before the runtime ends (g_blocks_, scheduler.hpp): a
// thread holding a G's pointer may find the G reused, never freed, and its
// id, which is never reused, tells whether it is still the G it meant
// (take_child_inline in scheduler.cpp; the dump).
#include <algorithm>
#include <memory>

#include "sched/scheduler.hpp"

namespace mpg::detail {

namespace {
// Ids a P takes from the runtime's counter at a time.
constexpr std::uint32_t kGidBatch = 1024;
// Gs moved into a P's pool at a time, from the global pool or the P's
// fresh Gs.
constexpr std::size_t kPoolBatch = 32;
}  // namespace

void scheduler::refill_gids(processor* p) noexcept {
  thread_mutex_lock l(allg_mu_);
  p->next_gid = gid_next_;
  gid_next_ += kGidBatch;
  p->gid_limit = gid_next_;
}

// take_fresh_g(): the next of p's fresh Gs (processor.hpp), or nullptr when
// it has none; up to kPoolBatch more go to p's pool with it, so that the
// spawns after this one take their inline path.
g* scheduler::take_fresh_g(processor* p) noexcept {
  if (p->fresh_next == p->fresh_end) return nullptr;
  g* gp = p->fresh_next++;
  const std::size_t n =
      std::min<std::size_t>(static_cast<std::size_t>(p->fresh_end - p->fresh_next), kPoolBatch);
  for (std::size_t i = 0; i < n; ++i) p->gfree.push(p->fresh_next++);
  return gp;
}

// allocate_gs(): a block of fresh Gs, registered in g_blocks_ under one
// lock. For a P (p not null) the block becomes p's fresh Gs, handed out by
// take_fresh_g(), whose first G is returned; a P's blocks double from
// kPoolBatch Gs up to processor::kGBlockMax, so that a burst of spawns that
// keeps many tasks alive at once (a loop of go() before a wait) makes few
// allocations and takes the lock rarely, while a P that needs few Gs keeps
// at most kPoolBatch - 1 of them unused, and one that needed many at most
// kGBlockMax - 1. Without a P, one G.
g* scheduler::allocate_gs(processor* p) {
  const std::size_t n = p != nullptr ? p->g_block_size : 1;
  // One allocation per block: no malloc header per G (idle tasks are
  // measured in bytes each).
  std::unique_ptr<g[]> block(new g[n]);
  g* gs = block.get();
  for (std::size_t i = 0; i < n; ++i) gs[i].sched = this;
  {
    thread_mutex_lock l(allg_mu_);
    // The global pool holds only dead Gs, so with room for every G ever
    // made the noexcept retire paths that push onto it never allocate;
    // growing it here, where a spawn may throw bad_alloc, is the only place
    // it grows.
    if (gfree_global_.capacity() < g_total_ + n)
      gfree_global_.reserve(std::max(g_total_ + n, 2 * gfree_global_.capacity()));
    g_blocks_.push_back(g_block{std::move(block), n});
    g_total_ += n;
  }
  if (p == nullptr) return gs;
  p->fresh_next = gs;
  p->fresh_end = gs + n;
  p->g_block_size = std::min(2 * p->g_block_size, processor::kGBlockMax);
  return take_fresh_g(p);
}

std::size_t scheduler::g_count() const {
  thread_mutex_lock l(allg_mu_);
  return g_total_;
}

[[gnu::noinline]] g* scheduler::new_g_slow(processor* p, std::coroutine_handle<> root,
                                           const char* name) {
  g* gp = nullptr;
  if (!p->gfree.empty()) gp = p->gfree.pop();
  if (p->next_gid == p->gid_limit) refill_gids(p);
  const std::uint64_t id = p->next_gid++;
  if (gp == nullptr) gp = take_fresh_g(p);
  if (gp == nullptr) {
    // Refill from the global pool first (Gs freed elsewhere), then allocate.
    {
      thread_mutex_lock l(allg_mu_);
      const std::size_t take = std::min<std::size_t>(gfree_global_.size(), kPoolBatch);
      const std::size_t rest = gfree_global_.size() - take;
      p->gfree.push_n(gfree_global_.data() + rest, take);
      gfree_global_.resize(rest);
    }
    gp = !p->gfree.empty() ? p->gfree.pop() : allocate_gs(p);
  }
  init_g(gp, id, root, name);
  return gp;
}

g* scheduler::new_g(std::coroutine_handle<> root, const char* name) {
  if (processor* p = current_p_of(this)) return new_g_local(p, root, name);
  foreign_spawned_.fetch_add(1, std::memory_order_relaxed);
  g* gp = nullptr;
  std::uint64_t id;
  {
    thread_mutex_lock l(allg_mu_);
    id = gid_next_++;
    if (!gfree_global_.empty()) {
      gp = gfree_global_.back();
      gfree_global_.pop_back();
    }
  }
  if (gp == nullptr) gp = allocate_gs(nullptr);
  init_g(gp, id, root, name);
  return gp;
}

[[gnu::noinline]] void scheduler::retire_g_slow(processor* p, g* gp) noexcept {
  p->gfree.push(gp);
  // The newest half goes: the spill is one copy under the lock. The global
  // pool has room for every G (allocate_gs), so insert never allocates.
  const std::size_t n = p->gfree.size() - processor::kGfreeMax / 2;
  g* const* spilled = p->gfree.pop_n(n);
  thread_mutex_lock l(allg_mu_);
  gfree_global_.insert(gfree_global_.end(), spilled, spilled + n);
}

[[gnu::noinline]] void scheduler::retire_g_elsewhere(g* gp) noexcept {
  clear_g(gp);
  foreign_completed_.fetch_add(1, std::memory_order_relaxed);
  thread_mutex_lock l(allg_mu_);
  gfree_global_.push_back(gp);
}

// Every G is made by new_g_local() or new_g(), whose callers count it
// spawned (processor::spawned, or foreign_spawned_ in new_g()), and every
// G retired goes through retire_g_local() or retire_g_elsewhere(), which
// count it completed; a G of a killed task is marked dead without a count,
// so it stays counted live. Relaxed loads: statistics while Ms run; with
// none running (kill_remaining: stop() joined them and sysmon) the counters
// are final, their writes sequenced before the joins.
scheduler::g_counts scheduler::counted_gs() const noexcept {
  g_counts c;
  c.spawned = foreign_spawned_.load(std::memory_order_relaxed);
  c.completed = foreign_completed_.load(std::memory_order_relaxed);
  for (const auto& p : ps_) {
    c.spawned += p->spawned.load(std::memory_order_relaxed);
    c.completed += p->completed.load(std::memory_order_relaxed);
  }
  return c;
}

std::uint64_t scheduler::live_gs() const noexcept {
  std::uint64_t n = 0;
  thread_mutex_lock l(allg_mu_);
  for_each_g([&](g* gp) {
    if (gp->status.load(std::memory_order_relaxed) != g_status::dead) ++n;
  });
  return n;
}

}  // namespace mpg::detail
