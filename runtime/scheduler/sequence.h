// A sequence as the scheduler sees it: its tokens, how many of them are in the KV cache, and the
// blocks holding them. Plain data; the engine keeps the rest of a request's state (sampler,
// detokenizer, stream) beside it.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kv/kv_block_pool.h"

namespace moeserve::runtime {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  int64_t id = 0;               // admission order: a lower id is older and scheduled first
  std::vector<int32_t> tokens;  // prompt followed by the tokens generated so far
  int64_t num_prompt_tokens = 0;
  SequenceKv kv;  // kv.num_tokens = tokens whose K/V are cached (num_computed_tokens)
  SequenceStatus status = SequenceStatus::kWaiting;

  int64_t num_computed_tokens() const { return kv.num_tokens; }
  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_generated_tokens() const { return num_tokens() - num_prompt_tokens; }
};

}  // namespace moeserve::runtime
