// The per-rank expert statistics both /metrics and /v1/lab/stats tests render: `steps` steps of a
// constructed routing whose every count follows from the rank, layer and step, so the tests can
// compute what each exporter must print.
#pragma once

#include <cstdint>

#include "parallel/moe/ep_stats.h"

namespace moeserve::server::test {

// Rank `rank` routes 3 + rank rows a layer to expert (l + rank + step) mod E and computes
// 2 + step rows on expert `rank`; it sends 1 + rank rows to every rank.
inline parallel::EpRankStats RankStats(int rank, int world, int64_t layers, int64_t experts,
                                       int64_t window, int64_t steps) {
  parallel::EpStatsRecorder rec(rank, world, layers, experts, window);
  for (int64_t step = 0; step < steps; ++step) {
    rec.BeginStep();
    for (int64_t l = 0; l < layers; ++l) {
      parallel::EpLayerTrace t;
      t.routed_per_expert.assign(experts, 0);
      t.computed_per_expert.assign(experts, 0);
      t.routed_per_expert[(l + rank + step) % experts] = 3 + rank;
      t.computed_per_expert[rank] = 2 + step;
      t.rows_sent_to.assign(world, 1 + rank);
      t.rows_received_from.assign(world, 1);
      t.row_bytes = 4;
      rec.RecordLayer(l, t);
    }
  }
  return rec.Snapshot();
}

}  // namespace moeserve::server::test
