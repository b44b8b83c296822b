#include "base/code_ref.h"

#include <elf.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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
        std::string id = "build-id:";
        for (uint32_t k = 0; k < nh->n_descsz; ++k) {
          absl::StrAppendFormat(&id, "%02x", static_cast<unsigned char>(desc[k]));
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

}  // namespace

absl::StatusOr<CodeRef> CodeRefFor(const void* addr) {
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
  return f.ref;
}

absl::StatusOr<const void*> ResolveCodeRef(const CodeRef& ref) {
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
  return f.addr;
}

}  // namespace mproc
