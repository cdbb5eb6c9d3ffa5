#include "addon/wire.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#include "engine/clock.h"
#include "engine/request.h"

namespace adrank::wire {

namespace {

bool valid_utf8(const uint8_t* p, size_t n);

// protobufjs's limit on nested groups and messages (util.recursionLimit, as protoc's).
constexpr int kRecursionLimit = 100;
// validate.ts limits
constexpr size_t kMaxRequestIdBytes = 256;
constexpr size_t kMaxIdList = 100000;
constexpr uint32_t kMaxK = 10000;
constexpr uint32_t kMaxPartitions = 1024;
constexpr uint32_t kMaxRetrieveCount = 10000;

[[noreturn]] void malformed(const char* what, size_t pos) {
  throw WireError(std::string(what) + " at byte " + std::to_string(pos));
}

// A cursor over [pos, len) with the reads of protobufjs's Reader and its limits: a varint of more
// than 10 bytes is refused when read (skipping one is not limited), a tag's fifth byte may hold 4
// bits, a length's 3 (so a length is < 2^31).
class Reader {
 public:
  Reader(const uint8_t* p, size_t len) : p_(p), len_(len) {}
  size_t pos = 0;
  bool more() const { return pos < len_; }
  size_t end() const { return len_; }
  void set_end(size_t e) { len_ = e; }

  uint64_t varint64() {
    // Ten bytes or more left (every varint of a packed list but the last few): the same
    // decoding, unrolled, with no bound checks; the same value, position and refusal as the loop.
    if (len_ - pos >= 10) {
      const uint8_t* q = p_ + pos;
      uint64_t v = 0;
#pragma GCC unroll 10
      for (int i = 0; i < 10; i++) {
        const uint8_t b = q[i];
        v |= uint64_t(b & 127) << (7 * i);
        if (b < 128) {
          pos += size_t(i) + 1;
          return v;
        }
      }
      pos += 10;
      malformed("invalid varint encoding", pos);
    }
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
      if (pos >= len_) malformed("truncated varint", pos);
      const uint8_t b = p_[pos++];
      v |= uint64_t(b & 127) << (7 * i);
      if (b < 128) return v;
    }
    malformed("invalid varint encoding", pos);
  }
  uint32_t uint32() { return uint32_t(varint64()); }
  bool boolean() {
    bool v = false;
    for (int i = 0; i < 10; i++) {
      if (pos >= len_) malformed("truncated varint", pos);
      const uint8_t b = p_[pos++];
      if (b & 127) v = true;
      if (b < 128) return v;
    }
    malformed("invalid varint encoding", pos);
  }
  // A tag (its fifth byte holds at most 4 bits) or a length (at most 3: below 2^31).
  uint32_t tag() { return varint32(0x0F, "tag"); }
  size_t size() { return varint32(0x07, "length"); }
  uint32_t varint32(uint8_t max_fifth, const char* what) {
    uint32_t v = 0;
    for (int i = 0; i < 5; i++) {
      if (pos >= len_) malformed((std::string("truncated ") + what).c_str(), pos);
      const uint8_t b = p_[pos++];
      if (i == 4) {
        if (b > max_fifth) malformed((std::string("invalid ") + what + " encoding").c_str(), pos);
        return v | uint32_t(b) << 28;
      }
      v |= uint32_t(b & 127) << (7 * i);
      if (b < 128) return v;
    }
    return v;
  }
  // The end of a length-delimited payload starting here.
  size_t delimited() {
    const size_t n = size();
    if (n > len_ - pos) malformed("length past the end", pos);
    return pos + n;
  }
  float f32() {
    if (len_ - pos < 4) malformed("truncated float", pos);
    float f;
    std::memcpy(&f, p_ + pos, 4);
    pos += 4;
    return f;
  }
  // proto3 strings are UTF-8: protobufjs refuses ill-formed ones (TextDecoder's fatal mode), and so does this
  std::string string() {
    const size_t e = delimited();
    if (!valid_utf8(p_ + pos, e - pos)) malformed("invalid UTF-8 in a string field", pos);
    std::string s(reinterpret_cast<const char*>(p_ + pos), e - pos);
    pos = e;
    return s;
  }
  void skip_varint() {
    do {
      if (pos >= len_) malformed("truncated varint", pos);
    } while (p_[pos++] & 128);
  }
  void skip(size_t n) {
    if (n > len_ - pos) malformed("field past the end", pos);
    pos += n;
  }
  // An unknown field (or a known one with another wire type), as protobufjs skips it.
  void skip_type(uint32_t wire_type, int depth, uint32_t field) {
    if (depth > kRecursionLimit) malformed("max depth exceeded", pos);
    if (field == 0) malformed("illegal tag: field number 0", pos);
    switch (wire_type) {
      case 0: skip_varint(); break;
      case 1: skip(8); break;
      case 2: skip(size()); break;
      case 3:
        for (;;) {
          const uint32_t t = tag();
          const uint32_t f = t >> 3;
          if (f == 0) malformed("illegal tag: field number 0", pos);
          if ((t & 7) == 4) {
            if (f != field) malformed("invalid end group tag", pos);
            break;
          }
          skip_type(t & 7, depth + 1, f);
        }
        break;
      case 5: skip(4); break;
      default: malformed("invalid wire type", pos);
    }
  }

  // Repeated scalar fields, packed (wire type 2) or one element (their own wire type).
  template <typename T, typename Read>
  void packed(std::vector<T>& out, Read read) {
    const size_t e = delimited();
    size_t n = 0;  // the varints' last bytes: the element count, so the list grows once
    for (size_t i = pos; i < e; i++) n += p_[i] < 128;
    out.reserve(out.size() + n);
    const size_t saved = len_;
    len_ = e;
    while (pos < e) out.push_back(read());
    len_ = saved;
  }
  void floats(std::vector<float>& out) {
    const size_t e = delimited();
    if ((e - pos) % 4 != 0) malformed("packed floats not a multiple of 4 bytes", pos);
    const size_t n = (e - pos) / 4;
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, p_ + pos, 4 * n);
    pos = e;
  }

 private:
  const uint8_t* p_;
  size_t len_;
};

// Whether a JS object enumerates `k` as an array index (first, ascending) rather than in insertion order.
bool array_index(const std::string& k, uint32_t* v) {
  if (k.empty() || k.size() > 10 || (k.size() > 1 && k[0] == '0')) return false;
  uint64_t x = 0;
  for (char c : k) {
    if (c < '0' || c > '9') return false;
    x = x * 10 + uint64_t(c - '0');
  }
  if (x >= 4294967295ull) return false;
  *v = uint32_t(x);
  return true;
}

template <typename V>
void put_key(std::vector<std::pair<std::string, V>>& map, std::string key, V value) {
  for (auto& e : map)
    if (e.first == key) {
      e.second = std::move(value);
      return;
    }
  map.emplace_back(std::move(key), std::move(value));
}

template <typename V>
void js_key_order(std::vector<std::pair<std::string, V>>& map) {
  std::stable_sort(map.begin(), map.end(), [](const auto& a, const auto& b) {
    uint32_t x = 0, y = 0;
    const bool ia = array_index(a.first, &x), ib = array_index(b.first, &y);
    if (ia != ib) return ia;
    return ia && x < y;
  });
}

using Ids = std::vector<int64_t>;

void ids(Reader& r, uint32_t wt, int depth, uint32_t field, Ids& out) {
  if (wt == 2) r.packed(out, [&] { return int64_t(r.varint64()); });
  else if (wt == 0) out.push_back(int64_t(r.varint64()));
  else r.skip_type(wt, depth, field);
}

// Decodes the message in [r.pos, end) with `field(number, wire type)` for its known fields; a
// field callback returns false for an unknown number or a wire type it does not take (skipped).
template <typename F>
void message(Reader& r, size_t end, int depth, F&& field) {
  const size_t saved = r.end();
  r.set_end(end);
  while (r.more()) {
    const uint32_t t = r.tag();
    const uint32_t f = t >> 3, wt = t & 7;
    if (!field(f, wt)) r.skip_type(wt, depth, f);
  }
  r.set_end(saved);
}

void id_list(Reader& r, size_t end, int depth, Ids& out) {
  message(r, end, depth, [&](uint32_t f, uint32_t wt) {
    if (f != 1) return false;
    ids(r, wt, depth, f, out);
    return true;
  });
}

void user_features(Reader& r, size_t end, int depth, WireMessage& m) {
  message(r, end, depth, [&](uint32_t f, uint32_t wt) {
    switch (f) {
      case 1:
      case 3: {
        std::vector<float>& v = f == 1 ? m.dense : m.embedding;
        if (wt == 2) r.floats(v);
        else if (wt == 5) v.push_back(r.f32());
        else return false;
        return true;
      }
      case 2: {  // map<string, IdList>
        if (wt != 2) return false;
        const size_t e = r.delimited();
        std::string key;
        Ids value;
        message(r, e, depth, [&](uint32_t f2, uint32_t wt2) {
          if (f2 == 1 && wt2 == 2) key = r.string();
          else if (f2 == 2 && wt2 == 2) id_list(r, r.delimited(), depth + 1, value);
          else return false;
          return true;
        });
        put_key(m.sparse, std::move(key), std::move(value));
        return true;
      }
      case 4: {
        if (wt != 2) return false;
        message(r, r.delimited(), depth + 1, [&](uint32_t f2, uint32_t wt2) {
          if (f2 == 1) {
            ids(r, wt2, depth + 1, f2, m.seq_items);
          } else if (f2 == 2) {
            if (wt2 == 2) r.packed(m.seq_actions, [&] { return r.uint32(); });
            else if (wt2 == 0) m.seq_actions.push_back(r.uint32());
            else return false;
          } else {
            return false;
          }
          return true;
        });
        return true;
      }
      default: return false;
    }
  });
}

}  // namespace

namespace {
bool valid_utf8(const uint8_t* p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    int needed;
    uint8_t lower = 0x80, upper = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) needed = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
      needed = 2;
      if (b == 0xE0) lower = 0xA0;  // no overlong forms
      if (b == 0xED) upper = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      needed = 3;
      if (b == 0xF0) lower = 0x90;
      if (b == 0xF4) upper = 0x8F;  // at most U+10FFFF
    } else {
      return false;
    }
    if (n - i - 1 < size_t(needed)) return false;
    for (int k = 1; k <= needed; k++) {
      const uint8_t c = p[i + size_t(k)];
      if (c < (k == 1 ? lower : 0x80) || c > (k == 1 ? upper : 0xBF)) return false;
    }
    i += size_t(needed) + 1;
  }
  return true;
}
}  // namespace

WireMessage parse_wire(const uint8_t* data, size_t len, Kind kind) {
  WireMessage m;
  Reader r(data, len);
  message(r, len, 0, [&](uint32_t f, uint32_t wt) {
    switch (f) {
      case 1:
      case 2:
      case 11: {
        if (wt != 2) return false;
        std::string& s = f == 1 ? m.request_id : f == 2 ? m.surface : m.model_version;
        s = r.string();
        return true;
      }
      case 3:
        if (wt != 2) return false;
        m.has_user = true;
        user_features(r, r.delimited(), 1, m);
        return true;
      case 4:
        if (wt == 2) r.packed(m.targeting, [&] { return r.uint32(); });
        else if (wt == 0) m.targeting.push_back(r.uint32());
        else return false;
        return true;
      case 5:
        if (wt != 2) return false;
        message(r, r.delimited(), 1, [&](uint32_t f2, uint32_t wt2) {
          if (f2 != 1 && f2 != 2) return false;
          ids(r, wt2, 1, f2, f2 == 1 ? m.excluded_advertisers : m.excluded_ads);
          return true;
        });
        return true;
      case 6:
      case 7:
      case 17:
      case 18: {
        if (wt != 0 || (f == 17 && kind != Kind::kRetrieveAndRank) || (f == 18 && kind != Kind::kRetrieveAndRank)) return false;
        const uint32_t v = r.uint32();
        if (f == 6) m.k = v;
        else if (f == 7) m.cap = int32_t(v);
        else if (f == 17) m.retrieve_count = v;
        else m.candidate_quota = v;
        return true;
      }
      case 8: {  // map<string, float>
        if (wt != 2) return false;
        const size_t e = r.delimited();
        std::string key;
        float value = 0;
        message(r, e, 0, [&](uint32_t f2, uint32_t wt2) {
          if (f2 == 1 && wt2 == 2) key = r.string();
          else if (f2 == 2 && wt2 == 5) value = r.f32();
          else return false;
          return true;
        });
        put_key(m.task_weights, std::move(key), value);
        return true;
      }
      case 9:
        if (wt != 2) return false;
        m.has_ranking = true;
        message(r, r.delimited(), 1, [&](uint32_t f2, uint32_t wt2) {
          if ((f2 != 1 && f2 != 2) || wt2 != 0) return false;
          const uint32_t v = r.uint32();
          if (f2 == 1) m.mode = int32_t(v);
          else m.partitions = v;
          return true;
        });
        return true;
      case 10:
        if (wt != 5) return false;
        m.has_reserve = true;
        m.reserve = r.f32();
        return true;
      case 15:
        if (kind == Kind::kRetrieve) return false;
        if (wt != 0 && wt != 2) return false;
        ids(r, wt, 0, f, m.candidates);
        return true;
      case 16:
        if (wt != 0 || kind != Kind::kRank) return false;
        m.price = r.boolean();
        return true;
      case 20:
        if (wt != 0) return false;
        m.allow_fallback = r.boolean() ? 1 : 0;
        return true;
      default: return false;
    }
  });
  js_key_order(m.sparse);
  js_key_order(m.task_weights);
  return m;
}

namespace {

std::string num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

bool refuse(Refusal* why, const std::string& field, const std::string& what, const std::string& got) {
  why->field = field;
  why->message = "expected " + what + " for " + field + ", got " + got;
  return false;
}

std::string range(uint32_t lo, uint32_t hi) { return "an integer in " + std::to_string(lo) + ".." + std::to_string(hi); }

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Writes the feature bundle sections in order, each starting on an 8-byte boundary (engine/request.h).
class BundleWriter {
 public:
  explicit BundleWriter(uint8_t* base) : base_(base) {}
  template <typename T>
  void put(const T* p, size_t n, size_t count, bool align = true) {
    if (n > 0) std::memcpy(base_ + off_, p, sizeof(T) * n);
    if (count > n) std::memset(base_ + off_ + sizeof(T) * n, 0, sizeof(T) * (count - n));
    off_ += sizeof(T) * count;
    if (align) off_ = align8(off_);
  }
  void align() { off_ = align8(off_); }
  size_t off_ = kHeaderWords * 4 + 8;

 private:
  uint8_t* base_;
};

}  // namespace

bool prepare_wire(const WireMessage& m, Kind kind, const WireSchema& s, uint32_t max_candidates, Prepared* out, Refusal* why) {
  const size_t id_bytes = m.request_id.size();
  if (id_bytes < 1 || id_bytes > kMaxRequestIdBytes)
    return refuse(why, "request_id", "1.." + std::to_string(kMaxRequestIdBytes) + " bytes", std::to_string(id_bytes) + " bytes");
  const auto sit = std::find(s.surfaces.begin(), s.surfaces.end(), m.surface);
  if (sit == s.surfaces.end()) return refuse(why, "surface", "one of the model's surfaces", "\"" + m.surface + "\"");
  const uint32_t surface = uint32_t(sit - s.surfaces.begin());
  if (!m.has_user) return refuse(why, "user", "user features", "nothing");
  const auto floats = [&](const char* field, const std::vector<float>& v, uint32_t n) {
    if (v.size() != n) return refuse(why, field, std::to_string(n) + " values", std::to_string(v.size()) + " values");
    for (size_t i = 0; i < v.size(); i++)
      if (!std::isfinite(v[i])) return refuse(why, std::string(field) + "[" + std::to_string(i) + "]", "a finite number", num(v[i]));
    return true;
  };
  if (!floats("user.dense", m.dense, s.user_dense)) return false;
  if (!floats("user.embedding", m.embedding, s.user_embedding_dim)) return false;
  for (const auto& e : m.sparse)
    if (std::find(s.user_sparse.begin(), s.user_sparse.end(), e.first) == s.user_sparse.end())
      return refuse(why, "user.sparse", "field names among the model's", "\"" + e.first + "\"");
  std::vector<const Ids*> sparse(s.user_sparse.size(), nullptr);
  size_t sparse_ids = 0;
  for (size_t f = 0; f < s.user_sparse.size(); f++) {
    for (const auto& e : m.sparse)
      if (e.first == s.user_sparse[f]) sparse[f] = &e.second;
    const size_t n = sparse[f] ? sparse[f]->size() : 0;
    if (n > kMaxIdList)
      return refuse(why, "user.sparse[" + s.user_sparse[f] + "].ids", "at most " + std::to_string(kMaxIdList) + " ids", std::to_string(n) + " ids");
    sparse_ids += n;
  }
  if (m.seq_items.size() != m.seq_actions.size())
    return refuse(why, "user.sequence.actions", "one action per item id (" + std::to_string(m.seq_items.size()) + ")",
                  std::to_string(m.seq_actions.size()) + " actions");
  const size_t seq = std::min<size_t>(m.seq_items.size(), s.seq_max_len);
  for (size_t j = 0; j < seq; j++)
    if (m.seq_actions[j] >= s.seq_actions)
      return refuse(why, "user.sequence.actions[" + std::to_string(j) + "]", "an action in 0.." + std::to_string(int64_t(s.seq_actions) - 1),
                    std::to_string(m.seq_actions[j]));
  if (m.targeting.size() != s.targeting_dims)
    return refuse(why, "targeting", std::to_string(s.targeting_dims) + " values", std::to_string(m.targeting.size()) + " values");
  if (m.excluded_advertisers.size() > kMaxIdList)
    return refuse(why, "exclusions.advertiser_ids", "at most " + std::to_string(kMaxIdList) + " ids", std::to_string(m.excluded_advertisers.size()) + " ids");
  if (m.excluded_ads.size() > kMaxIdList)
    return refuse(why, "exclusions.ad_ids", "at most " + std::to_string(kMaxIdList) + " ids", std::to_string(m.excluded_ads.size()) + " ids");
  if (m.k < 1 || m.k > kMaxK) return refuse(why, "k", range(1, kMaxK), std::to_string(m.k));
  if (m.cap < 0) return refuse(why, "per_advertiser_cap", "an integer >= 0 (0 = no cap)", std::to_string(m.cap));

  std::vector<float> weights;
  if (!m.task_weights.empty()) {
    weights.assign(s.tasks.size(), 0.0f);
    for (const auto& e : m.task_weights) {
      const auto t = std::find(s.tasks.begin(), s.tasks.end(), e.first);
      if (t == s.tasks.end()) return refuse(why, "task_weights", "task names among the model's", "\"" + e.first + "\"");
      if (!std::isfinite(e.second) || e.second < 0) return refuse(why, "task_weights[" + e.first + "]", "a finite weight >= 0", num(e.second));
      weights[size_t(t - s.tasks.begin())] = e.second;
    }
    if (std::all_of(weights.begin(), weights.end(), [](float w) { return w == 0.0f; }))
      return refuse(why, "task_weights", "at least one weight > 0", "all zero");
  }

  uint32_t mode = kModeGlobal, partitions = 0;
  if (m.has_ranking && m.mode == 1) {
    if (kind == Kind::kRetrieve) return refuse(why, "ranking.mode", "GLOBAL (Retrieve has no ranking modes)", "\"LOCAL\"");
    mode = kModeLocal;
    if (m.partitions < 1 || m.partitions > kMaxPartitions) return refuse(why, "ranking.partitions", range(1, kMaxPartitions), std::to_string(m.partitions));
    partitions = m.partitions;
  } else if (m.has_ranking) {
    if (m.mode != 0) return refuse(why, "ranking.mode", "GLOBAL or LOCAL", std::to_string(m.mode));
    if (m.partitions != 0) return refuse(why, "ranking.partitions", "0 with GLOBAL mode", std::to_string(m.partitions));
  }
  float reserve = s.reserve_price;
  if (m.has_reserve) {
    if (!std::isfinite(m.reserve) || m.reserve < 0) return refuse(why, "reserve", "a finite price >= 0", num(m.reserve));
    reserve = m.reserve;
  }

  const std::vector<int64_t> none;
  const std::vector<int64_t>& candidates = kind == Kind::kRetrieve ? none : m.candidates;
  uint32_t quota = 0, retrieve_count = 0;
  bool price = false;
  if (kind != Kind::kRetrieve && candidates.size() > max_candidates)
    return refuse(why, "candidate_ad_ids", "at most " + std::to_string(max_candidates) + " ids", std::to_string(candidates.size()) + " ids");
  if (kind == Kind::kRank) price = m.price;
  if (kind == Kind::kRetrieveAndRank) {
    quota = m.candidate_quota;
    if (quota > max_candidates) return refuse(why, "candidate_quota", range(0, max_candidates), std::to_string(quota));
    if (quota > 0 && candidates.empty()) return refuse(why, "candidate_quota", "0 when candidate_ad_ids is empty", std::to_string(quota));
    const uint32_t R = m.retrieve_count == 0 ? std::max(m.k, std::min(10 * m.k, kMaxRetrieveCount)) : m.retrieve_count;
    const uint32_t min_r = candidates.empty() ? m.k : 1;
    if (R < min_r || R > kMaxRetrieveCount) return refuse(why, "retrieve_count", range(min_r, kMaxRetrieveCount), std::to_string(R));
    retrieve_count = R;
    price = true;
  }

  // the feature bundle (engine/request.h; src/features/feature-bundle.ts packs the same layout)
  const size_t T = s.tasks.size(), F = s.user_sparse.size();
  size_t n = kHeaderWords * 4 + 8;
  n = align8(n + 4 * size_t(s.user_dense));
  n = align8(n + 4 * size_t(s.user_embedding_dim));
  n = align8(n + 4 * T);
  n = align8(n + 4 * size_t(s.targeting_dims));
  n = align8(n + 4 * F);
  n = align8(n + 8 * sparse_ids);
  n = align8(n + 8 * seq);
  n = align8(n + 4 * seq);
  n = align8(n + 8 * candidates.size());
  n = align8(n + 8 * m.excluded_advertisers.size());
  n = align8(n + 8 * m.excluded_ads.size());
  out->bundle.assign(n / 8, 0);
  out->bundle_len = n;
  auto* base = reinterpret_cast<uint8_t*>(out->bundle.data());
  uint32_t h[kHeaderWords] = {};
  h[kMagic] = kRequestMagic;
  h[kLayoutVersion] = kRequestLayoutVersion;
  h[kSurface] = surface;
  h[kK] = m.k;
  h[kCap] = uint32_t(m.cap);
  h[kMode] = mode;
  h[kPartitions] = partitions;
  h[kFlags] = (weights.empty() ? 0u : uint32_t(kFlagTaskWeights)) | (price ? uint32_t(kFlagPrice) : 0u);
  h[kRetrieveCount] = retrieve_count;
  h[kSeqLen] = uint32_t(seq);
  h[kNumCandidates] = uint32_t(candidates.size());
  h[kNumExcludedAdvertisers] = uint32_t(m.excluded_advertisers.size());
  h[kNumExcludedAds] = uint32_t(m.excluded_ads.size());
  h[kNumUserSparseIds] = uint32_t(sparse_ids);
  std::memcpy(&h[kReserve], &reserve, 4);
  h[kCandidateQuota] = quota;
  std::memcpy(base, h, sizeof h);
  const uint64_t key = fnv1a64(m.request_id);
  std::memcpy(base + kHeaderWords * 4, &key, 8);
  BundleWriter w(base);
  w.put(m.dense.data(), m.dense.size(), s.user_dense);
  w.put(m.embedding.data(), m.embedding.size(), s.user_embedding_dim);
  w.put(weights.data(), weights.size(), T);
  w.put(m.targeting.data(), m.targeting.size(), s.targeting_dims);
  std::vector<uint32_t> lens(F);
  for (size_t f = 0; f < F; f++) lens[f] = sparse[f] ? uint32_t(sparse[f]->size()) : 0;
  w.put(lens.data(), F, F);
  for (size_t f = 0; f < F; f++)
    if (sparse[f]) w.put(sparse[f]->data(), sparse[f]->size(), sparse[f]->size(), false);
  w.align();
  w.put(m.seq_items.data(), seq, seq);
  w.put(m.seq_actions.data(), seq, seq);
  w.put(candidates.data(), candidates.size(), candidates.size());
  w.put(m.excluded_advertisers.data(), m.excluded_advertisers.size(), m.excluded_advertisers.size());
  w.put(m.excluded_ads.data(), m.excluded_ads.size(), m.excluded_ads.size());
  if (w.off_ != n) throw std::logic_error("feature bundle packing error: wrote " + std::to_string(w.off_) + " of " + std::to_string(n) + " bytes");
  out->surface = surface;
  out->size = kind == Kind::kRank ? double(candidates.size()) : kind == Kind::kRetrieve ? 1.0 : double(retrieve_count) + double(candidates.size());
  return true;
}

// ---------------------------------------------------------------------------------------------
// Response encoding

namespace {

class Writer {
 public:
  explicit Writer(std::string* out) : o_(out) {}
  void varint(uint64_t v) {
    while (v >= 128) {
      o_->push_back(char(uint8_t(v) | 128));
      v >>= 7;
    }
    o_->push_back(char(v));
  }
  void tag(uint32_t field, uint32_t wt) { varint(uint64_t(field) << 3 | wt); }
  void u64(uint32_t field, uint64_t v) {
    if (v == 0) return;
    tag(field, 0);
    varint(v);
  }
  void f32(uint32_t field, float v) {
    tag(field, 5);
    o_->append(reinterpret_cast<const char*>(&v), 4);
  }
  void f64(uint32_t field, double v) {
    tag(field, 1);
    o_->append(reinterpret_cast<const char*>(&v), 8);
  }
  void str(uint32_t field, const std::string& s) {
    if (s.empty()) return;
    tag(field, 2);
    varint(s.size());
    o_->append(s);
  }
  // A length-delimited sub-message written by `body`: the length is back-patched (5 bytes reserved
  // and the payload moved down when it needs fewer).
  template <typename F>
  void sub(uint32_t field, F&& body) {
    tag(field, 2);
    const size_t at = o_->size();
    o_->append(5, '\0');
    body();
    const size_t n = o_->size() - at - 5;
    // 5 varint bytes hold 35 bits; a response is far below gRPC's 4 GiB message limit
    if (uint64_t(n) >> 35) throw std::length_error("a response sub-message of " + std::to_string(n) + " bytes");
    uint8_t len[10];
    int k = 0;
    uint64_t v = n;
    while (v >= 128) {
      len[k++] = uint8_t(v) | 128;
      v >>= 7;
    }
    len[k++] = uint8_t(v);
    std::memcpy(&(*o_)[at], len, size_t(k));
    if (k < 5) o_->erase(at + size_t(k), size_t(5 - k));
  }

 private:
  std::string* o_;
};

void counts(Writer& w, const Counts& c) {
  w.u64(1, uint64_t(c.received));
  w.u64(2, uint64_t(c.unknown));
  w.u64(3, uint64_t(c.duplicate));
  w.u64(4, uint64_t(c.inactive));
  w.u64(5, uint64_t(c.out_of_budget));
  w.u64(6, uint64_t(c.paced));
  w.u64(7, uint64_t(c.targeting));
  w.u64(8, uint64_t(c.excluded_ad));
  w.u64(9, uint64_t(c.excluded_advertiser));
  w.u64(10, uint64_t(c.capped));
  w.u64(11, uint64_t(c.eligible));
}

}  // namespace

void encode_response(const Result& r, const ResponseMeta& meta, std::string* out) {
  const double t0 = steady_us();
  out->reserve(out->size() + 64 + r.ad_ids.size() * (40 + 5 * (r.ad_ids.empty() ? 0 : r.probs.size() / r.ad_ids.size())) + 3 + 9 * kTimingFields);
  Writer w(out);
  w.str(1, meta.request_id);
  const size_t n = r.ad_ids.size();
  const size_t tasks = n > 0 ? r.probs.size() / n : 0;
  const bool probs = !meta.ads_only && tasks > 0;
  const bool values = !meta.ads_only && r.values.size() == n;
  const bool prices = r.prices.size() == n;
  const bool sources = r.sources.size() == n;
  for (size_t i = 0; i < n; i++) {
    w.sub(2, [&] {
      w.u64(1, uint64_t(r.ad_ids[i]));
      w.u64(2, uint64_t(r.advertisers[i]));
      w.f32(3, r.scores[i]);
      if (probs) {
        w.tag(4, 2);
        w.varint(4 * tasks);
        out->append(reinterpret_cast<const char*>(r.probs.data() + i * tasks), 4 * tasks);
      }
      if (prices && n > 0) w.f32(5, r.prices[i]);
      if (values && n > 0) w.f32(6, r.values[i]);
      if (sources) w.u64(7, r.sources[i]);
    });
  }
  w.sub(3, [&] {
    w.str(1, meta.model_name);
    w.str(2, meta.version);
  });
  w.sub(4, [&] { counts(w, r.counts); });
  if (meta.kind == Kind::kRetrieveAndRank) {
    w.u64(6, uint64_t(r.retrieved));
    for (const SourceCounts& x : r.source_counts)
      w.sub(9, [&] {
        const Counts& c = x.counts;
        w.u64(1, x.source);
        w.u64(2, uint64_t(c.received));
        w.u64(3, uint64_t(c.unknown));
        w.u64(4, uint64_t(c.duplicate));
        w.u64(5, uint64_t(x.earlier_source));
        w.u64(6, uint64_t(c.excluded_ad));
        w.u64(7, uint64_t(c.excluded_advertiser));
        w.u64(8, uint64_t(c.inactive));
        w.u64(9, uint64_t(c.out_of_budget));
        w.u64(10, uint64_t(c.targeting));
        w.u64(11, uint64_t(c.paced));
        w.u64(12, uint64_t(c.eligible));
        w.u64(13, uint64_t(x.over_quota));
        w.u64(14, uint64_t(x.ranked));
        w.u64(15, uint64_t(x.winners));
      });
  }
  if (meta.fallback_reason != 0) {
    w.u64(20, 1);
    w.u64(21, uint64_t(meta.fallback_reason));
  }
  const double encode_us = steady_us() - t0;
  // timings last, every field written (fixed offsets from the end; see kTimingFields)
  w.tag(5, 2);
  w.varint(9 * kTimingFields);
  const Timings& t = r.timings;
  const double v[kTimingFields] = {meta.decode_us, meta.validate_us, meta.bundle_us, encode_us, t.queue, t.user, t.retrieve,
                                   t.gather, t.masknet, t.dcn, t.mlp, t.select, t.total, 0.0, 0.0};
  for (int i = 0; i < kTimingFields; i++) w.f64(uint32_t(i + 1), v[i]);
}

}  // namespace adrank::wire
