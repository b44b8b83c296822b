#include "base/clone3.h"

#include <sys/syscall.h>

#ifndef __x86_64__
#error "mproc's clone3 trampoline is written for x86-64"
#endif

// long mproc_clone3_trampoline(clone_args* args, size_t size, int (*fn)(void*), void* arg)
//
// rdi = args, rsi = size: already the syscall's arguments. fn and arg move to r8/r9, which
// the syscall preserves in both parent and child. The kernel starts the child with rax = 0
// and rsp = stack + stack_size; there it calls fn(arg) and exits with its result. The parent
// returns the syscall's result (pid or -errno).
asm(R"(
    .text
    .globl mproc_clone3_trampoline
    .type mproc_clone3_trampoline, @function
mproc_clone3_trampoline:
    .cfi_startproc
    mov %rdx, %r8
    mov %rcx, %r9
    mov $435, %eax
    syscall
    test %rax, %rax
    jnz 1f
    .cfi_undefined rip
    xor %ebp, %ebp
    mov %r9, %rdi
    call *%r8
    mov %eax, %edi
    mov $60, %eax
    syscall
    hlt
1:
    ret
    .cfi_endproc
    .size mproc_clone3_trampoline, .-mproc_clone3_trampoline
    .section .note.GNU-stack,"",@progbits
    .text
)");

extern "C" long mproc_clone3_trampoline(clone_args* args, unsigned long size, int (*fn)(void*),
                                        void* arg);

namespace mproc {

long Clone3(clone_args* args, int (*fn)(void*), void* arg) {
  return mproc_clone3_trampoline(args, sizeof(*args), fn, arg);
}

}  // namespace mproc
