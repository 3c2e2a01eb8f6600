#include "server/http/routes.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace moeserve::server {
namespace {

constexpr Route kRoutes[] = {
    {"/v1/completions", "POST", RouteId::kCompletions},
    {"/v1/chat/completions", "POST", RouteId::kChat},
    {"/v1/models", "GET", RouteId::kModels},
    {"/health", "GET", RouteId::kHealth},
    {"/metrics", "GET", RouteId::kMetrics},
    {"/v1/lab/recorder/start", "POST", RouteId::kRecorderStart},
    {"/v1/lab/recorder/stop", "POST", RouteId::kRecorderStop},
    {"/v1/lab/recorder/dump", "GET", RouteId::kRecorderDump},
    {"/lab", "GET", RouteId::kLabPage},
    {"/v1/lab/stats", "GET", RouteId::kLabStats},
    {"/v1/lab/rebalance", "POST", RouteId::kRebalance},
};

}  // namespace

const Route* FindRoute(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  for (const Route& route : kRoutes) {
    if (route.path == path) return &route;
  }
  return nullptr;
}

std::string_view EndpointLabel(std::string_view target) {
  const Route* route = FindRoute(target);
  return route != nullptr ? route->path : std::string_view("other");
}

bool IsJsonMediaType(std::string_view content_type) {
  const std::string_view type = content_type.substr(0, content_type.find(';'));
  return absl::EqualsIgnoreCase(
      absl::StripAsciiWhitespace(absl::string_view(type.data(), type.size())), "application/json");
}

}  // namespace moeserve::server
