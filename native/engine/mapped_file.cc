#include "engine/mapped_file.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace adrank {

namespace {

// The SIGBUS guard: the live mappings' ranges, read by the handler without locks.
constexpr int kSlots = 256;
struct Slot {
  std::atomic<uintptr_t> begin{0}, end{0};
  std::atomic<bool> damaged{false};
};
Slot g_slots[kSlots];
std::mutex g_slots_mu;  // writers only
std::atomic<uint64_t> g_faults{0};
uintptr_t g_page = 4096;
struct sigaction g_previous;
std::once_flag g_install;

void on_sigbus(int sig, siginfo_t* info, void* ctx) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(info->si_addr);
  for (Slot& s : g_slots) {
    const uintptr_t b = s.begin.load(std::memory_order_acquire), e = s.end.load(std::memory_order_acquire);
    if (b != 0 && a >= b && a < e) {
      // A page of a mapped bundle is gone (the file was truncated): read zeros there from now on.
      void* page = reinterpret_cast<void*>(a & ~(g_page - 1));
      if (mmap(page, g_page, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED) {
        s.damaged.store(true, std::memory_order_release);
        g_faults.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      break;
    }
  }
  // Not ours: whatever handled SIGBUS before, or the default action (the fault repeats on return).
  if (g_previous.sa_flags & SA_SIGINFO) {
    if (g_previous.sa_sigaction) return g_previous.sa_sigaction(sig, info, ctx);
  } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    return g_previous.sa_handler(sig);
  }
  sigaction(SIGBUS, &g_previous, nullptr);
}

void install_guard() {
  std::call_once(g_install, [] {
    g_page = uintptr_t(sysconf(_SC_PAGESIZE));
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

int64_t mtime_ns(const struct stat& st) { return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec; }

[[noreturn]] void fail(const std::string& path, const char* what) {
  throw std::runtime_error("cannot map bundle " + path + ": " + what + ": " + std::strerror(errno));
}

}  // namespace

uint64_t mapped_file_faults() { return g_faults.load(); }

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  install_guard();
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m->fd_ < 0) fail(path, "open");
  struct stat st;
  if (fstat(m->fd_, &st) != 0) fail(path, "fstat");
  if (!S_ISREG(st.st_mode)) {
    errno = EINVAL;
    fail(path, "not a regular file");
  }
  m->size_ = size_t(st.st_size);
  m->mtime_ns_ = mtime_ns(st);
  if (m->size_ == 0) return m;
  void* p = mmap(nullptr, m->size_, PROT_READ, MAP_SHARED, m->fd_, 0);
  if (p == MAP_FAILED) fail(path, "mmap");
  m->data_ = static_cast<const uint8_t*>(p);
  madvise(p, m->size_, MADV_WILLNEED);
  std::lock_guard<std::mutex> lock(g_slots_mu);
  for (int i = 0; i < kSlots; i++) {
    if (g_slots[i].begin.load() != 0) continue;
    g_slots[i].damaged.store(false);
    g_slots[i].end.store(reinterpret_cast<uintptr_t>(p) + m->size_, std::memory_order_release);
    g_slots[i].begin.store(reinterpret_cast<uintptr_t>(p), std::memory_order_release);
    m->slot_ = i;
    break;
  }
  if (m->slot_ < 0) throw std::runtime_error("cannot map bundle " + path + ": more than 256 bundles mapped at once");
  return m;
}

MappedFile::~MappedFile() {
  if (slot_ >= 0) {
    std::lock_guard<std::mutex> lock(g_slots_mu);
    g_slots[slot_].begin.store(0, std::memory_order_release);
    g_slots[slot_].end.store(0, std::memory_order_release);
  }
  if (data_) munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

std::string MappedFile::changed(bool stat_file) const {
  if (slot_ >= 0 && g_slots[slot_].damaged.load(std::memory_order_acquire))
    return "bundle " + path_ + " was truncated while mapped (a read past its new end)";
  struct stat st;
  if (stat_file && fd_ >= 0 && fstat(fd_, &st) == 0) {
    if (size_t(st.st_size) != size_)
      return "bundle " + path_ + " changed size while mapped (" + std::to_string(size_) + " → " + std::to_string(st.st_size) + " bytes)";
    if (mtime_ns(st) != mtime_ns_) return "bundle " + path_ + " was written in place while mapped (its mtime changed)";
  }
  return "";
}

std::string MappedFile::identity() const {
  struct stat st;
  if (fd_ < 0 || fstat(fd_, &st) != 0) return "";
  return std::to_string(uint64_t(st.st_dev)) + ":" + std::to_string(uint64_t(st.st_ino)) + ":" + std::to_string(int64_t(st.st_size)) + ":" +
         std::to_string(mtime_ns(st));
}

void MappedFile::release(const void* p, size_t bytes) const {
  if (!contains(p, bytes) || bytes == 0) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + g_page - 1) & ~(g_page - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(g_page - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);
}

}  // namespace adrank
