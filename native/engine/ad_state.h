// Live ad state (docs/funnel.md): active, in_budget, pacing_rate and the effective bid per ad row;
// defaults active, in budget, rate 1 and the bundle's bid. A table is one immutable snapshot: the
// engine publishes a new one per update batch and every request reads the one it started with, so
// no request sees half of a batch.
//
// Copy-on-write in chunks of kChunkRows rows: a successor snapshot starts as a copy of its
// predecessor's chunk pointers (8 bytes per chunk) and copies a chunk only the first time the batch
// writes one of its rows, so a batch costs O(N / kChunkRows + changed rows · chunk size), not O(N).
// Chunks are freed without reference counts: the chunks a batch replaced are handed to the
// predecessor's era, which lives while any snapshot as old as the predecessor does (each snapshot
// holds its era, each era the next one); the chunks in use by the newest snapshot belong to the
// lineage, which every snapshot holds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

namespace adrank {

struct AdState {
  bool active = true, in_budget = true;
  float pacing_rate = 1.0f;
};

class AdStateTable {
 public:
  static constexpr int kChunkShift = 7;
  static constexpr int64_t kChunkRows = int64_t(1) << kChunkShift;  // 128 rows: 1.5 KB a chunk

  // The first snapshot: n rows with the default state; the effective bids start as the bundle's
  // bids (n floats).
  AdStateTable(int64_t n, const float* bundle_bid) : n_(n > 0 ? n : 0), lineage_(std::make_shared<Lineage>()), era_(std::make_shared<Era>()) {
    const int64_t chunks = (n_ + kChunkRows - 1) / kChunkRows;
    lineage_->current.resize(size_t(chunks));
    chunks_.resize(size_t(chunks));
    for (int64_t c = 0; c < chunks; c++) {
      auto ch = std::make_unique<Chunk>();
      const int64_t r0 = c * kChunkRows, rows = std::min(kChunkRows, n_ - r0);
      for (int64_t i = 0; i < kChunkRows; i++) ch->words[i] = pack(AdState{});
      std::memcpy(ch->bids, bundle_bid + r0, sizeof(float) * size_t(rows));
      chunks_[size_t(c)] = ch.get();
      lineage_->current[size_t(c)] = std::move(ch);
    }
  }

  int64_t size() const { return n_; }
  AdState get(int64_t row) const { return unpack(word(row)); }
  // The bid in effect: the live override, or the bundle's bid.
  float bid(int64_t row) const { return chunks_[size_t(row >> kChunkShift)]->bids[row & (kChunkRows - 1)]; }
  // The packed word (rate bits | active << 32 | in_budget << 33), as the CUDA mirror stores it.
  uint64_t word(int64_t row) const { return chunks_[size_t(row >> kChunkShift)]->words[row & (kChunkRows - 1)]; }
  // All N words / bids, contiguous (a full upload of the CUDA mirror).
  void copy_words(uint64_t* out) const { copy_out(out, [](const Chunk& c) { return c.words; }); }
  void copy_bids(float* out) const { copy_out(out, [](const Chunk& c) { return c.bids; }); }

  // A writable successor that shares every chunk with this snapshot. Only the writer (one at a
  // time, serialised by the engine) calls it, on the newest snapshot, then set() and publish().
  std::shared_ptr<AdStateTable> successor() const {
    std::shared_ptr<AdStateTable> next(new AdStateTable(*this));
    next->era_ = std::make_shared<Era>();
    next->pred_era_ = era_;
    return next;
  }
  // Only on an unpublished successor: the row's chunk is copied the first time the batch writes it.
  void set(int64_t row, const AdState& s, float bid) {
    const size_t c = size_t(row >> kChunkShift);
    if (chunks_[c] == lineage_->current[c].get()) {  // still shared with the published snapshots
      auto copy = std::make_unique<Chunk>(*chunks_[c]);
      chunks_[c] = copy.get();
      pending_.emplace_back(c, std::move(copy));
    }
    chunks_[c]->words[row & (kChunkRows - 1)] = pack(s);
    chunks_[c]->bids[row & (kChunkRows - 1)] = bid;
  }
  // Makes this successor the newest snapshot of its lineage (before it is shared): the chunks it
  // replaced go to its predecessor's era, freed once no snapshot that old remains.
  void publish() {
    if (!pred_era_) throw std::logic_error("AdStateTable::publish: not an unpublished successor");
    for (auto& [c, chunk] : pending_) {
      pred_era_->retired.push_back(std::move(lineage_->current[c]));
      lineage_->current[c] = std::move(chunk);
    }
    pending_.clear();
    pred_era_->next = era_;
    pred_era_.reset();
  }
  // Chunks this batch copied so far (tests, metrics).
  size_t chunks_copied() const { return pending_.size(); }

  static uint64_t pack(const AdState& s) {
    uint32_t bits;
    std::memcpy(&bits, &s.pacing_rate, 4);
    return uint64_t(bits) | (uint64_t(s.active) << 32) | (uint64_t(s.in_budget) << 33);
  }
  static AdState unpack(uint64_t w) {
    AdState s;
    const uint32_t bits = uint32_t(w);
    std::memcpy(&s.pacing_rate, &bits, 4);
    s.active = (w >> 32) & 1;
    s.in_budget = (w >> 33) & 1;
    return s;
  }

 private:
  struct Chunk {
    uint64_t words[kChunkRows];
    float bids[kChunkRows];
  };
  // The chunks in use by the newest snapshot, by chunk index.
  struct Lineage {
    std::vector<std::unique_ptr<Chunk>> current;
  };
  // Chunks last used by the snapshots of this era; `next` keeps every newer era alive.
  struct Era {
    std::vector<std::unique_ptr<Chunk>> retired;
    std::shared_ptr<Era> next;
    ~Era() {  // unlink iteratively: a long chain of finished eras must not recurse
      std::shared_ptr<Era> n = std::move(next);
      while (n && n.use_count() == 1) n = std::move(n->next);
    }
  };

  AdStateTable(const AdStateTable& o) : n_(o.n_), chunks_(o.chunks_), lineage_(o.lineage_), era_(o.era_) {}

  template <class T, class F>
  void copy_out(T* out, F field) const {
    for (size_t c = 0; c < chunks_.size(); c++) {
      const int64_t r0 = int64_t(c) * kChunkRows;
      std::memcpy(out + r0, field(*chunks_[c]), sizeof(T) * size_t(std::min(kChunkRows, n_ - r0)));
    }
  }

  int64_t n_ = 0;
  std::vector<Chunk*> chunks_;              // this snapshot's view, by chunk index
  std::shared_ptr<Lineage> lineage_;
  std::shared_ptr<Era> era_;
  std::shared_ptr<Era> pred_era_;           // an unpublished successor's predecessor era
  std::vector<std::pair<size_t, std::unique_ptr<Chunk>>> pending_;  // copied, not yet published
};

}  // namespace adrank
