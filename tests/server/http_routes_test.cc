#include "server/http/routes.h"

#include <string>

#include "gtest/gtest.h"

namespace moeserve::server {
namespace {

TEST(RoutesTest, FindsKnownPathsIgnoringTheQuery) {
  ASSERT_NE(FindRoute("/v1/completions"), nullptr);
  EXPECT_EQ(FindRoute("/v1/completions")->method, "POST");
  EXPECT_EQ(FindRoute("/v1/models?limit=3")->id, RouteId::kModels);
  EXPECT_EQ(FindRoute("/health")->method, "GET");
  EXPECT_EQ(FindRoute("/v1/completions/"), nullptr);
  EXPECT_EQ(FindRoute("/V1/models"), nullptr);
  // The live imbalance view: the page and the JSON it polls, both GET.
  ASSERT_NE(FindRoute("/lab?interval=500"), nullptr);
  EXPECT_EQ(FindRoute("/lab?interval=500")->id, RouteId::kLabPage);
  EXPECT_EQ(FindRoute("/lab")->method, "GET");
  ASSERT_NE(FindRoute("/v1/lab/stats"), nullptr);
  EXPECT_EQ(FindRoute("/v1/lab/stats")->id, RouteId::kLabStats);
  EXPECT_EQ(FindRoute("/v1/lab/stats")->method, "GET");
  EXPECT_EQ(FindRoute("/lab/"), nullptr);
  EXPECT_EQ(FindRoute(""), nullptr);
}

TEST(RoutesTest, EndpointLabelsComeFromAFixedSet) {
  EXPECT_EQ(EndpointLabel("/v1/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(EndpointLabel("/metrics?x"), "/metrics");
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(EndpointLabel("/invented-" + std::to_string(i)), "other");
  }
  EXPECT_EQ(EndpointLabel(std::string(100000, 'a')), "other");
}

TEST(RoutesTest, JsonMediaType) {
  EXPECT_TRUE(IsJsonMediaType("application/json"));
  EXPECT_TRUE(IsJsonMediaType("Application/JSON; charset=utf-8"));
  EXPECT_TRUE(IsJsonMediaType(" application/json ;charset=utf-8"));
  EXPECT_FALSE(IsJsonMediaType("application/x-www-form-urlencoded"));
  EXPECT_FALSE(IsJsonMediaType("multipart/form-data; boundary=x"));
  EXPECT_FALSE(IsJsonMediaType("text/plain"));
  EXPECT_FALSE(IsJsonMediaType("application/jsonx"));
}

}  // namespace
}  // namespace moeserve::server
