#include "server/grpc/proto_convert.h"

#include <string>

namespace moeserve::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

api::ApiRequest ToApiRequest(const v1::GenerateRequest& request) {
  api::ApiRequest r;
  r.request_id = request.request_id();
  if (request.has_router_skew()) r.router_skew = request.router_skew();
  r.return_routing = request.return_routing();
  if (!request.model().empty()) r.model = request.model();
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText:
      r.prompt_text = request.text();
      break;
    case v1::GenerateRequest::kChat: {
      r.kind = api::RequestKind::kChat;
      std::vector<runtime::ChatMessage> messages;
      for (const v1::ChatMessage& m : request.chat().messages()) {
        messages.push_back({m.role(), m.content()});
      }
      r.messages = std::move(messages);
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      r.prompt_ids =
          std::vector<int32_t>(request.token_ids().ids().begin(), request.token_ids().ids().end());
      break;
    case v1::GenerateRequest::PROMPT_NOT_SET:
      break;
  }
  const v1::SamplingParameters& s = request.sampling();
  if (s.has_max_tokens()) r.max_tokens = s.max_tokens();
  if (s.has_temperature()) r.temperature = s.temperature();
  if (s.has_top_p()) r.top_p = s.top_p();
  if (s.has_top_k()) r.top_k = s.top_k();
  if (s.has_min_p()) r.min_p = s.min_p();
  if (s.has_repetition_penalty()) r.repetition_penalty = s.repetition_penalty();
  if (s.has_frequency_penalty()) r.frequency_penalty = s.frequency_penalty();
  if (s.has_presence_penalty()) r.presence_penalty = s.presence_penalty();
  if (s.has_seed()) r.seed = s.seed();
  if (s.has_n()) r.n = s.n();
  r.logprobs = s.logprobs();
  if (s.has_top_logprobs()) r.top_logprobs = s.top_logprobs();
  r.stop.assign(s.stop().begin(), s.stop().end());
  r.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  r.ignore_eos = s.ignore_eos();
  return r;
}

void ToTokenRouting(const runtime::RoutingTrace& trace, v1::ChoiceDelta* out) {
  const int64_t row = trace.num_layers * trace.top_k;
  for (int64_t p = 0; p < trace.num_positions(); ++p) {
    v1::TokenRouting* t = out->add_routing();
    t->set_position(static_cast<int32_t>(p));
    t->set_token_id(trace.tokens[static_cast<size_t>(p)]);
    t->mutable_experts()->Add(trace.experts.begin() + p * row,
                              trace.experts.begin() + (p + 1) * row);
    t->mutable_weights()->Add(trace.weights.begin() + p * row,
                              trace.weights.begin() + (p + 1) * row);
  }
}

void ToRecorderDump(const runtime::RecorderDump& dump, bool with_steps, v1::RecorderDump* out) {
  out->set_recording(dump.recording);
  out->set_max_steps(dump.max_steps);
  out->set_steps_dropped(dump.steps_dropped);
  out->set_num_layers(dump.num_layers);
  out->set_num_experts(dump.num_experts);
  out->set_world_size(dump.world_size);
  if (!with_steps) return;
  for (const runtime::RecordedStep& step : dump.steps) {
    v1::RecordedStep* s = out->add_steps();
    s->set_step(step.step);
    for (size_t l = 0; l < step.expert_tokens.size(); ++l) {
      v1::LayerStepLoad* layer = s->add_layers();
      layer->mutable_expert_tokens()->Add(step.expert_tokens[l].begin(),
                                          step.expert_tokens[l].end());
      layer->mutable_rank_rows()->Add(step.rank_rows[l].begin(), step.rank_rows[l].end());
    }
  }
}

void ToGenerateResponse(const runtime::RequestUpdate& update, const std::string& request_id,
                        const runtime::Tokenizer& tok, v1::GenerateResponse* out) {
  out->Clear();
  out->set_request_id(request_id);
  out->set_finished(update.finished);
  for (const runtime::ChoiceDelta& d : update.choices) {
    v1::ChoiceDelta* c = out->add_choices();
    c->set_index(d.index);
    c->set_text(d.text);
    c->mutable_token_ids()->Add(d.tokens.begin(), d.tokens.end());
    for (const runtime::TokenLogprob& lp : d.logprobs) {
      v1::TokenWithAlternatives* t = c->add_logprobs();
      t->set_token(lp.token);
      t->set_text(api::TokenText(tok, lp.token));
      t->set_logprob(lp.logprob);
      for (const auto& [id, logprob] : lp.top) {
        v1::TokenLogprob* alt = t->add_top_logprobs();
        alt->set_token(id);
        alt->set_text(api::TokenText(tok, id));
        alt->set_logprob(logprob);
      }
    }
    if (d.finish_reason != runtime::FinishReason::kNone) {
      c->set_finish_reason(runtime::FinishReasonName(d.finish_reason));
    }
    if (d.routing != nullptr) ToTokenRouting(*d.routing, c);
  }
  v1::Usage* usage = out->mutable_usage();
  usage->set_prompt_tokens(update.usage.prompt_tokens);
  usage->set_completion_tokens(update.usage.completion_tokens);
  usage->set_total_tokens(update.usage.prompt_tokens + update.usage.completion_tokens);
}

void ToStatsResponse(const runtime::EngineStats& s, v1::GetStatsResponse* out) {
  out->set_requests_submitted(s.requests_submitted);
  out->set_requests_finished(s.requests_finished);
  out->set_requests_cancelled(s.requests_cancelled);
  out->set_requests_rejected(s.requests_rejected);
  out->set_prompt_tokens(s.prompt_tokens);
  out->set_generated_tokens(s.generated_tokens);
  out->set_steps(s.steps);
  out->set_preemptions(s.preemptions);
  out->set_queue_depth(s.queue_depth);
  out->set_running_sequences(s.running_sequences);
  out->set_kv_blocks_total(s.kv_blocks_total);
  out->set_kv_blocks_used(s.kv_blocks_used);
  out->set_kv_usage(s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used) /
                                                static_cast<double>(s.kv_blocks_total)
                                          : 0.0);
  for (size_t layer = 0; layer < s.expert_tokens.size(); ++layer) {
    v1::LayerExpertTokens* l = out->add_expert_tokens();
    l->set_layer(static_cast<int32_t>(layer));
    l->mutable_tokens()->Add(s.expert_tokens[layer].begin(), s.expert_tokens[layer].end());
  }
  const parallel::EpStats& ep = s.ep;
  v1::ExpertParallelStats* eps = out->mutable_expert_parallel();
  eps->set_world_size(ep.world_size);
  eps->set_expert_imbalance(ep.expert_imbalance_total);
  eps->set_expert_imbalance_last_step(ep.expert_imbalance_last_step);
  eps->set_rank_imbalance(ep.rank_imbalance_total);
  eps->set_rank_imbalance_last_step(ep.rank_imbalance_last_step);
  for (size_t r = 0; r < ep.ranks.size(); ++r) {
    const parallel::EpRankStats& rs = ep.ranks[r];
    v1::EpRankStats* pr = eps->add_ranks();
    pr->set_rank(rs.rank);
    pr->set_tokens_sent(rs.tokens_sent);
    pr->set_tokens_received(rs.tokens_received);
    pr->set_bytes_sent(rs.bytes_sent());
    pr->set_bytes_received(rs.bytes_received());
    pr->set_all_to_all_seconds(rs.all_to_all_seconds);
    if (r < ep.rank_rows_total.size()) pr->set_rows_computed(ep.rank_rows_total[r]);
  }
  for (size_t layer = 0; layer < ep.expert_tokens_last_step.size(); ++layer) {
    v1::LayerExpertTokens* l = eps->add_expert_tokens_last_step();
    l->set_layer(static_cast<int32_t>(layer));
    l->mutable_tokens()->Add(ep.expert_tokens_last_step[layer].begin(),
                             ep.expert_tokens_last_step[layer].end());
  }
  eps->set_window_steps(ep.window_steps);
  auto spread = [](const parallel::LoadSpread& from, v1::LoadSpread* to) {
    to->set_max_over_mean(from.max_over_mean);
    to->set_cv(from.cv);
  };
  auto add = [](const std::vector<int64_t>& from, google::protobuf::RepeatedField<int64_t>* to) {
    to->Add(from.begin(), from.end());
  };
  for (size_t layer = 0; layer < ep.expert_tokens_window.size(); ++layer) {
    v1::LayerLoad* l = eps->add_layers();
    l->set_layer(static_cast<int32_t>(layer));
    add(ep.expert_tokens_last_step[layer], l->mutable_expert_tokens_last_step());
    add(ep.expert_tokens_window[layer], l->mutable_expert_tokens_window());
    add(ep.rank_rows_per_layer_last_step[layer], l->mutable_rank_rows_last_step());
    add(ep.rank_rows_per_layer_window[layer], l->mutable_rank_rows_window());
    spread(ep.expert_spread_last_step[layer], l->mutable_expert_spread_last_step());
    spread(ep.expert_spread_window[layer], l->mutable_expert_spread_window());
    spread(ep.rank_spread_last_step[layer], l->mutable_rank_spread_last_step());
    spread(ep.rank_spread_window[layer], l->mutable_rank_spread_window());
  }
  for (const auto& row : ep.link_rows_total) add(row, eps->mutable_link_rows_total());
  for (const auto& row : ep.link_bytes_total) add(row, eps->mutable_link_bytes_total());
  for (const auto& row : ep.link_rows_last_step) add(row, eps->mutable_link_rows_last_step());
  for (const auto& row : ep.link_bytes_last_step) add(row, eps->mutable_link_bytes_last_step());
}

}  // namespace moeserve::server
