// moeserve analyze-routing --prompts NAME=FILE [--prompts NAME=FILE ...] [--json FILE]
//                          [--plot FILE.svg] [--model DIR] ...
//
// Runs the model over prompt sets (a file each: one prompt a line, blank lines skipped; each
// prompt encoded with BOS and run alone, prefill only, teacher-forced as in the paper), collects
// the routing trace of every token (runtime/model/routing_trace.h) and prints the Mixtral paper's
// routing analysis (server/cli/routing_analysis.h); --json writes it with every trace, --plot a
// self-contained SVG (server/cli/routing_svg.h).
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/base/status_macros.h"
#include "parallel/moe/skew_profile.h"
#include "server/cli/commands.h"
#include "server/cli/model_options.h"
#include "server/cli/routing_analysis.h"
#include "server/cli/routing_svg.h"

namespace moeserve::server {
namespace {

struct AnalyzeRoutingFlags {
  ModelOptions model;
  std::vector<std::string> prompts;  // NAME=FILE
  std::string json_path;
  std::string plot_path;
  bool no_traces = false;
  int64_t max_prompt_tokens = 0;  // 0: the model's context
  int64_t chunk = 256;            // prefill chunk (tokens per step)
  std::string router_skew;        // a skew profile for every prompt (imbalance lab); "": none
};

absl::StatusOr<std::vector<std::string>> ReadPromptFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--prompts: cannot read ", path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
  }
  if (lines.empty())
    return absl::InvalidArgumentError(absl::StrCat("--prompts: ", path, " has no prompt"));
  return lines;
}

// The routing of every token of `prompt`, run alone in chunks; its KV blocks are freed after.
absl::StatusOr<runtime::RoutingTrace> TraceOne(
    ModelSession& session, const std::vector<int32_t>& prompt, int64_t chunk,
    const std::shared_ptr<const parallel::SkewProfile>& skew) {
  runtime::SequenceKv kv;
  runtime::RoutingTrace trace;
  runtime::StepOutput out;
  absl::Status st;
  for (size_t begin = 0; begin < prompt.size() && st.ok(); begin += static_cast<size_t>(chunk)) {
    const size_t end = std::min(prompt.size(), begin + static_cast<size_t>(chunk));
    runtime::SequenceStep step;
    step.new_tokens.assign(prompt.begin() + static_cast<int64_t>(begin),
                           prompt.begin() + static_cast<int64_t>(end));
    step.kv = &kv;
    step.routing = &trace;
    step.skew = skew;
    st = session.model().Forward(absl::MakeSpan(&step, 1), *session.pool, &out);
  }
  session.pool->Release(kv);
  MOESERVE_RETURN_IF_ERROR(st);
  return trace;
}

absl::Status Run(const AnalyzeRoutingFlags& f) {
  if (f.prompts.empty()) return absl::InvalidArgumentError("--prompts NAME=FILE is required");
  if (f.chunk <= 0) return absl::InvalidArgumentError("--chunk must be > 0");
  std::vector<std::pair<std::string, std::vector<std::string>>> sets;
  for (const std::string& spec : f.prompts) {
    std::vector<std::string> parts = absl::StrSplit(spec, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--prompts takes NAME=FILE (e.g. code=prompts/code.txt), got '", spec, "'"));
    }
    MOESERVE_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadPromptFile(parts[1]));
    sets.emplace_back(parts[0], std::move(lines));
  }
  std::shared_ptr<const parallel::SkewProfile> skew;
  if (!f.router_skew.empty()) {
    absl::StatusOr<parallel::SkewProfile> parsed = parallel::ParseSkewProfile(f.router_skew);
    if (!parsed.ok())
      return absl::InvalidArgumentError(absl::StrCat("--router-skew: ", parsed.status().message()));
    skew = std::make_shared<const parallel::SkewProfile>(*std::move(parsed));
  }
  MOESERVE_ASSIGN_OR_RETURN(ModelSession session, OpenModelSession(f.model));
  const runtime::ModelConfig& c = session.model().config();
  if (skew != nullptr) {
    if (absl::Status st = parallel::ValidateSkewProfile(*skew, c.num_local_experts); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--router-skew: ", st.message()));
    }
  }
  const int64_t limit = f.max_prompt_tokens > 0
                            ? std::min(f.max_prompt_tokens, c.max_position_embeddings)
                            : c.max_position_embeddings;
  std::vector<PromptSetTraces> traced;
  for (const auto& [name, lines] : sets) {
    PromptSetTraces set{name, {}};
    for (const std::string& text : lines) {
      std::vector<int32_t> ids = session.tokenizer->Encode(text, /*add_bos=*/true, false);
      if (static_cast<int64_t>(ids.size()) > limit) ids.resize(static_cast<size_t>(limit));
      MOESERVE_ASSIGN_OR_RETURN(runtime::RoutingTrace trace, TraceOne(session, ids, f.chunk, skew));
      set.traces.push_back(std::move(trace));
    }
    std::cerr << "analyze-routing: " << name << ": " << set.traces.size() << " prompts traced\n";
    traced.push_back(std::move(set));
  }
  MOESERVE_ASSIGN_OR_RETURN(RoutingAnalysis analysis, AnalyzeRouting(traced, c.num_local_experts));
  std::cout << FormatAnalysis(analysis);
  if (!f.json_path.empty()) {
    std::ofstream out(f.json_path);
    out << AnalysisJson(analysis, traced, !f.no_traces).dump() << "\n";
    if (!out) return absl::InternalError(absl::StrCat("--json: cannot write ", f.json_path));
  }
  if (!f.plot_path.empty()) {
    std::ofstream out(f.plot_path);
    out << RoutingSvg(analysis);
    if (!out) return absl::InternalError(absl::StrCat("--plot: cannot write ", f.plot_path));
  }
  return absl::OkStatus();
}

}  // namespace

void AddAnalyzeRoutingCommand(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<AnalyzeRoutingFlags>();
  CLI::App* cmd = app.add_subcommand(
      "analyze-routing",
      "Run the model over prompt sets and print the Mixtral paper's routing analysis (expert "
      "shares per layer, expert repetition of consecutive tokens)");
  flags->model.AddTo(*cmd);
  cmd->add_option("--prompts", flags->prompts,
                  "A prompt set NAME=FILE, one prompt a line (repeat for several sets)")
      ->required();
  cmd->add_option("--json", flags->json_path,
                  "Write the analysis of every layer and every prompt's trace as JSON here");
  cmd->add_option("--plot", flags->plot_path, "Write a self-contained SVG plot here");
  cmd->add_flag("--no-traces", flags->no_traces, "Leave the per-token traces out of --json");
  cmd->add_option("--max-prompt-tokens", flags->max_prompt_tokens,
                  "Truncate prompts to this many tokens (0: the model's context)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--router-skew", flags->router_skew,
                  "Route every prompt under this skew profile (docs/imbalance-lab.md), e.g. "
                  "zipf:1.2 or hot:2:4: see the skew in the analysis");
  cmd->add_option("--chunk", flags->chunk, "Prompt tokens per model step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([flags, exit_code]() {
    const absl::Status st = Run(*flags);
    if (!st.ok()) std::cerr << "error: " << st.message() << "\n";
    *exit_code = st.ok() ? 0 : 1;
  });
}

}  // namespace moeserve::server
