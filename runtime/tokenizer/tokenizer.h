// Text <-> token ids for Mixtral-style models: a SentencePiece model with the exact semantics of
// mistral-common's SentencePieceTokenizer (the oracle in tests/data/tokenizer/encode.json).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace moeserve::runtime {

namespace internal {
class SentencePieceModel;
}  // namespace internal

// Thread safety: immutable after Load*; every method is const and may be called from any number
// of threads at once (front ends encode, the engine loop decodes).
class Tokenizer {
 public:
  // Loads a SentencePiece .model file. NotFound when the file does not exist, InvalidArgument when
  // it is not a SentencePiece model or lacks the <s> / </s> pieces the engine relies on.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  // The Mixtral v1 tokenizer compiled into the binary (no file needed at run time).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> LoadEmbedded();
  // Parses the bytes of a .model file; `source` names them in error messages.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromSerializedModel(std::string_view bytes,
                                                                        const std::string& source);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Like mistral-common's encode(s, bos, eos): SentencePiece pieces (with the "▁" dummy prefix,
  // byte fallback for characters outside the vocabulary), optionally framed by BOS / EOS. Text is
  // never parsed for special tokens: "<s>" or "[INST]" in `text` are ordinary characters.
  // Malformed UTF-8 is not an error; SentencePiece maps each bad byte to U+FFFD.
  std::vector<int32_t> Encode(const std::string& text, bool add_bos, bool add_eos) const;
  // Like mistral-common's decode (SpecialTokenPolicy.IGNORE): control tokens (<s>, </s>) decode
  // to nothing, <unk> to " ⁇ ", byte-fallback runs that are not valid UTF-8 to U+FFFD per bad
  // byte, and the leading "▁" of the text to nothing. Always valid UTF-8. Ids outside
  // [0, vocab_size()) (a model whose lm_head is padded past the vocabulary) are skipped.
  std::string Decode(const std::vector<int32_t>& ids) const;

  // The vocabulary entry, e.g. "▁Hello", "<0x0A>", "<s>"; "" for an id outside the vocabulary.
  std::string IdToPiece(int32_t id) const;
  // unk_id() for a piece that is not in the vocabulary.
  int32_t PieceToId(const std::string& piece) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t vocab_size() const { return vocab_size_; }

  // "<0xAB>" pieces: one raw byte of UTF-8 text that had no piece of its own.
  bool IsByteFallback(int32_t id) const;
  // <s>, </s> and other control pieces (they decode to nothing).
  bool IsControl(int32_t id) const;

 private:
  explicit Tokenizer(std::unique_ptr<internal::SentencePieceModel> model);
  bool InVocabulary(int32_t id) const { return id >= 0 && id < vocab_size_; }

  std::unique_ptr<internal::SentencePieceModel> model_;
  int32_t bos_id_;
  int32_t eos_id_;
  int32_t unk_id_;
  int32_t vocab_size_;
};

}  // namespace moeserve::runtime
