#pragma once

// Loop kernels written in plain C++ with an explicit, width-independent lane structure
// (rmsnorm, moe combine, argmax) are compiled three times and picked by the CPU at load time.
// Their bits are the same on every clone: the kernels target is built with -ffp-contract=off and
// the vectoriser never reassociates, so each clone does the same IEEE operations per element.
// ThreadSanitizer builds use the baseline only: TSan instruments the ifunc resolver, which the
// loader runs before the sanitizer runtime is up.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MOESERVE_KERNEL_NO_CLONES 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || !defined(__x86_64__)
#define MOESERVE_KERNEL_NO_CLONES 1
#endif
#ifdef MOESERVE_KERNEL_NO_CLONES
#define MOESERVE_KERNEL_CLONES
#else
#define MOESERVE_KERNEL_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
