// The Mixtral v1 SentencePiece model (third_party/mistral_tokenizer/tokenizer.model.v1), compiled
// into the binary so `moeserve generate` needs no tokenizer file at run time.
#pragma once

#include <string_view>

namespace moeserve::runtime {

// The bytes of the vendored tokenizer.model.v1 (a serialized sentencepiece ModelProto). They live
// in .rodata for the life of the process.
std::string_view EmbeddedMistralV1TokenizerModel();

// Lower-case hex SHA-256 of those bytes as CMake computed it at configure time; for start-up logs
// and ModelInfo. third_party/mistral_tokenizer/README.md records the expected value.
const char* EmbeddedMistralV1TokenizerSha256();

}  // namespace moeserve::runtime
