// ThreadSanitizer annotations for Debian's absl::Mutex, linked into the TSan test executables
// (tools/sanitize.sh, MOESERVE_SANITIZE=thread).
//
// Why: abseil annotates its Mutex for TSan only when abseil itself is built with -fsanitize=thread;
// Debian's libabsl_synchronization.so is not, so TSan cannot see absl::Mutex synchronise anything
// and reports every access to ABSL_GUARDED_BY data as a race. These definitions interpose the
// Mutex / CondVar entry points moeserve uses (the executable's definitions win over the shared
// library's), tell TSan about the lock and unlock exactly where abseil's own
// ABSL_TSAN_MUTEX_* annotations would, and call the real functions (dlsym RTLD_NEXT).
// Accesses inside the real functions (abseil's internals, and Condition callbacks that it runs
// for other threads while they hold the lock) are ignored, as with abseil's own annotations.
//
// Await / LockWhen / CondVar::Wait release the mutex while blocked and hold it again on return:
// annotated as an unlock before the call and a lock after it.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/synchronization/mutex.h"

namespace {

#define MOESERVE_STR2(x) #x
#define MOESERVE_STR(x) MOESERVE_STR2(x)
// Itanium mangling of absl::<inline namespace>::<rest>; abseil's inline namespace is
// ABSL_OPTION_INLINE_NAMESPACE_NAME ("debian3" on bookworm).
std::string Mangled(const char* rest) {
#if ABSL_OPTION_USE_INLINE_NAMESPACE
  const std::string ns = MOESERVE_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return "_ZN4absl" + std::to_string(ns.size()) + ns + rest;
#else
  return std::string("_ZN4absl") + rest;
#endif
}

template <typename Fn>
Fn Real(const char* rest) {
  const std::string name = Mangled(rest);
  void* fn = dlsym(RTLD_NEXT, name.c_str());
  if (fn == nullptr) {
    std::fprintf(stderr, "tsan_absl_mutex: %s not found in abseil: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(fn);
}

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Time;

// abseil calls its own entry points (AwaitWithTimeout calls AwaitWithDeadline, ...); only the
// outermost call, the one moeserve made, is annotated.
thread_local int depth = 0;
struct Nested {
  Nested() { ++depth; }
  ~Nested() { --depth; }
  static bool Outermost() { return depth == 0; }
};

void PreLock(Mutex* mu, unsigned flags) {
  if (Nested::Outermost()) __tsan_mutex_pre_lock(mu, flags);
}
void PostLock(Mutex* mu, unsigned flags) {
  if (Nested::Outermost()) __tsan_mutex_post_lock(mu, flags, 0);
}
void PreUnlock(Mutex* mu, unsigned flags) {
  if (Nested::Outermost()) __tsan_mutex_pre_unlock(mu, flags);
}
void PostUnlock(Mutex* mu, unsigned flags) {
  if (Nested::Outermost()) __tsan_mutex_post_unlock(mu, flags);
}

// Runs the real abseil function `call`; annotations made inside it are abseil's own nested calls.
template <typename F>
auto Call(F call) {
  Nested nested;
  return call();
}

// The mutex is released for the duration of `wait` (which returns with it held again).
template <typename F>
auto ReleasedWhile(Mutex* mu, unsigned flags, F wait) {
  PreUnlock(mu, flags);
  auto result = Call(wait);
  PostUnlock(mu, flags);
  PreLock(mu, flags);
  PostLock(mu, flags);
  return result;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

Mutex::~Mutex() {
  static const auto real = Real<void (*)(Mutex*)>("5MutexD1Ev");
  if (Nested::Outermost()) __tsan_mutex_destroy(this, __tsan_mutex_not_static);
  Call([&] {
    real(this);
    return true;
  });
}

void Mutex::Lock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex4LockEv");
  PreLock(this, 0);
  Call([&] {
    real(this);
    return true;
  });
  PostLock(this, 0);
}

void Mutex::ReaderLock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  PreLock(this, __tsan_mutex_read_lock);
  Call([&] {
    real(this);
    return true;
  });
  PostLock(this, __tsan_mutex_read_lock);
}

bool Mutex::TryLock() {
  static const auto real = Real<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  PreLock(this, __tsan_mutex_try_lock);
  const bool locked = Call([&] { return real(this); });
  PostLock(this, __tsan_mutex_try_lock | (locked ? 0 : __tsan_mutex_try_lock_failed));
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real = Real<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  PreLock(this, __tsan_mutex_try_read_lock);
  const bool locked = Call([&] { return real(this); });
  PostLock(this, __tsan_mutex_try_read_lock | (locked ? 0 : __tsan_mutex_try_lock_failed));
  return locked;
}

void Mutex::Unlock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex6UnlockEv");
  PreUnlock(this, 0);
  Call([&] {
    real(this);
    return true;
  });
  PostUnlock(this, 0);
}

void Mutex::ReaderUnlock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  PreUnlock(this, __tsan_mutex_read_lock);
  Call([&] {
    real(this);
    return true;
  });
  PostUnlock(this, __tsan_mutex_read_lock);
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  PreLock(this, 0);
  Call([&] {
    real(this, cond);
    return true;
  });
  PostLock(this, 0);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  PreLock(this, 0);
  const bool met = Call([&] { return real(this, cond, timeout); });
  PostLock(this, 0);
  return met;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  PreLock(this, 0);
  const bool met = Call([&] { return real(this, cond, deadline); });
  PostLock(this, 0);
  return met;
}

void Mutex::Await(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex5AwaitERKNS0_9ConditionE");
  ReleasedWhile(this, 0, [&] {
    real(this, cond);
    return true;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, Duration)>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return ReleasedWhile(this, 0, [&] { return real(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, Time)>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return ReleasedWhile(this, 0, [&] { return real(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static const auto real = Real<void (*)(CondVar*, Mutex*)>("7CondVar4WaitEPNS0_5MutexE");
  ReleasedWhile(mu, 0, [&] {
    real(this, mu);
    return true;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, Duration)>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return ReleasedWhile(mu, 0, [&] { return real(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  static const auto real =
      Real<bool (*)(CondVar*, Mutex*, Time)>("7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return ReleasedWhile(mu, 0, [&] { return real(this, mu, deadline); });
}

ABSL_NAMESPACE_END
}  // namespace absl
