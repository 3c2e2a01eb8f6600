// moeserve generate --prompt TEXT [--chat] [--system TEXT] [--max-tokens N] [--temperature T] ...
#include <cstdio>
#include <iostream>
#include <memory>

#include "runtime/engine/generate.h"
#include "runtime/engine/text_stream.h"
#include "runtime/tokenizer/chat_template.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"

namespace moeserve::server {
namespace {

struct GenerateFlags {
  ModelOptions model;
  std::string prompt;
  std::string system;
  bool chat = false;
  bool show_tokens = false;
  runtime::GenerateOptions gen;
};

int RunGenerate(const GenerateFlags& f) {
  absl::StatusOr<ModelSession> session = OpenModelSession(f.model);
  if (!session.ok()) {
    std::cerr << "error: " << session.status().message() << "\n";
    return 1;
  }
  runtime::Tokenizer& tok = *session->tokenizer;
  std::vector<int32_t> prompt;
  if (f.chat) {
    std::vector<runtime::ChatMessage> messages;
    if (!f.system.empty()) messages.push_back({"system", f.system});
    messages.push_back({"user", f.prompt});
    absl::StatusOr<std::vector<int32_t>> ids = runtime::EncodeChat(tok, messages);
    if (!ids.ok()) {
      std::cerr << "error: " << ids.status().message() << "\n";
      return 1;
    }
    prompt = *std::move(ids);
  } else {
    prompt = tok.Encode(f.prompt, /*add_bos=*/true, /*add_eos=*/false);
  }
  // A completion continues the prompt's text (keep the first word's leading space); a chat
  // answer is text of its own, decoded alone as mistral-common does.
  runtime::TextStream stream(tok, f.chat ? std::vector<int32_t>{} : prompt);
  absl::StatusOr<runtime::GenerateResult> result =
      runtime::Generate(session->model(), *session->pool, prompt, f.gen, [&](int32_t token) {
        if (token == tok.eos_id()) return;
        std::fputs(stream.Push(token).c_str(), stdout);
        std::fflush(stdout);
      });
  std::fputs(stream.Flush().c_str(), stdout);
  std::fputc('\n', stdout);
  if (!result.ok()) {
    std::cerr << "error: " << result.status().message() << "\n";
    return 1;
  }
  if (f.show_tokens) {
    std::cerr << "prompt tokens:";
    for (int32_t t : prompt) std::cerr << ' ' << t;
    std::cerr << "\ngenerated tokens:";
    for (int32_t t : result->tokens) std::cerr << ' ' << t;
    std::cerr << "\n";
  }
  return 0;
}

}  // namespace

void AddGenerateCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate a completion and stream it to stdout");
  flags->model.AddTo(*cmd);
  cmd->add_option("--prompt,-p", flags->prompt, "Prompt text")->required();
  cmd->add_flag("--chat", flags->chat,
                "Wrap the prompt in the Mistral instruct chat template ([INST] ... [/INST])");
  cmd->add_option("--system", flags->system, "System prompt (with --chat)");
  cmd->add_option("--max-tokens,-n", flags->gen.max_tokens, "Tokens to generate at most")
      ->envname("MOESERVE_MAX_TOKENS")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--temperature", flags->gen.sampling.temperature, "0 = greedy")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-k", flags->gen.sampling.top_k, "Keep the k most likely tokens (-1: all)")
      ->check(CLI::Range(-1, 1 << 30));
  cmd->add_option("--top-p", flags->gen.sampling.top_p, "Nucleus sampling mass in (0, 1]")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--seed", flags->gen.sampling.seed,
                  "Sampling seed: same seed, same output (default: a fresh seed per run)");
  cmd->add_option("--prefill-chunk", flags->gen.prefill_chunk,
                  "Prefill the prompt in chunks of this many tokens (0: all at once)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag(
      "--ignore-eos", [flags](int64_t) { flags->gen.stop_at_eos = false; },
      "Keep generating after the end-of-sequence token");
  cmd->add_flag("--show-tokens", flags->show_tokens, "Print prompt and output token ids to stderr");
  cmd->callback([flags, exit_code]() { *exit_code = RunGenerate(*flags); });
}

}  // namespace moeserve::server
