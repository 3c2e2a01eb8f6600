// The only moeserve file that includes sentencepiece; it must not include any absl header (see
// sentencepiece_model.h for the absl::string_view clash).
#include "runtime/tokenizer/sentencepiece_model.h"

#include <sentencepiece_processor.h>

#include <type_traits>
#include <utility>

namespace moeserve::runtime::internal {

// sentencepiece speaks std::vector<int>; moeserve speaks int32_t. They are one type on every
// platform we build for, which lets ids pass through without a copy.
static_assert(std::is_same_v<int, int32_t>, "sentencepiece ids are int; moeserve ids are int32_t");

std::unique_ptr<SentencePieceModel> SentencePieceModel::FromSerializedProto(std::string_view bytes,
                                                                            std::string* error) {
  auto processor = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const sentencepiece::util::Status status = processor->LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    *error = status.ToString();
    return nullptr;
  }
  return std::unique_ptr<SentencePieceModel>(new SentencePieceModel(std::move(processor)));
}

SentencePieceModel::SentencePieceModel(
    std::unique_ptr<sentencepiece::SentencePieceProcessor> processor)
    : processor_(std::move(processor)) {}

SentencePieceModel::~SentencePieceModel() = default;

bool SentencePieceModel::Encode(std::string_view text, std::vector<int32_t>* ids,
                                std::string* error) const {
  const sentencepiece::util::Status status = processor_->Encode(text, ids);
  if (!status.ok()) {
    *error = status.ToString();
    return false;
  }
  return true;
}

std::string SentencePieceModel::Decode(const std::vector<int32_t>& ids) const {
  return processor_->DecodeIds(ids);
}

int32_t SentencePieceModel::piece_size() const { return processor_->GetPieceSize(); }
const std::string& SentencePieceModel::IdToPiece(int32_t id) const {
  return processor_->IdToPiece(id);
}
bool SentencePieceModel::IsControl(int32_t id) const { return processor_->IsControl(id); }
bool SentencePieceModel::IsByte(int32_t id) const { return processor_->IsByte(id); }
bool SentencePieceModel::IsUnknown(int32_t id) const { return processor_->IsUnknown(id); }
int32_t SentencePieceModel::PieceToId(std::string_view piece) const {
  return processor_->PieceToId(piece);
}
int32_t SentencePieceModel::bos_id() const { return processor_->bos_id(); }
int32_t SentencePieceModel::eos_id() const { return processor_->eos_id(); }
int32_t SentencePieceModel::unk_id() const { return processor_->unk_id(); }
int32_t SentencePieceModel::pad_id() const { return processor_->pad_id(); }

}  // namespace moeserve::runtime::internal
