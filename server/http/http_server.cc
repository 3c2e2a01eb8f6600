#include "server/http/http_server.h"

#include <sys/socket.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "nlohmann/json.hpp"
#include "server/api/openai_json.h"
#include "spdlog/spdlog.h"

namespace moeserve::server {
namespace {

using api::RequestKind;

// cpp-httplib's TaskQueue with threads started on demand, up to `max_threads`: one thread per
// open connection, so a streaming response may block its thread for the whole generation. (The
// stock ThreadPool starts all threads up front.) Threads stay once started; they sleep on the
// condition variable when idle.
class GrowingThreadPool : public httplib::TaskQueue {
 public:
  explicit GrowingThreadPool(size_t max_threads) : max_threads_(max_threads) {}
  ~GrowingThreadPool() override = default;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    jobs_.push_back(std::move(fn));
    // Idle threads that were notified but have not taken a job yet still count in idle_, so
    // compare with the jobs waiting, not with zero.
    if (jobs_.size() > idle_ && threads_.size() < max_threads_) {
      threads_.emplace_back([this] { Work(); });
    } else {
      cv_.notify_one();
    }
  }

  void shutdown() override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return !jobs_.empty() || shutdown_; });
      --idle_;
      if (jobs_.empty()) return;  // shutdown
      std::function<void()> fn = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  std::vector<std::thread> threads_;        // guarded by mu_ (shutdown joins after the flag)
  size_t idle_ = 0;                         // guarded by mu_
  bool shutdown_ = false;                   // guarded by mu_
};

constexpr char kJson[] = "application/json";

void SetError(httplib::Response& res, const absl::Status& status) {
  res.status = api::HttpStatusOf(status);
  res.set_content(api::ErrorBody(status), kJson);
}

// One SSE response's state, shared by the content provider and its releaser.
struct SseState {
  SseState(std::shared_ptr<runtime::RequestStream> s, api::OpenAiResponder r, RequestTimer t,
           bool usage)
      : stream(std::move(s)), responder(std::move(r)), timer(t), include_usage(usage) {}
  std::shared_ptr<runtime::RequestStream> stream;
  api::OpenAiResponder responder;
  RequestTimer timer;
  bool include_usage;
  bool finished = false;  // the final update and "data: [DONE]" were written
  absl::Time last_write = absl::Now();
};

// SSE comment lines keep an idle stream (a request still queued) probing the connection, so a
// client that went away is noticed (the write fails) and its request cancelled.
constexpr absl::Duration kKeepAliveEvery = absl::Seconds(2);
constexpr absl::Duration kPollEvery = absl::Milliseconds(500);

}  // namespace

HttpFrontEnd::HttpFrontEnd(ServingContext* context, HttpOptions options)
    : ctx_(context), options_(std::move(options)), server_(std::make_unique<httplib::Server>()) {}

HttpFrontEnd::~HttpFrontEnd() { Stop(); }

void HttpFrontEnd::RegisterRoutes() {
  httplib::Server& svr = *server_;
  const size_t max_connections = static_cast<size_t>(options_.max_connections);
  svr.new_task_queue = [max_connections] { return new GrowingThreadPool(max_connections); };
  svr.set_keep_alive_max_count(1000);
  // Headers and body go out in separate writes; with Nagle on, the client's delayed ACK holds
  // the second one back ~40 ms per response.
  svr.set_tcp_nodelay(true);
  // A streaming client that stops reading for this long is treated as gone.
  svr.set_write_timeout(30, 0);
  // httplib waits keep_alive_timeout (5 s by default) for every request on a connection, the
  // first one included, then closes it. Under a burst (1000 clients connecting at once on a busy
  // 2-core machine) a client can take longer than that to write its request and sees its
  // connection closed (httpx ReadError). Wait 30 s for a request and 60 s for a slow body.
  svr.set_keep_alive_timeout(30);
  svr.set_read_timeout(60, 0);
  // Bodies past the limit: refused from Content-Length before they are read; a chunked body is
  // cut off by httplib at the same limit (413, rewritten to 400 by the error handler below).
  svr.set_payload_max_length(static_cast<size_t>(ctx_->max_body_bytes));
  const int64_t max_body = ctx_->max_body_bytes;
  auto body_too_large = [max_body](const std::string& size) {
    return api::InvalidParam("", absl::StrCat("request body of ", size, " bytes is larger than ",
                                              "--max-body-bytes=", max_body));
  };
  svr.set_pre_routing_handler([this, max_body, body_too_large](const httplib::Request& req,
                                                               httplib::Response& res) {
    if (req.has_header("Content-Length")) {
      const std::string length = req.get_header_value("Content-Length");
      if (std::strtoll(length.c_str(), nullptr, 10) > max_body) {
        SetError(res, body_too_large(length));
        res.set_header("Connection", "close");  // the unread body must not be parsed as a request
        ctx_->metrics->CountRequest("http", req.path, "400");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  using ErrorHandler = httplib::Server::HandlerWithResponse;
  svr.set_error_handler(
      ErrorHandler([body_too_large](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        if (res.status == 413) {
          SetError(res, body_too_large("more than the limit of"));
        } else if (res.status == 404) {
          res.set_content(
              api::ErrorBody(404, absl::StrCat("no route for ", req.method, " ", req.path)), kJson);
        } else {
          res.set_content(api::ErrorBody(res.status, absl::StrCat("HTTP ", res.status)), kJson);
        }
        return httplib::Server::HandlerResponse::Handled;
      }));
  svr.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SetError(res, absl::InternalError(what));
      });

  auto generate = [this](RequestKind kind, std::string path) {
    return [this, kind, path](const httplib::Request& req, httplib::Response& res) {
      auto fail = [&](const absl::Status& status) {
        SetError(res, status);
        ctx_->metrics->CountRequest("http", path, absl::StrCat(res.status));
      };
      if (ctx_->draining.load()) return fail(absl::UnavailableError("the server is shutting down"));
      absl::StatusOr<api::OpenAiRequest> parsed = api::ParseOpenAiRequest(req.body, kind);
      if (!parsed.ok()) return fail(parsed.status());
      absl::StatusOr<runtime::GenerationRequest> gen =
          api::BuildGenerationRequest(parsed->api, *ctx_->tokenizer, ctx_->limits);
      if (!gen.ok()) return fail(gen.status());
      const int n = gen->sampling.n;
      const bool logprobs = gen->sampling.logprobs;
      absl::StatusOr<std::shared_ptr<runtime::RequestStream>> stream =
          ctx_->engine->Submit(*std::move(gen));
      if (!stream.ok()) return fail(stream.status());
      ctx_->active_calls.fetch_add(1);

      const std::string id =
          absl::StrCat(kind == RequestKind::kChat ? "chatcmpl-" : "cmpl-", (*stream)->request_id());
      api::OpenAiResponder responder(kind, id, ctx_->limits.served_model_name,
                                     absl::ToUnixSeconds(absl::Now()), *ctx_->tokenizer, logprobs,
                                     n);
      RequestTimer timer(ctx_->metrics, (*stream)->submitted_at());
      if (!parsed->stream) {
        struct ActiveCall {
          ~ActiveCall() { ctx->active_calls.fetch_sub(1); }
          ServingContext* ctx;
        } active{ctx_};
        for (;;) {
          std::optional<runtime::RequestUpdate> u = (*stream)->Next(absl::InfiniteFuture());
          if (!u) continue;
          timer.OnUpdate(*u);
          responder.Accumulate(*u);
          if (!u->finished) continue;
          if (!u->status.ok()) return fail(u->status);
          res.set_content(responder.Body(u->usage), kJson);
          ctx_->metrics->CountRequest("http", path, "200");
          return;
        }
      }
      auto state = std::make_shared<SseState>(*std::move(stream), std::move(responder), timer,
                                              parsed->include_usage);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [state](size_t, httplib::DataSink& sink) {
            std::optional<runtime::RequestUpdate> u = state->stream->Next(absl::Now() + kPollEvery);
            std::string out;
            if (!u) {
              if (absl::Now() - state->last_write < kKeepAliveEvery) return true;
              out = ": keep-alive\n\n";
            } else {
              state->timer.OnUpdate(*u);
              for (const std::string& chunk : state->responder.Chunks(*u)) {
                absl::StrAppend(&out, "data: ", chunk, "\n\n");
              }
              if (u->finished) {
                if (!u->status.ok())
                  absl::StrAppend(&out, "data: ", api::ErrorBody(u->status), "\n\n");
                if (state->include_usage) {
                  absl::StrAppend(&out, "data: ", state->responder.UsageChunk(u->usage), "\n\n");
                }
                out += "data: [DONE]\n\n";
              }
            }
            if (!out.empty()) {
              if (!sink.write(out.data(), out.size())) return false;  // client gone: releaser
              state->last_write = absl::Now();
            }
            if (u && u->finished) {
              state->finished = true;
              sink.done();
            }
            return true;
          },
          [state, ctx = ctx_, path](bool) {
            if (!state->finished) state->stream->Cancel();
            ctx->metrics->CountRequest("http", path, state->finished ? "200" : "499");
            ctx->active_calls.fetch_sub(1);
          });
    };
  };
  svr.Post("/v1/completions", generate(RequestKind::kCompletion, "/v1/completions"));
  svr.Post("/v1/chat/completions", generate(RequestKind::kChat, "/v1/chat/completions"));

  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    nlohmann::json model = {{"id", ctx_->limits.served_model_name},
                            {"object", "model"},
                            {"created", 0},
                            {"owned_by", "moeserve"},
                            {"root", ctx_->model_source},
                            {"max_model_len", ctx_->limits.max_model_len}};
    nlohmann::json body = {{"object", "list"}, {"data", nlohmann::json::array({model})}};
    res.set_content(body.dump(), kJson);
    ctx_->metrics->CountRequest("http", "/v1/models", "200");
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool draining = ctx_->draining.load();
    res.status = draining ? 503 : 200;
    res.set_content(draining ? "draining\n" : "ok\n", "text/plain");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(ctx_->metrics->Render(ctx_->engine->Stats()),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
}

absl::Status HttpFrontEnd::Start() {
  RegisterRoutes();
  // httplib's own socket options add SO_REUSEPORT, which would let a second daemon bind the same
  // port silently; ours set only SO_REUSEADDR and remember the listening socket.
  int listen_fd = -1;
  server_->set_socket_options([&listen_fd](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = sock;
  });
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
    if (port_ <= 0) {
      return absl::UnavailableError(absl::StrCat("HTTP: cannot bind ", options_.host));
    }
  } else {
    if (!server_->bind_to_port(options_.host, options_.port)) {
      return absl::UnavailableError(
          absl::StrCat("HTTP: cannot bind ", options_.host, ":", options_.port, " (in use?)"));
    }
    port_ = options_.port;
  }
  // The library listens with a backlog of 5 (compiled into Debian's libcpp-httplib); a burst of
  // a thousand connects would overflow it and stall clients on SYN retries. listen() again on a
  // listening socket only changes the backlog.
  if (listen_fd >= 0) ::listen(listen_fd, 4096);
  // Connections queue in the backlog from here on, before the accept loop runs.
  listener_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

void HttpFrontEnd::Stop() {
  if (!listener_.joinable()) return;
  server_->stop();
  listener_.join();
}

}  // namespace moeserve::server
