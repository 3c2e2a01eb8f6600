// libFuzzer harness: ParseModelConfig on arbitrary config.json text.
// Oracle: no crash, throw or abort; a config that parses validates, and its ToJson() parses back
// to a config that prints the same (the JSON make-model writes and ModelInfo prints).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "runtime/config/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = moeserve::runtime::ParseModelConfig(text, "fuzz/config.json");
  if (!config.ok()) return 0;
  if (!config->Validate().ok()) std::abort();  // ParseModelConfig validates
  const std::string json = config->ToJson();
  auto again = moeserve::runtime::ParseModelConfig(json, "fuzz/ToJson");
  if (!again.ok() || again->ToJson() != json) std::abort();
  return 0;
}
