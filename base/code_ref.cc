#include "base/code_ref.h"

#include <elf.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/thread_scratch.h"

namespace mproc {
namespace {

std::string ExePath() {
  static const std::string* path = [] {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    return new std::string(n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string());
  }();
  return *path;
}

// The object's name: its GNU build id, else its path.
std::string ObjectId(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const char* p = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
    const char* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const char* name = p + sizeof(ElfW(Nhdr));
      const char* desc = name + ((nh->n_namesz + 3) & ~3u);
      const char* next = desc + ((nh->n_descsz + 3) & ~3u);
      if (next > end) break;
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0) {
        static constexpr char kHex[] = "0123456789abcdef";
        std::string id = "build-id:";
        id.reserve(id.size() + 2 * nh->n_descsz);
        for (uint32_t k = 0; k < nh->n_descsz; ++k) {
          const auto c = static_cast<unsigned char>(desc[k]);
          id.push_back(kHex[c >> 4]);
          id.push_back(kHex[c & 15]);
        }
        return id;
      }
      p = next;
    }
  }
  const char* name = info->dlpi_name;
  return absl::StrCat("path:", (name == nullptr || name[0] == '\0') ? ExePath() : name);
}

bool InExecutableSegment(const dl_phdr_info* info, uintptr_t addr) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    uintptr_t start = info->dlpi_addr + ph.p_vaddr;
    if (addr >= start && addr < start + ph.p_memsz) return true;
  }
  return false;
}

struct FindAddr {
  uintptr_t addr;
  bool found = false;
  CodeRef ref;
};

struct FindRef {
  const CodeRef* ref;
  bool object_found = false;
  const void* addr = nullptr;
};

// The loader's count of objects loaded and unloaded so far: a cached answer is good while it
// is unchanged (one dl_iterate_phdr step, no object ids computed).
struct Generation {
  unsigned long long adds = 0;
  unsigned long long subs = 0;
  bool operator==(const Generation&) const = default;
};

Generation CurrentGeneration() {
  Generation g;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t size, void* data) {
        if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
          auto* g = static_cast<Generation*>(data);
          g->adds = info->dlpi_adds;
          g->subs = info->dlpi_subs;
        }
        return 1;
      },
      &g);
  return g;
}

// Per-thread caches of recent answers both ways: a pool sends the same few functions with
// every task, and computing an object's id means formatting its build id.
constexpr int kCacheSize = 8;
struct CacheEntry {
  Generation gen;
  bool used = false;
  const void* addr = nullptr;
  CodeRef ref;
};
struct Cache {
  CacheEntry entries[kCacheSize];
  int next = 0;
  CacheEntry& Slot() {
    CacheEntry& e = entries[next];
    next = (next + 1) % kCacheSize;
    return e;
  }
};
// Per thread, and still there for exit handlers (base/thread_scratch.h).
Cache& ByAddr() { return ThreadScratch<Cache, struct ByAddrTag>(); }
Cache& ByRef() { return ThreadScratch<Cache, struct ByRefTag>(); }

}  // namespace

std::string MainObjectId() {
  // dl_iterate_phdr visits the main program first.
  std::string id;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        *static_cast<std::string*>(data) = ObjectId(info);
        return 1;
      },
      &id);
  return id;
}

absl::StatusOr<CodeRef> CodeRefFor(const void* addr) {
  const Generation gen = CurrentGeneration();
  for (const CacheEntry& e : ByAddr().entries) {
    if (e.used && e.addr == addr && e.gen == gen) return e.ref;
  }
  FindAddr f{reinterpret_cast<uintptr_t>(addr)};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* f = static_cast<FindAddr*>(data);
        if (!InExecutableSegment(info, f->addr)) return 0;
        f->found = true;
        f->ref.object = ObjectId(info);
        f->ref.offset = f->addr - info->dlpi_addr;
        return 1;
      },
      &f);
  if (!f.found) {
    return absl::NotFoundError(absl::StrFormat(
        "code address %p is not inside any loaded object's executable segment (a JIT or a "
        "trampoline cannot be sent to another process)", addr));
  }
  CacheEntry& e = ByAddr().Slot();
  e = CacheEntry{gen, true, addr, f.ref};
  return f.ref;
}

absl::StatusOr<const void*> ResolveCodeRef(const CodeRef& ref) {
  const Generation gen = CurrentGeneration();
  for (const CacheEntry& e : ByRef().entries) {
    if (e.used && e.gen == gen && e.ref.offset == ref.offset && e.ref.object == ref.object) {
      return e.addr;
    }
  }
  FindRef f{&ref};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* f = static_cast<FindRef*>(data);
        if (ObjectId(info) != f->ref->object) return 0;
        f->object_found = true;
        uintptr_t addr = info->dlpi_addr + f->ref->offset;
        if (f->ref->offset < UINTPTR_MAX - info->dlpi_addr && InExecutableSegment(info, addr)) {
          f->addr = reinterpret_cast<const void*>(addr);
        }
        return 1;
      },
      &f);
  if (!f.object_found) {
    return absl::NotFoundError(absl::StrCat(
        "no loaded object matches ", ref.object,
        " (the receiving process must run the same binaries; a library loaded with dlopen in "
        "the sender must be loaded in the receiver too)"));
  }
  if (f.addr == nullptr) {
    return absl::NotFoundError(absl::StrCat("offset ", ref.offset, " is outside the executable "
                                            "segments of ", ref.object));
  }
  CacheEntry& e = ByRef().Slot();
  e = CacheEntry{gen, true, f.addr, ref};
  return f.addr;
}

}  // namespace mproc
