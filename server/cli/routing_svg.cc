#include "server/cli/routing_svg.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace moeserve::server {
namespace {

// One colour per prompt set (colour-blind-safe Okabe-Ito order), cycled.
const char* SetColour(size_t i) {
  static const char* kColours[] = {"#0072B2", "#E69F00", "#009E73", "#CC79A7",
                                   "#56B4E9", "#D55E00", "#F0E442", "#000000"};
  return kColours[i % 8];
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

std::string Text(double x, double y, const std::string& s, const char* anchor = "start",
                 int size = 11) {
  return absl::StrFormat(
      "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\">%s</text>\n", x, y, size,
      anchor, Escape(s));
}

std::string Rect(double x, double y, double w, double h, const char* fill) {
  return absl::StrFormat(
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x, y,
      std::max(0.0, w), h, fill);
}

std::string Dashed(double x1, double y1, double x2, double y2) {
  return absl::StrFormat(
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#666\" "
      "stroke-dasharray=\"4 3\"/>\n",
      x1, y1, x2, y2);
}

}  // namespace

std::string RoutingSvg(const RoutingAnalysis& a) {
  const size_t S = a.sets.size();
  const double bar = 7, gap = 6, panel_w = 240, label_w = 34, margin = 16;
  const double group_h = bar * static_cast<double>(S) + gap;
  const double share_h = group_h * static_cast<double>(a.num_experts) + 40;
  const double rep_h = group_h * 2 + 50;
  const double legend_h = 18.0 * static_cast<double>(S) + 10;
  const double top = 40;
  const double width =
      margin + static_cast<double>(a.paper_layers.size()) * (label_w + panel_w + margin);
  const double height = top + share_h + rep_h + legend_h + margin;
  // Scales: shares up to the largest observed (at least twice uniform); rates 0..1.
  double max_share = 2 * a.random_first;
  for (const SetAnalysis& s : a.sets) {
    for (int64_t l : a.paper_layers) {
      for (double v : s.expert_share[l]) max_share = std::max(max_share, v);
    }
  }
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
      width, height, width, height);
  svg += Text(margin, 20,
              absl::StrFormat("Routing analysis: %d layers, %d experts, top-%d", a.num_layers,
                              a.num_experts, a.top_k),
              "start", 14);
  for (size_t p = 0; p < a.paper_layers.size(); ++p) {
    const int64_t l = a.paper_layers[p];
    const double x0 = margin + static_cast<double>(p) * (label_w + panel_w + margin) + label_w;
    // Expert shares.
    svg += Text(x0 + panel_w / 2, top, absl::StrCat("layer ", l, ": share of rows"), "middle", 12);
    double y = top + 12;
    for (int64_t e = 0; e < a.num_experts; ++e) {
      svg += Text(x0 - 4, y + group_h / 2 + 2, absl::StrCat("e", e), "end");
      for (size_t s = 0; s < S; ++s) {
        const double v = a.sets[s].expert_share[l][e];
        svg += Rect(x0, y + bar * static_cast<double>(s), panel_w * v / max_share, bar - 1,
                    SetColour(s));
      }
      y += group_h;
    }
    const double ux = x0 + panel_w * a.random_first / max_share;
    svg += Dashed(ux, top + 8, ux, y);
    svg += Text(ux + 3, y + 12, absl::StrFormat("1/%d", a.num_experts));
    svg += Text(x0, y + 12, "0");
    svg += Text(x0 + panel_w, y + 12, absl::StrFormat("%.3f", max_share), "end");
    // Repetition of consecutive tokens.
    double ry = top + share_h + 10;
    svg += Text(x0 + panel_w / 2, ry, absl::StrCat("layer ", l, ": consecutive tokens keep"),
                "middle", 12);
    ry += 10;
    const double rates[2] = {a.random_first, a.random_top_k};
    const char* names[2] = {"first", "top-k"};
    for (int kind = 0; kind < 2; ++kind) {
      svg += Text(x0 - 4, ry + group_h / 2 + 2,
                  kind == 0 ? names[0] : absl::StrCat("top-", a.top_k), "end");
      for (size_t s = 0; s < S; ++s) {
        const double v = kind == 0 ? a.sets[s].repeat_first[l] : a.sets[s].repeat_top_k[l];
        svg += Rect(x0, ry + bar * static_cast<double>(s), panel_w * v, bar - 1, SetColour(s));
      }
      const double bx = x0 + panel_w * rates[kind];
      svg += Dashed(bx, ry - 2, bx, ry + group_h - gap + 2);
      ry += group_h;
    }
    svg += Text(x0, ry + 10, "0");
    svg += Text(x0 + panel_w, ry + 10, "100 %", "end");
  }
  // Legend.
  double ly = top + share_h + rep_h + 10;
  for (size_t s = 0; s < S; ++s) {
    svg += Rect(margin, ly - 9, 12, 10, SetColour(s));
    svg += Text(margin + 18, ly,
                absl::StrFormat("%s (%d prompts, %d tokens)", a.sets[s].name, a.sets[s].num_prompts,
                                a.sets[s].num_tokens));
    ly += 18;
  }
  svg += Text(width - margin, ly - 18, "dashed: uniform / random routing", "end", 10);
  svg += "</svg>\n";
  return svg;
}

}  // namespace moeserve::server
