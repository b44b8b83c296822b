// base/cpu_relax.h — one spin-wait hint to the CPU, on every architecture mproc builds for.
#ifndef MPROC_BASE_CPU_RELAX_H_
#define MPROC_BASE_CPU_RELAX_H_

namespace mproc {

// One spin-wait hint to the CPU (x86 pause, about 10 ns here; arm64 yield): for short busy
// waits. A no-op where the architecture has none.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

}  // namespace mproc

#endif  // MPROC_BASE_CPU_RELAX_H_
