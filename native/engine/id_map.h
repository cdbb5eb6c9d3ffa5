// Ad id → row: an open-addressing hash table built once at load (ids are unique).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/hash.h"

namespace adrank {

class IdMap {
 public:
  IdMap() = default;
  // Returns false (and leaves the map unusable) when an id repeats; *dup gets that id.
  bool build(const int64_t* ids, int64_t n, int64_t* dup);
  // Row of `id`, or -1.
  int32_t find(int64_t id) const {
    if (mask_ == 0 && keys_.empty()) return -1;
    for (uint64_t s = splitmix64(uint64_t(id)) & mask_;; s = (s + 1) & mask_) {
      const int32_t r = rows_[s];
      if (r < 0) return -1;
      if (keys_[s] == id) return r;
    }
  }

 private:
  std::vector<int64_t> keys_;
  std::vector<int32_t> rows_;
  uint64_t mask_ = 0;
};

// A per-request set of small non-negative ints (rows), sized for `expected` insertions.
class RowSet {
 public:
  explicit RowSet(size_t expected) {
    size_t cap = 16;
    while (cap < 2 * expected) cap <<= 1;
    slots_.assign(cap, -1);
    mask_ = cap - 1;
  }
  bool contains(int32_t row) const {
    for (size_t s = splitmix64(uint64_t(row)) & mask_;; s = (s + 1) & mask_) {
      if (slots_[s] == row) return true;
      if (slots_[s] < 0) return false;
    }
  }
  // true when newly inserted
  bool insert(int32_t row) {
    for (size_t s = splitmix64(uint64_t(row)) & mask_;; s = (s + 1) & mask_) {
      if (slots_[s] == row) return false;
      if (slots_[s] < 0) {
        slots_[s] = row;
        return true;
      }
    }
  }

 private:
  std::vector<int32_t> slots_;
  size_t mask_;
};

}  // namespace adrank
