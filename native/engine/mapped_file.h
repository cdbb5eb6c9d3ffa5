// A bundle file mapped read-only (docs/bundle-format.md "Mapped, not copied"). The engine reads the
// ad tables and the retrieval table in place from the mapping, so what it serves must stay the bytes
// that were validated. Two ways a file can change under a mapping, and what happens:
// - replaced by rename (the way to publish a new version): the mapping keeps the old inode; nothing
//   changes for this version;
// - truncated or written in place: a page past the new end would raise SIGBUS. A process-wide
//   handler substitutes a zero page for a faulting page that lies in a live mapping and marks that
//   mapping damaged; changed() also compares the file's size and mtime with those at mapping
//   time. The engine checks changed() after every run and refuses the answer (and every later one)
//   with an error naming the file, so nothing computed from changed bytes leaves the engine.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace adrank {

class MappedFile {
 public:
  // Maps `path` read-only (MAP_SHARED, PROT_READ). Throws std::runtime_error naming the path.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Whether [p, p + bytes) lies inside the mapping.
  bool contains(const void* p, size_t bytes) const {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    return size_ > 0 && b >= data_ && bytes <= size_ && b - data_ <= std::ptrdiff_t(size_ - bytes);
  }
  // Non-empty when the file changed under the mapping (truncated, written in place): says how.
  // With `stat_file` false only the fault mark is read (no system call): the check before a run,
  // which only spares the work; the one after it, which decides, reads the file's size and mtime.
  std::string changed(bool stat_file = true) const;
  // "dev:ino:size:mtime_ns" of the mapped file (fstat of the mapping's descriptor): the same string
  // as another reader of the same file computes, e.g. a thread that hashes it (src/model/hash-worker.ts).
  std::string identity() const;
  // Drops these pages from this process's resident set (they stay in the page cache): for tables
  // read once at load.
  void release(const void* p, size_t bytes) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
  int64_t mtime_ns_ = 0;
  int slot_ = -1;  // index in the SIGBUS guard's table
};

// Test hooks and diagnostics: how many faulting pages the SIGBUS guard replaced so far.
uint64_t mapped_file_faults();

}  // namespace adrank
