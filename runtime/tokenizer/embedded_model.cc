// Embeds tokenizer.model.v1 with the assembler's .incbin (ELF targets: Linux is the only platform
// moeserve builds for). CMake passes the absolute path and the file's SHA-256 as definitions, lists
// the file in OBJECT_DEPENDS (edits rebuild this object) and re-configures when it changes (the new
// checksum changes this file's preprocessed text, so ccache cannot serve a stale object: it does
// not know about .incbin inputs).
#include "runtime/tokenizer/embedded_model.h"

#if !defined(MOESERVE_TOKENIZER_MODEL_PATH) || !defined(MOESERVE_TOKENIZER_MODEL_SHA256)
#error "runtime/tokenizer/CMakeLists.txt must define MOESERVE_TOKENIZER_MODEL_PATH and _SHA256"
#endif

// The path is a string literal; adjacent-literal concatenation pastes it into the directive. The
// labels are hidden so a shared build does not export them.
__asm__(
    ".pushsection .rodata.moeserve_mistral_v1_tokenizer, \"a\", @progbits\n"
    ".balign 16\n"
    ".globl moeserve_mistral_v1_tokenizer_begin\n"
    ".hidden moeserve_mistral_v1_tokenizer_begin\n"
    "moeserve_mistral_v1_tokenizer_begin:\n"
    ".incbin \"" MOESERVE_TOKENIZER_MODEL_PATH
    "\"\n"
    ".globl moeserve_mistral_v1_tokenizer_end\n"
    ".hidden moeserve_mistral_v1_tokenizer_end\n"
    "moeserve_mistral_v1_tokenizer_end:\n"
    ".popsection\n");

extern "C" {
__attribute__((visibility("hidden"))) extern const char moeserve_mistral_v1_tokenizer_begin[];
__attribute__((visibility("hidden"))) extern const char moeserve_mistral_v1_tokenizer_end[];
}

namespace moeserve::runtime {

std::string_view EmbeddedMistralV1TokenizerModel() {
  return std::string_view(
      moeserve_mistral_v1_tokenizer_begin,
      static_cast<size_t>(moeserve_mistral_v1_tokenizer_end - moeserve_mistral_v1_tokenizer_begin));
}

const char* EmbeddedMistralV1TokenizerSha256() { return MOESERVE_TOKENIZER_MODEL_SHA256; }

}  // namespace moeserve::runtime
