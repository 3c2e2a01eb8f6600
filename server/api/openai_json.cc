#include "server/api/openai_json.h"

#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/base/status_macros.h"
#include "runtime/sampling/stop_checker.h"
#include "server/api/routing_json.h"

namespace moeserve::server::api {
namespace {

using nlohmann::json;

const char* JsonTypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

absl::Status WrongType(const std::string& field, const char* expected, const json& got) {
  return InvalidParam(field,
                      absl::StrCat(field, " must be ", expected, ", got ", JsonTypeName(got)));
}

// Field readers: absent or null leaves `out` unset; a value of the wrong type is an error.
absl::Status ReadDouble(const json& body, const char* field, std::optional<double>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return WrongType(field, "a number", *it);
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadInt(const json& body, const char* field, std::optional<int64_t>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{1} << 62) {
    return InvalidParam(field, absl::StrCat(field, " is too large"));
  }
  if (!it->is_number_integer()) return WrongType(field, "an integer", *it);
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& body, const char* field, bool* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return WrongType(field, "a boolean", *it);
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& body, const char* field, std::optional<std::string>* out) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return WrongType(field, "a string", *it);
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> ReadIdList(const json& list, const std::string& field) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < list.size(); ++i) {
    const json& v = list[i];
    if (!v.is_number_integer() || v.get<int64_t>() < std::numeric_limits<int32_t>::min() ||
        v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      return InvalidParam(field, absl::StrCat(field, "[", i, "] must be a token id (int32)"));
    }
    ids.push_back(v.get<int32_t>());
  }
  return ids;
}

// prompt: "text", ["text"], [id, ...] or [[id, ...]]. Several prompts in one request (OpenAI's
// batch form) are refused: clients send one request per prompt and the engine batches them.
absl::Status ReadPrompt(const json& body, ApiRequest* r) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  const json& p = *it;
  if (p.is_string()) {
    r->prompt_text = p.get<std::string>();
    return absl::OkStatus();
  }
  if (!p.is_array()) return WrongType("prompt", "a string or an array of token ids", p);
  if (p.empty()) return InvalidParam("prompt", "prompt must not be empty");
  if (p[0].is_number()) {
    MOESERVE_ASSIGN_OR_RETURN(r->prompt_ids, ReadIdList(p, "prompt"));
    return absl::OkStatus();
  }
  if (p.size() > 1) {
    return InvalidParam("prompt", "batched prompts are not supported: send one prompt per request");
  }
  if (p[0].is_string()) {
    r->prompt_text = p[0].get<std::string>();
  } else if (p[0].is_array()) {
    MOESERVE_ASSIGN_OR_RETURN(r->prompt_ids, ReadIdList(p[0], "prompt[0]"));
  } else {
    return WrongType("prompt[0]", "a string or an array of token ids", p[0]);
  }
  return absl::OkStatus();
}

// messages: [{"role": ..., "content": "text" | [{"type": "text", "text": ...}, ...]}, ...].
absl::Status ReadMessages(const json& body, ApiRequest* r) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array()) return WrongType("messages", "an array", *it);
  std::vector<runtime::ChatMessage> messages;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string field = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return WrongType(field, "an object", m);
    runtime::ChatMessage msg;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return InvalidParam("messages", field + ".role must be a string");
    }
    msg.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      // An assistant turn may omit content in OpenAI's schema; ValidateChat rejects it later.
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        // Checked field by field: json::value("type", "") throws when "type" is not a string.
        const bool is_text_part = part.is_object() && part.contains("type") &&
                                  part.at("type").is_string() &&
                                  part.at("type").get_ref<const std::string&>() == "text" &&
                                  part.contains("text") && part.at("text").is_string();
        if (!is_text_part) {
          return InvalidParam("messages", absl::StrCat(field, ".content[", k,
                                                       "] must be a {\"type\": \"text\"} part"));
        }
        msg.content += part.at("text").get_ref<const std::string&>();
      }
    } else {
      return WrongType(field + ".content", "a string or an array of text parts", *content);
    }
    messages.push_back(std::move(msg));
  }
  r->messages = std::move(messages);
  return absl::OkStatus();
}

absl::Status ReadStop(const json& body, ApiRequest* r) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return absl::OkStatus();
  if (it->is_string()) {
    r->stop.push_back(it->get<std::string>());
    return absl::OkStatus();
  }
  if (!it->is_array()) return WrongType("stop", "a string or an array of strings", *it);
  for (size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string()) {
      return WrongType(absl::StrCat("stop[", i, "]"), "a string", (*it)[i]);
    }
    r->stop.push_back((*it)[i].get<std::string>());
  }
  return absl::OkStatus();
}

// OpenAI fields this server does not implement. A request that uses one is refused with 400
// naming it, never served as if the field were absent; the values that mean "not used" (echo
// false, best_of 1, an empty logit_bias, response_format text, no tools...) are accepted.
absl::Status RefuseUnimplemented(const json& body) {
  struct Unimplemented {
    const char* field;
    bool (*unused)(const json& value);
    const char* what;
  };
  static constexpr auto kEmpty = +[](const json& v) { return v.empty(); };
  static constexpr auto kNone = +[](const json& v) { return v == "none"; };
  static const Unimplemented kFields[] = {
      {"echo", +[](const json& v) { return v == false; }, "echoing the prompt"},
      {"suffix", +[](const json& v) { return v == ""; }, "text after the completion"},
      {"best_of", +[](const json& v) { return v == 1; }, "best_of sampling"},
      {"logit_bias", +[](const json& v) { return v.is_object() && v.empty(); }, "logit bias"},
      {"response_format",
       +[](const json& v) {
         return v.is_object() && v.size() == 1 && v.value("type", json()) == "text";
       },
       "structured output (only {\"type\": \"text\"})"},
      {"functions", kEmpty, "function calling"},
      {"function_call", kNone, "function calling"},
      {"tools", kEmpty, "tool calling"},
      {"tool_choice", kNone, "tool calling"},
  };
  for (const Unimplemented& f : kFields) {
    auto it = body.find(f.field);
    if (it == body.end() || it->is_null() || f.unused(*it)) continue;
    return InvalidParam(f.field, absl::StrCat(f.field, " is not supported by this server (", f.what,
                                              "); remove it from the request"));
  }
  return absl::OkStatus();
}

const char* ErrorType(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
      return "invalid_request_error";
    case absl::StatusCode::kNotFound:
      return "not_found_error";
    case absl::StatusCode::kResourceExhausted:
      return "rate_limit_error";
    case absl::StatusCode::kUnavailable:
      return "service_unavailable_error";
    default:
      return "server_error";
  }
}

}  // namespace

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(std::string_view body, RequestKind kind) {
  if (!runtime::IsValidUtf8(body)) return InvalidParam("", "request body is not valid UTF-8");
  // The callback remembers the last top-level key, so that a number that overflows a double
  // (1e999, anywhere under that key) is reported against the field it was given for.
  std::string top_level_key;
  const json::parser_callback_t track_key = [&](int depth, json::parse_event_t event,
                                                json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      top_level_key = parsed.get<std::string>();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(body, track_key);
  } catch (const json::out_of_range& e) {
    // nlohmann reports "[json.exception.out_of_range.406] number overflow parsing '1e999'".
    std::string what = e.what();
    if (size_t end = what.find("] "); end != std::string::npos) what.erase(0, end + 2);
    if (top_level_key.empty()) return InvalidParam("", absl::StrCat("request body: ", what));
    return InvalidParam(top_level_key,
                        absl::StrCat(top_level_key, " holds a number out of range (", what, ")"));
  } catch (const json::exception& e) {
    return InvalidParam("", absl::StrCat("request body is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return InvalidParam("", "request body must be a JSON object");
  MOESERVE_RETURN_IF_ERROR(RefuseUnimplemented(j));

  OpenAiRequest out;
  ApiRequest& r = out.api;
  r.kind = kind;
  MOESERVE_RETURN_IF_ERROR(ReadString(j, "model", &r.model));
  if (kind == RequestKind::kChat) {
    MOESERVE_RETURN_IF_ERROR(ReadMessages(j, &r));
    MOESERVE_RETURN_IF_ERROR(ReadInt(j, "max_completion_tokens", &r.max_tokens));
    if (!r.max_tokens) MOESERVE_RETURN_IF_ERROR(ReadInt(j, "max_tokens", &r.max_tokens));
    MOESERVE_RETURN_IF_ERROR(ReadBool(j, "logprobs", &r.logprobs));
    MOESERVE_RETURN_IF_ERROR(ReadInt(j, "top_logprobs", &r.top_logprobs));
  } else {
    MOESERVE_RETURN_IF_ERROR(ReadPrompt(j, &r));
    MOESERVE_RETURN_IF_ERROR(ReadInt(j, "max_tokens", &r.max_tokens));
    // Completions: "logprobs": k asks for the chosen token plus k alternatives.
    MOESERVE_RETURN_IF_ERROR(ReadInt(j, "logprobs", &r.top_logprobs));
    if (r.top_logprobs) r.logprobs = true;
  }
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "temperature", &r.temperature));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "top_p", &r.top_p));
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, "top_k", &r.top_k));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "min_p", &r.min_p));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "repetition_penalty", &r.repetition_penalty));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "frequency_penalty", &r.frequency_penalty));
  MOESERVE_RETURN_IF_ERROR(ReadDouble(j, "presence_penalty", &r.presence_penalty));
  std::optional<int64_t> seed;
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, "seed", &seed));
  if (seed) r.seed = static_cast<uint64_t>(*seed);
  MOESERVE_RETURN_IF_ERROR(ReadInt(j, "n", &r.n));
  MOESERVE_RETURN_IF_ERROR(ReadStop(j, &r));
  if (auto it = j.find("stop_token_ids"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) return WrongType("stop_token_ids", "an array of token ids", *it);
    MOESERVE_ASSIGN_OR_RETURN(r.stop_token_ids, ReadIdList(*it, "stop_token_ids"));
  }
  MOESERVE_RETURN_IF_ERROR(ReadBool(j, "ignore_eos", &r.ignore_eos));
  MOESERVE_RETURN_IF_ERROR(ReadString(j, "router_skew", &r.router_skew));
  MOESERVE_RETURN_IF_ERROR(ReadBool(j, "return_routing", &r.return_routing));
  MOESERVE_RETURN_IF_ERROR(ReadBool(j, "stream", &out.stream));
  if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return WrongType("stream_options", "an object", *it);
    MOESERVE_RETURN_IF_ERROR(ReadBool(*it, "include_usage", &out.include_usage));
  }
  return out;
}

int HttpStatusOf(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorBody(const absl::Status& status) {
  const std::string param = ParamOf(status);
  json error = {{"message", std::string(status.message())},
                {"type", ErrorType(status)},
                {"param", param.empty() ? json(nullptr) : json(param)},
                {"code", HttpStatusOf(status)}};
  return json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string ErrorBody(int http_status, const std::string& message) {
  json error = {{"message", message},
                {"type", http_status == 404 ? "not_found_error" : "invalid_request_error"},
                {"param", nullptr},
                {"code", http_status}};
  return json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

json UsageJson(const runtime::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens},
          {"completion_tokens", usage.completion_tokens},
          {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

OpenAiResponder::OpenAiResponder(RequestKind kind, std::string id, std::string model,
                                 int64_t created, const runtime::Tokenizer& tok, bool logprobs,
                                 int n)
    : kind_(kind),
      id_(std::move(id)),
      model_(std::move(model)),
      created_(created),
      tok_(tok),
      logprobs_(logprobs),
      choices_(static_cast<size_t>(std::max(n, 1))) {}

json OpenAiResponder::Envelope(const char* object) const {
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
}

json OpenAiResponder::Logprobs(const std::vector<runtime::TokenLogprob>& lps,
                               size_t text_offset_base) const {
  if (!logprobs_) return nullptr;
  auto bytes_of = [](const std::string& s) {
    json b = json::array();
    for (unsigned char c : s) b.push_back(static_cast<int>(c));
    return b;
  };
  if (kind_ == RequestKind::kChat) {
    json content = json::array();
    for (const runtime::TokenLogprob& lp : lps) {
      const std::string text = TokenText(tok_, lp.token);
      json top = json::array();
      for (const auto& [id, logprob] : lp.top) {
        const std::string alt = TokenText(tok_, id);
        top.push_back({{"token", alt}, {"logprob", logprob}, {"bytes", bytes_of(alt)}});
      }
      content.push_back({{"token", text},
                         {"logprob", lp.logprob},
                         {"bytes", bytes_of(text)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
       offsets = json::array();
  size_t offset = text_offset_base;
  for (const runtime::TokenLogprob& lp : lps) {
    const std::string text = TokenText(tok_, lp.token);
    tokens.push_back(text);
    token_logprobs.push_back(lp.logprob);
    json alts = json::object();
    for (const auto& [id, logprob] : lp.top) alts[TokenText(tok_, id)] = logprob;
    top.push_back(alts);
    offsets.push_back(offset);
    offset += text.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_logprobs},
          {"top_logprobs", top},
          {"text_offset", offsets}};
}

std::vector<std::string> OpenAiResponder::Chunks(const runtime::RequestUpdate& update) {
  std::vector<std::string> out;
  const bool chat = kind_ == RequestKind::kChat;
  json choices = json::array();
  for (const runtime::ChoiceDelta& d : update.choices) {
    if (d.index < 0 || d.index >= static_cast<int32_t>(choices_.size())) continue;
    Choice& c = choices_[static_cast<size_t>(d.index)];
    const bool finished = d.finish_reason != runtime::FinishReason::kNone;
    if (d.text.empty() && !finished && !(chat && !c.role_sent)) continue;
    json choice = {
        {"index", d.index},
        {"logprobs", Logprobs(d.logprobs, c.text.size())},
        {"finish_reason", finished ? json(FinishReasonName(d.finish_reason)) : json(nullptr)}};
    if (chat) {
      json delta = json::object();
      if (!c.role_sent) delta["role"] = "assistant";
      if (!d.text.empty() || !c.role_sent) delta["content"] = d.text;
      c.role_sent = true;
      choice["delta"] = delta;
    } else {
      choice["text"] = d.text;
    }
    c.text += d.text;
    choices.push_back(std::move(choice));
  }
  if (!choices.empty()) {
    json chunk = Envelope(chat ? "chat.completion.chunk" : "text_completion");
    chunk["choices"] = std::move(choices);
    // return_routing: the chunk in which a choice finishes carries its trace.
    std::vector<std::pair<int32_t, const runtime::RoutingTrace*>> traced;
    for (const runtime::ChoiceDelta& d : update.choices) {
      if (d.routing != nullptr) traced.emplace_back(d.index, d.routing.get());
    }
    if (!traced.empty()) chunk["routing"] = RoutingJson(traced);
    out.push_back(chunk.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  return out;
}

std::string OpenAiResponder::UsageChunk(const runtime::Usage& usage) const {
  json chunk = Envelope(kind_ == RequestKind::kChat ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array();
  chunk["usage"] = UsageJson(usage);
  return chunk.dump(-1, ' ', false, json::error_handler_t::replace);
}

void OpenAiResponder::Accumulate(const runtime::RequestUpdate& update) {
  for (const runtime::ChoiceDelta& d : update.choices) {
    if (d.index < 0 || d.index >= static_cast<int32_t>(choices_.size())) continue;
    Choice& c = choices_[static_cast<size_t>(d.index)];
    c.text += d.text;
    c.logprobs.insert(c.logprobs.end(), d.logprobs.begin(), d.logprobs.end());
    if (d.finish_reason != runtime::FinishReason::kNone) c.finish = d.finish_reason;
    if (d.routing != nullptr) c.routing = d.routing;
  }
}

std::string OpenAiResponder::Body(const runtime::Usage& usage) const {
  const bool chat = kind_ == RequestKind::kChat;
  json body = Envelope(chat ? "chat.completion" : "text_completion");
  json choices = json::array();
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    json choice = {{"index", i},
                   {"logprobs", Logprobs(c.logprobs, 0)},
                   {"finish_reason", FinishReasonName(c.finish)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
    }
    choices.push_back(std::move(choice));
  }
  body["choices"] = std::move(choices);
  body["usage"] = UsageJson(usage);
  std::vector<std::pair<int32_t, const runtime::RoutingTrace*>> traced;
  for (size_t i = 0; i < choices_.size(); ++i) {
    if (choices_[i].routing)
      traced.emplace_back(static_cast<int32_t>(i), choices_[i].routing.get());
  }
  if (!traced.empty()) body["routing"] = RoutingJson(traced);
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace moeserve::server::api
