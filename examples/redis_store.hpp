// examples/redis_store.hpp: redis_server.cpp's key-value store: shards of
// a hash map, each guarded by an mpg::mutex (tasks park on a busy shard,
// threads never block), and key expiry, lazily on access and by a
// background task that samples keys, as Redis does.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "mpg/mpg.hpp"

namespace redis {

using clock_type = std::chrono::steady_clock;

struct entry {
  std::string value;
  std::optional<clock_type::time_point> expires;
  bool expired(clock_type::time_point now) const { return expires && *expires <= now; }
};

// Heterogeneous lookup: find a std::string key by std::string_view.
struct key_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view k) const noexcept {
    return std::hash<std::string_view>{}(k);
  }
};
using key_map = std::unordered_map<std::string, entry, key_hash, std::equal_to<>>;

class store {
 public:
  static constexpr std::size_t kShards = 64;

  struct shard {
    mpg::mutex mu;
    key_map map;
  };

  shard& shard_of(std::string_view key) { return shards_[(key_hash{}(key) >> 7) % kShards]; }
  shard& shard_at(std::size_t i) { return shards_[i % kShards]; }

  // find(): the live entry of key in s (s.mu held), erasing it if expired.
  static entry* find(shard& s, std::string_view key, clock_type::time_point now) {
    auto it = s.map.find(key);
    if (it == s.map.end()) return nullptr;
    if (it->second.expired(now)) {
      s.map.erase(it);
      return nullptr;
    }
    return &it->second;
  }

 private:
  std::array<shard, kShards> shards_;
};

// Active expiry: every 100 ms, look at up to 20 keys with a deadline in each
// of a few shards and drop the expired ones (Redis samples likewise).
inline mpg::task<> expire_keys(store* db, mpg::context ctx) {
  std::size_t next = 0;
  for (;;) {
    auto r = co_await mpg::select(mpg::after(std::chrono::milliseconds(100)).recv(),
                                  ctx.done().recv());
    if (r.index() == 1) co_return;
    const auto now = clock_type::now();
    for (int k = 0; k < 4; ++k, ++next) {
      store::shard& s = db->shard_at(next);
      auto guard = co_await s.mu.scoped_lock();
      int looked = 0;
      for (auto it = s.map.begin(); it != s.map.end() && looked < 20;) {
        if (!it->second.expires) {
          ++it;
          continue;
        }
        ++looked;
        if (it->second.expired(now))
          s.map.erase(it++);
        else
          ++it;
      }
    }
  }
}

}  // namespace redis
