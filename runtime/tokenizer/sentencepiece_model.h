// Internal to runtime/tokenizer: a thin, absl-free wrapper around sentencepiece's processor.
//
// Why a separate translation unit: <sentencepiece_processor.h> (0.1.9x) declares
// `namespace absl { using std::string_view; }`, while Debian's abseil (20220623, built with
// ABSL_OPTION_USE_STD_STRING_VIEW=0) defines its own absl::string_view class. No file may include
// both, so sentencepiece_model.cc is the only file that includes sentencepiece and this header
// includes neither; tokenizer.cc turns the plain error strings into absl::Status.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}  // namespace sentencepiece

namespace moeserve::runtime::internal {

// Thread safety: after construction every method is const and may be called concurrently
// (SentencePieceProcessor's const methods do not mutate shared state).
class SentencePieceModel {
 public:
  // Parses a serialized ModelProto (the bytes of a .model file). Returns nullptr and sets *error
  // to sentencepiece's message when the bytes are not a usable model.
  static std::unique_ptr<SentencePieceModel> FromSerializedProto(std::string_view bytes,
                                                                 std::string* error);
  ~SentencePieceModel();
  SentencePieceModel(const SentencePieceModel&) = delete;
  SentencePieceModel& operator=(const SentencePieceModel&) = delete;

  // Pieces only (no BOS/EOS). Returns false and sets *error if sentencepiece fails, which it
  // does only when no model is loaded; FromSerializedProto rules that out.
  bool Encode(std::string_view text, std::vector<int32_t>* ids, std::string* error) const;
  // REQUIRES: every id in [0, piece_size()); the caller filters (sentencepiece would return "").
  std::string Decode(const std::vector<int32_t>& ids) const;

  int32_t piece_size() const;
  // REQUIRES for the id-taking accessors: 0 <= id < piece_size() (sentencepiece indexes the
  // piece table without a bounds check).
  const std::string& IdToPiece(int32_t id) const;
  bool IsControl(int32_t id) const;
  bool IsByte(int32_t id) const;
  bool IsUnknown(int32_t id) const;
  // unk_id() for a piece that is not in the vocabulary.
  int32_t PieceToId(std::string_view piece) const;
  // -1 when the model defines no such piece.
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t unk_id() const;
  int32_t pad_id() const;

 private:
  explicit SentencePieceModel(std::unique_ptr<sentencepiece::SentencePieceProcessor> processor);

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace moeserve::runtime::internal
