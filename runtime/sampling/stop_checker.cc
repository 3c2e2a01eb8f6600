#include "runtime/sampling/stop_checker.h"

#include <algorithm>
#include <utility>

namespace moeserve::runtime {

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto lead = static_cast<unsigned char>(text[i]);
    // Sequence length from the lead byte; 0 for bytes that cannot start one (80-C1, F5-FF).
    const size_t length = lead < 0x80                   ? 1
                          : lead >= 0xC2 && lead < 0xE0 ? 2
                          : lead >= 0xE0 && lead < 0xF0 ? 3
                          : lead >= 0xF0 && lead < 0xF5 ? 4
                                                        : 0;
    if (length == 0 || length > text.size() - i) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((static_cast<unsigned char>(text[i + k]) & 0xC0) != 0x80) return false;
    }
    // The second byte's narrower ranges rule out overlongs (E0, F0), surrogates (ED) and code
    // points past U+10FFFF (F4).
    const auto second = length > 1 ? static_cast<unsigned char>(text[i + 1]) : 0x80;
    if ((lead == 0xE0 && second < 0xA0) || (lead == 0xED && second > 0x9F) ||
        (lead == 0xF0 && second < 0x90) || (lead == 0xF4 && second > 0x8F)) {
      return false;
    }
    i += length;
  }
  return true;
}

const char* FinishReasonFor(StopCause cause) {
  switch (cause) {
    case StopCause::kNone:
      return "";
    case StopCause::kMaxTokens:
      return "length";
    case StopCause::kEosToken:
    case StopCause::kStopTokenId:
    case StopCause::kStopString:
      return "stop";
  }
  return "";
}

StopChecker::StopChecker(const SamplingParams& params, int32_t eos_token_id, int64_t max_new_tokens)
    : stop_token_ids_(params.stop_token_ids),
      eos_token_id_(eos_token_id),
      ignore_eos_(params.ignore_eos),
      max_new_tokens_(max_new_tokens) {
  // Validate() rejects empty stop strings; skipping them here keeps find("") from matching.
  for (const std::string& stop : params.stop) {
    if (!stop.empty()) stop_strings_.push_back(stop);
  }
}

size_t StopChecker::PossibleStopPrefix(std::string_view text) const {
  size_t longest = 0;
  for (const std::string& stop : stop_strings_) {
    // Candidates are shorter than the stop string (a whole one would have matched already).
    for (size_t len = std::min(text.size(), stop.size() - 1); len > longest; --len) {
      if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
        longest = len;
        break;
      }
    }
  }
  return longest;
}

StopCheckResult StopChecker::Append(int32_t token, std::string_view text) {
  StopCheckResult result;
  if (finished_ != StopCause::kNone) {
    result.cause = finished_;
    return result;
  }
  ++num_tokens_;

  // A stop token ends the sequence without its text; what was held back is ordinary output.
  const bool is_stop_token =
      std::find(stop_token_ids_.begin(), stop_token_ids_.end(), token) != stop_token_ids_.end();
  if ((token == eos_token_id_ && !ignore_eos_) || is_stop_token) {
    result.cause =
        (token == eos_token_id_ && !ignore_eos_) ? StopCause::kEosToken : StopCause::kStopTokenId;
    result.stop_token_id = token;
    result.text = std::move(held_);
    held_.clear();
    finished_ = result.cause;
    return result;
  }

  std::string buffer = std::move(held_);
  held_.clear();
  buffer.append(text);

  // The stop string completed first: smallest end offset, then the longer one.
  size_t best_start = std::string::npos;
  size_t best_end = std::string::npos;
  const std::string* best = nullptr;
  for (const std::string& stop : stop_strings_) {
    const size_t start = buffer.find(stop);
    if (start == std::string::npos) continue;
    const size_t end = start + stop.size();
    if (best == nullptr || end < best_end || (end == best_end && start < best_start)) {
      best_start = start;
      best_end = end;
      best = &stop;
    }
  }
  if (best != nullptr) {
    buffer.resize(best_start);
    result.text = std::move(buffer);
    result.cause = StopCause::kStopString;
    result.stop_string = *best;
    finished_ = result.cause;
    return result;
  }

  if (num_tokens_ >= max_new_tokens_) {
    result.text = std::move(buffer);
    result.cause = StopCause::kMaxTokens;
    finished_ = result.cause;
    return result;
  }

  const size_t hold = PossibleStopPrefix(buffer);
  held_ = buffer.substr(buffer.size() - hold);
  buffer.resize(buffer.size() - hold);
  result.text = std::move(buffer);
  return result;
}

std::string StopChecker::Flush() {
  std::string out = std::move(held_);
  held_.clear();
  return out;
}

}  // namespace moeserve::runtime
