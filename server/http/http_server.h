// The OpenAI-compatible HTTP front end (cpp-httplib):
//   POST /v1/completions, POST /v1/chat/completions   stream=false: one JSON body;
//                                                      stream=true: SSE "data: {...}\n\n" chunks,
//                                                      then "data: [DONE]\n\n"
//   GET /v1/models, GET /health, GET /metrics
// Errors use OpenAI's body {"error": {"message", "type", "param", "code"}}.
//
// Threading: cpp-httplib runs one connection per thread; the pool grows on demand up to
// max_connections, so that many streams can be open at once. A streaming handler blocks its
// thread on RequestStream::Next; a failed write (client gone) cancels the request.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "server/api/serving_context.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace moeserve::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see HttpFrontEnd::port)
  int max_connections = 2048;
};

class HttpFrontEnd {
 public:
  HttpFrontEnd(ServingContext* context, HttpOptions options);
  ~HttpFrontEnd();  // Stop()s

  // Binds and starts serving on a background thread. Unavailable when the port is taken.
  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting and closes connections once their handlers return; joins.
  void Stop();

 private:
  void RegisterRoutes();

  ServingContext* ctx_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
};

}  // namespace moeserve::server
