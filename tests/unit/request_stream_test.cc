#include "runtime/engine/request.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"

namespace moeserve::runtime {
namespace {

RequestUpdate Token(int32_t id, bool finished = false) {
  RequestUpdate u;
  u.choices.push_back(ChoiceDelta{.index = 0, .tokens = {id}});
  u.finished = finished;
  return u;
}

TEST(RequestStreamTest, OnPushRunsAfterEveryPushAndSeesTheUpdate) {
  RequestStream stream("r");
  int calls = 0;
  std::vector<int32_t> seen;
  stream.SetOnPush([&] {
    ++calls;
    // The update is already visible: Next with a past deadline returns it.
    std::optional<RequestUpdate> u = stream.Next(absl::InfinitePast());
    ASSERT_TRUE(u.has_value());
    seen.push_back(u->choices[0].tokens[0]);
  });
  stream.Push(Token(7));
  stream.Push(Token(8, /*finished=*/true));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen, (std::vector<int32_t>{7, 8}));
}

TEST(RequestStreamTest, OnPushRunsAtOnceWhenUpdatesArePending) {
  RequestStream stream("r");
  stream.Push(Token(1));
  int calls = 0;
  stream.SetOnPush([&] { ++calls; });
  EXPECT_EQ(calls, 1);
  stream.SetOnPush(nullptr);
  stream.Push(Token(2));
  EXPECT_EQ(calls, 1);
  std::optional<RequestUpdate> u = stream.Next(absl::InfinitePast());
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->choices[0].tokens, (std::vector<int32_t>{1, 2}));  // merged
}

TEST(RequestStreamTest, OnPushFromAnotherThread) {
  RequestStream stream("r");
  std::atomic<int> calls{0};
  stream.SetOnPush([&] { calls.fetch_add(1); });
  std::thread engine([&] {
    for (int i = 0; i < 100; ++i) stream.Push(Token(i, i == 99));
  });
  engine.join();
  EXPECT_EQ(calls.load(), 100);
}

}  // namespace
// A slow reader gets merged updates: the finishing delta's routing trace survives the merge.
TEST(RequestStreamTest, MergedUpdatesKeepTheRoutingTrace) {
  RequestStream stream("r");
  auto trace = std::make_shared<RoutingTrace>(1, 2);
  RequestUpdate first, last;
  first.choices.push_back({.index = 0, .tokens = {5}, .text = "a"});
  last.choices.push_back({.index = 0, .tokens = {6}, .text = "b"});
  last.choices[0].finish_reason = FinishReason::kStop;
  last.choices[0].routing = trace;
  last.finished = true;
  stream.Push(first);
  stream.Push(last);
  std::optional<RequestUpdate> merged = stream.Next(absl::Now());
  ASSERT_TRUE(merged.has_value());
  ASSERT_EQ(merged->choices.size(), 1u);
  EXPECT_EQ(merged->choices[0].tokens, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(merged->choices[0].routing, trace);
  EXPECT_TRUE(merged->finished);
}

}  // namespace moeserve::runtime
