// The MoE block of one layer with the experts sharded over the ranks of a group (expert
// parallelism, dropless). Every rank calls it for every layer, in lockstep, with its own tokens
// (data-parallel attention: each rank owns its sequences); a rank with no tokens calls it with
// num_tokens = 0 and still takes part in every collective.
//
//   x [num_tokens, hidden] --router, top-k--> (expert_ids, weights) [num_tokens, top_k]
//   --EpSendPlan--> counts [world, experts] --AllToAll--> counts from every rank
//   --permute by (destination, expert, token)--> AllToAllV (dispatch: token states)
//   --regroup by expert--> local expert GEMMs (SwiGLU) --back to arrival order-->
//   AllToAllV (combine: expert outputs, the reverse segments) --> CombineRows in ascending
//   expert order --> out [num_tokens, hidden]
//
// No capacity factor: every row is sent and computed, however skewed the routing. Rows are
// activations of backend.activation_dtype() (hidden * DTypeSize bytes).
//
// Host round trips (allowed here, unlike world size 1): the routing (expert ids) is copied to the
// host to build the send/receive plans that size the all-to-all, the plans' index arrays are
// uploaded to scratch memory, and the backend is synchronised before each collective (the
// communicator reads and writes the buffers from the host thread) and before returning (the
// uploads' host sources die with the call). The arithmetic runs through the same ops as the local
// path (moe_steps.h).
//
// Result: bitwise identical to RunMoeLayer at world size 1 for the same tokens (see the
// contract in moe_steps.h); the placement and the replica choice change only where a row runs.
//
// Failure: collective errors (a peer aborted, mismatched calls) are returned as they are; a
// local error (bad routing input, missing weights) aborts the communicator first, so that peers
// fail instead of waiting for this rank forever.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "parallel/comm/communicator.h"
#include "parallel/moe/ep_stats.h"
#include "parallel/moe/moe_layer.h"
#include "parallel/placement/expert_placement.h"

namespace moeserve::parallel {

// What a model needs to run its MoE layers expert-parallel. Non-owning; both outlive the model.
struct ExpertParallelContext {
  Communicator* comm = nullptr;                // this rank's communicator
  const ExpertPlacement* placement = nullptr;  // shared by all ranks, same on every rank
  // Added to the replica ordinals of this rank's rows (BuildEpSendPlan). Any value gives the
  // same bits (which replica computes a row changes nothing); the model advances it every step
  // so that replicas share the load even when each call sends one row per expert.
  int64_t replica_offset = 0;
};

// x, out: backend memory [num_tokens, hidden], out must not alias x. weights.experts has
// num_experts entries; only those `placement` assigns to this rank need data, and
// weights.tables must be built from them (BuildExpertTables). logit_bias: optional backend
// memory [num_experts] fp32. trace (optional) receives the call's load and traffic.
// token_bias: optional backend [num_tokens, num_experts] fp32 for this rank's tokens.
// routing: when set, this rank's tokens' expert ids and weights are copied there (host).
absl::Status RunExpertParallelMoeLayer(kernels::Backend& backend, const MoeLayerShape& shape,
                                       const MoeLayerWeights& weights, int64_t layer,
                                       const ExpertParallelContext& ep, const void* x,
                                       int64_t num_tokens, void* out, const float* logit_bias,
                                       EpLayerTrace* trace, const float* token_bias = nullptr,
                                       RoutingHostCopy routing = {});

}  // namespace moeserve::parallel
