#include "runtime/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/embedded_model.h"
#include "runtime/tokenizer/sentencepiece_model.h"

namespace moeserve::runtime {

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path) {
  std::error_code ec;
  if (!std::filesystem::exists(model_path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(model_path,
                     ": tokenizer model not found (expected a SentencePiece .model "
                     "file, e.g. tokenizer.model from the model directory)"));
  }
  if (std::filesystem::is_directory(model_path, ec)) {
    return absl::InvalidArgumentError(
        absl::StrCat(model_path, ": is a directory; pass the SentencePiece .model file inside it"));
  }
  std::ifstream in(model_path, std::ios::binary);
  if (!in) {
    return absl::PermissionDeniedError(absl::StrCat(model_path, ": cannot open for reading"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(model_path, ": read error"));
  return FromSerializedModel(bytes.str(), model_path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::LoadEmbedded() {
  return FromSerializedModel(EmbeddedMistralV1TokenizerModel(),
                             "embedded third_party/mistral_tokenizer/tokenizer.model.v1");
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSerializedModel(
    std::string_view bytes, const std::string& source) {
  if (bytes.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": empty file, not a SentencePiece model"));
  }
  std::string error;
  std::unique_ptr<internal::SentencePieceModel> model =
      internal::SentencePieceModel::FromSerializedProto(bytes, &error);
  if (model == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": not a valid SentencePiece model (", error, ")"));
  }
  // Prompts start with BOS and generation stops at EOS, so a model without them cannot serve.
  const int32_t pieces = model->piece_size();
  if (model->bos_id() < 0 || model->bos_id() >= pieces || model->eos_id() < 0 ||
      model->eos_id() >= pieces) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": SentencePiece model defines no BOS/EOS piece (bos_id=", model->bos_id(),
        ", eos_id=", model->eos_id(), ", ", pieces, " pieces)"));
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(model)));
}

Tokenizer::Tokenizer(std::unique_ptr<internal::SentencePieceModel> model)
    : model_(std::move(model)),
      bos_id_(model_->bos_id()),
      eos_id_(model_->eos_id()),
      unk_id_(model_->unk_id()),
      vocab_size_(model_->piece_size()) {}

Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::Encode(const std::string& text, bool add_bos, bool add_eos) const {
  std::vector<int32_t> pieces;
  std::string error;
  // sentencepiece fails only without a loaded model, which FromSerializedModel rules out, so the
  // error branch is unreachable; an empty result is the safe answer if it ever is not.
  if (!model_->Encode(text, &pieces, &error)) pieces.clear();
  if (!add_bos && !add_eos) return pieces;
  std::vector<int32_t> ids;
  ids.reserve(pieces.size() + 2);
  if (add_bos) ids.push_back(bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_eos) ids.push_back(eos_id_);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids) {
    if (!InVocabulary(id)) {
      // Rare (sampling from a padded lm_head); filter into a copy only then.
      std::vector<int32_t> valid;
      valid.reserve(ids.size());
      for (int32_t v : ids) {
        if (InVocabulary(v)) valid.push_back(v);
      }
      return model_->Decode(valid);
    }
  }
  return model_->Decode(ids);
}

std::string Tokenizer::IdToPiece(int32_t id) const {
  return InVocabulary(id) ? model_->IdToPiece(id) : std::string();
}

int32_t Tokenizer::PieceToId(const std::string& piece) const { return model_->PieceToId(piece); }

bool Tokenizer::IsByteFallback(int32_t id) const { return InVocabulary(id) && model_->IsByte(id); }

bool Tokenizer::IsControl(int32_t id) const { return InVocabulary(id) && model_->IsControl(id); }

}  // namespace moeserve::runtime
