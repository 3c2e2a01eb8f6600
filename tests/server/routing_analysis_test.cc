// The routing analysis of `moeserve analyze-routing` (server/cli/routing_analysis.h) on
// hand-constructed traces whose answers are counted here, and its SVG (self-contained).
#include "server/cli/routing_analysis.h"

#include <cmath>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/cli/routing_svg.h"

namespace moeserve::server {
namespace {

// A trace of one layer, top-2, from per-position expert pairs (best first).
runtime::RoutingTrace Trace(const std::vector<std::vector<int32_t>>& pairs, int64_t layers = 1) {
  runtime::RoutingTrace t(layers, 2);
  for (size_t p = 0; p < pairs.size(); ++p) {
    t.tokens.push_back(static_cast<int32_t>(p));
    for (int64_t l = 0; l < layers; ++l) {
      t.experts.insert(t.experts.end(), pairs[p].begin(), pairs[p].end());
      t.weights.insert(t.weights.end(), {0.6f, 0.4f});
    }
  }
  return t;
}

double Choose(int n, int k) {
  double c = 1;
  for (int i = 0; i < k; ++i) c = c * (n - i) / (i + 1);
  return c;
}

TEST(RoutingAnalysisTest, PaperLayersAndRandomBaselines) {
  EXPECT_EQ(PaperLayers(32), (std::vector<int64_t>{0, 15, 31}));
  EXPECT_EQ(PaperLayers(4), (std::vector<int64_t>{0, 1, 3}));
  EXPECT_EQ(PaperLayers(2), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(PaperLayers(1), (std::vector<int64_t>{0}));
  // The paper: 1 - 6/8 * 5/7 for top-2 of 8; in general by counting subsets.
  EXPECT_NEAR(RandomTopKOverlap(8, 2), 1.0 - 6.0 / 8 * 5.0 / 7, 1e-12);
  for (int e : {4, 8, 16, 64}) {
    for (int k : {1, 2, 3}) {
      EXPECT_NEAR(RandomTopKOverlap(e, k), 1.0 - Choose(e - k, k) / Choose(e, k), 1e-12)
          << e << " " << k;
    }
  }
  EXPECT_EQ(RandomTopKOverlap(3, 2), 1.0);  // two pairs of three always meet
}

TEST(RoutingAnalysisTest, CountsSharesAndRepetitionsOfConstructedTraces) {
  // Set "a": prompt 1: (0,1) (0,2) (3,2); prompt 2: (1,0) (0,1).
  //   rows: e0 4, e1 3, e2 2, e3 1 of 10.  pairs: 3 (2 + 1), never across prompts.
  //   first kept: 0->0 yes, 0->3 no, 1->0 no: 1/3.  top-2 shared: yes, yes, yes: 3/3.
  // Set "b": one prompt (2,3) (1,0): rows e0..e3 1 each of 4; 1 pair, nothing kept.
  std::vector<PromptSetTraces> sets = {
      {"a", {Trace({{0, 1}, {0, 2}, {3, 2}}), Trace({{1, 0}, {0, 1}})}},
      {"b", {Trace({{2, 3}, {1, 0}})}}};
  auto a = AnalyzeRouting(sets, 4);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->num_layers, 1);
  EXPECT_EQ(a->top_k, 2);
  EXPECT_DOUBLE_EQ(a->random_first, 0.25);
  ASSERT_EQ(a->sets.size(), 2u);
  const SetAnalysis& sa = a->sets[0];
  EXPECT_EQ(sa.num_prompts, 2);
  EXPECT_EQ(sa.num_tokens, 5);
  EXPECT_EQ(sa.num_pairs, 3);
  EXPECT_EQ(sa.expert_share[0], (std::vector<double>{0.4, 0.3, 0.2, 0.1}));
  EXPECT_DOUBLE_EQ(sa.repeat_first[0], 1.0 / 3);
  EXPECT_DOUBLE_EQ(sa.repeat_top_k[0], 1.0);
  const SetAnalysis& sb = a->sets[1];
  EXPECT_EQ(sb.expert_share[0], (std::vector<double>{0.25, 0.25, 0.25, 0.25}));
  EXPECT_DOUBLE_EQ(sb.repeat_first[0], 0.0);
  EXPECT_DOUBLE_EQ(sb.repeat_top_k[0], 0.0);
  // Layers are analysed apart: layer 1 of a two-layer trace repeats layer 0 here.
  auto two = AnalyzeRouting({{"a", {Trace({{0, 1}, {0, 2}, {3, 2}}, 2)}}}, 4);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->sets[0].repeat_first, (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(two->sets[0].expert_share[1],
            (std::vector<double>{2.0 / 6, 1.0 / 6, 2.0 / 6, 1.0 / 6}));
}

TEST(RoutingAnalysisTest, RefusesBadTraces) {
  EXPECT_FALSE(AnalyzeRouting({{"a", {}}}, 4).ok());
  EXPECT_FALSE(AnalyzeRouting({{"a", {Trace({{0, 9}})}}}, 4).ok());  // expert 9 of 4
  EXPECT_FALSE(AnalyzeRouting({{"a", {Trace({{0, 1}}), Trace({{0, 1}}, 2)}}}, 4).ok());
}

TEST(RoutingAnalysisTest, SvgIsSelfContainedAndNamesEverySet) {
  auto a =
      AnalyzeRouting({{"code<&>", {Trace({{0, 1}, {0, 2}})}}, {"prose", {Trace({{3, 1}})}}}, 4);
  ASSERT_TRUE(a.ok());
  const std::string svg = RoutingSvg(*a);
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);
  int urls = 0;  // only the SVG namespace: no CDN, no external resource
  for (size_t at = svg.find("http"); at != std::string::npos; at = svg.find("http", at + 1)) ++urls;
  EXPECT_EQ(urls, 1);
  EXPECT_NE(svg.find("code&lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find("prose"), std::string::npos);
  const std::string table = FormatAnalysis(*a);
  EXPECT_NE(table.find("prose"), std::string::npos);
}

}  // namespace
}  // namespace moeserve::server
