// Id → row: open-addressing hash tables built once at load (ids are unique). The ad table serves the
// CPU backend and, copied to the device, the CUDA one; the CUDA backend builds its advertiser table
// the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/hash.h"

namespace adrank {

namespace cpu {
class ThreadPool;
}

// The one lookup of the id tables: linear probing from splitmix64(id), rows -1 = empty. Compiled
// for the device too (the CUDA funnel looks ids up in a device copy of the same table).
ADRANK_HOST_DEVICE int32_t id_map_probe(const int64_t* keys, const int32_t* rows, uint64_t mask, int64_t id) {
  for (uint64_t s = splitmix64(uint64_t(id)) & mask;; s = (s + 1) & mask) {
    const int32_t r = rows[s];
    if (r < 0) return -1;
    if (keys[s] == id) return r;
  }
}

// Ids → rows: unique ids, capacity the power of two >= 1.5 n (at least 16). Copies share the table
// (it is immutable once built): the bundle loader builds it once and the engine reuses it.
class IdMap {
 public:
  IdMap() = default;
  // Builds the map in parallel over `pool` (may be null). Returns false (and leaves the map
  // unusable) when an id repeats: *dup gets that id and, when given, dup_rows two rows holding it
  // (ascending).
  bool build(const int64_t* ids, int64_t n, int64_t* dup, cpu::ThreadPool* pool = nullptr, int32_t* dup_rows = nullptr);
  // Row of `id`, or -1.
  int32_t find(int64_t id) const { return t_ ? id_map_probe(t_->keys.data(), t_->rows.data(), t_->mask, id) : -1; }
  bool built() const { return t_ != nullptr; }

  // The table itself (capacity mask() + 1; rows -1 = empty), for a copy on the device.
  const std::vector<int64_t>& keys() const { return t_ ? t_->keys : empty_keys(); }
  const std::vector<int32_t>& rows() const { return t_ ? t_->rows : empty_rows(); }
  uint64_t mask() const { return t_ ? t_->mask : 0; }
  size_t bytes() const { return t_ ? t_->keys.size() * sizeof(int64_t) + t_->rows.size() * sizeof(int32_t) : 0; }

 private:
  struct Storage {
    std::vector<int64_t> keys;
    std::vector<int32_t> rows;
    uint64_t mask = 0;
  };
  static const std::vector<int64_t>& empty_keys() {
    static const std::vector<int64_t> e;
    return e;
  }
  static const std::vector<int32_t>& empty_rows() {
    static const std::vector<int32_t> e;
    return e;
  }
  std::shared_ptr<const Storage> t_;
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
