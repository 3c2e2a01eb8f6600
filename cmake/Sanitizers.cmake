# Sanitizer and fuzzing builds (tools/sanitize.sh, tools/fuzz.sh): flags for every target.
#   MOESERVE_SANITIZE  "" (off), "address,undefined" or "thread"; clang is expected
#   MOESERVE_FUZZ      libFuzzer harnesses in tests/fuzz; every target gets coverage
#                      instrumentation (-fsanitize=fuzzer-no-link), the harnesses link libFuzzer
# Debian's abseil, protobuf, sentencepiece and libomp are not instrumented: ASan and UBSan still
# check our code's accesses into their memory; TSan needs the annotations in
# tests/sanitizers/tsan_absl_mutex.cc (linked into the TSan test executables) to see absl::Mutex.
set(MOESERVE_SANITIZE "" CACHE STRING "Sanitizers for every target: address,undefined | thread")
option(MOESERVE_FUZZ "Build the libFuzzer harnesses (tests/fuzz; needs clang)" OFF)

if(MOESERVE_SANITIZE OR MOESERVE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "MOESERVE_SANITIZE / MOESERVE_FUZZ need clang (CXX=clang++-14)")
  endif()
  add_compile_options(-fno-omit-frame-pointer)
endif()
if(MOESERVE_SANITIZE)
  # Halt on the first report: a sanitizer finding fails the test that hit it.
  add_compile_options(-fsanitize=${MOESERVE_SANITIZE} -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${MOESERVE_SANITIZE})
endif()
if(MOESERVE_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

# Coverage instrumentation (a counter per edge, a callback per comparison) in the compute kernels'
# inner loops made the ASan engine and golden tests ~100x slower than the plain build; no harness
# reaches the kernels, so they go without it (ASan and UBSan still apply).
function(moeserve_no_fuzz_coverage target)
  if(MOESERVE_FUZZ)
    target_compile_options(${target} PRIVATE -fno-sanitize=fuzzer-no-link)
  endif()
endfunction()
