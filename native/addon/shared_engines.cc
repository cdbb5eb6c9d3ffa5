#include "addon/shared_engines.h"

#include <map>
#include <mutex>

namespace adrank::addon {

namespace {

struct Table {
  std::mutex mu;
  uint64_t next = 1;
  std::map<uint64_t, std::weak_ptr<Engine>> by_key;
  std::map<const Engine*, uint64_t> key_of;

  // Forgets the engines no thread holds any more (called under mu).
  void sweep() {
    for (auto it = by_key.begin(); it != by_key.end();) {
      if (it->second.expired()) {
        for (auto k = key_of.begin(); k != key_of.end(); ++k)
          if (k->second == it->first) {
            key_of.erase(k);
            break;
          }
        it = by_key.erase(it);
      } else {
        ++it;
      }
    }
  }
};

// Never destroyed: worker threads may still drop their engines while the process exits.
Table& table() {
  static Table* t = new Table();
  return *t;
}

}  // namespace

uint64_t share_engine(const std::shared_ptr<Engine>& engine) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  t.sweep();
  auto it = t.key_of.find(engine.get());
  if (it != t.key_of.end()) return it->second;
  const uint64_t key = t.next++;
  t.by_key[key] = engine;
  t.key_of[engine.get()] = key;
  return key;
}

std::shared_ptr<Engine> attach_engine(uint64_t key) {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  auto it = t.by_key.find(key);
  return it == t.by_key.end() ? nullptr : it->second.lock();
}

size_t shared_engine_count() {
  Table& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  t.sweep();
  return t.by_key.size();
}

}  // namespace adrank::addon
