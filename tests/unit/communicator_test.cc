// The in-process Communicator at world sizes 1, 2, 4 and 8: every collective against values
// computed independently on the host, zero-byte peers, in-place use, many rounds back to back
// (races), and the error paths (mismatched calls, inconsistent counts, abort, timeout).
#include "parallel/comm/in_process_communicator.h"

#include <atomic>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moeserve::parallel {
namespace {

InProcessGroupOptions TestOptions() {
  InProcessGroupOptions o;
  o.timeout = absl::Seconds(60);  // a hang fails the test instead of stalling the suite
  return o;
}

class CommunicatorTest : public ::testing::TestWithParam<int> {
 protected:
  int world() const { return GetParam(); }
};

TEST_P(CommunicatorTest, AllToAllDeliversRowPToRankP) {
  InProcessGroup group(world(), TestOptions());
  constexpr int64_t kCount = 3;
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    EXPECT_EQ(comm.rank(), rank);
    EXPECT_EQ(comm.world_size(), world());
    std::vector<int64_t> send(static_cast<size_t>(world() * kCount)), recv(send.size(), -1);
    for (int p = 0; p < world(); ++p) {
      for (int64_t i = 0; i < kCount; ++i) send[p * kCount + i] = rank * 1000 + p * 10 + i;
    }
    if (absl::Status s = comm.AllToAll(send.data(), recv.data(), kCount); !s.ok()) return s;
    for (int p = 0; p < world(); ++p) {
      for (int64_t i = 0; i < kCount; ++i) {
        EXPECT_EQ(recv[p * kCount + i], p * 1000 + rank * 10 + i) << "rank " << rank;
      }
    }
    // In place.
    if (absl::Status s = comm.AllToAll(send.data(), send.data(), kCount); !s.ok()) return s;
    EXPECT_EQ(send, recv);
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

// Bytes from src to dst: a size that is zero for about a third of the pairs (self included
// for some ranks), and content that names the pair.
int64_t PairBytes(int src, int dst) { return ((src * 7 + dst * 3) % 3) * (5 + src + dst); }
uint8_t PairByte(int src, int dst, int64_t i) {
  return static_cast<uint8_t>(src * 31 + dst * 7 + i);
}

TEST_P(CommunicatorTest, AllToAllVMovesBytesWithOffsetsAndZeroBytePeers) {
  InProcessGroup group(world(), TestOptions());
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    // Segments laid out in reverse peer order with 3-byte gaps, so offsets must be honoured.
    std::vector<int64_t> send_counts(world()), send_offsets(world()), recv_counts(world()),
        recv_offsets(world());
    int64_t send_total = 0, recv_total = 0;
    for (int p = world() - 1; p >= 0; --p) {
      send_counts[p] = PairBytes(rank, p);
      send_offsets[p] = send_total;
      send_total += send_counts[p] + 3;
      recv_counts[p] = PairBytes(p, rank);
      recv_offsets[p] = recv_total;
      recv_total += recv_counts[p] + 3;
    }
    std::vector<uint8_t> send(static_cast<size_t>(send_total), 0xEE),
        recv(static_cast<size_t>(recv_total), 0xAB);
    for (int p = 0; p < world(); ++p) {
      for (int64_t i = 0; i < send_counts[p]; ++i) send[send_offsets[p] + i] = PairByte(rank, p, i);
    }
    absl::Status s = comm.AllToAllV(send.data(), send_counts.data(), send_offsets.data(),
                                    recv.data(), recv_counts.data(), recv_offsets.data());
    if (!s.ok()) return s;
    for (int p = 0; p < world(); ++p) {
      for (int64_t i = 0; i < recv_counts[p]; ++i) {
        EXPECT_EQ(recv[recv_offsets[p] + i], PairByte(p, rank, i)) << p << "->" << rank;
      }
      for (int64_t g = 0; g < 3; ++g) {  // gaps untouched
        EXPECT_EQ(recv[recv_offsets[p] + recv_counts[p] + g], 0xAB);
      }
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(CommunicatorTest, AllToAllVWithNothingToSendAnywhere) {
  InProcessGroup group(world(), TestOptions());
  absl::Status st = group.Run([&](int, Communicator& comm) -> absl::Status {
    std::vector<int64_t> zeros(world(), 0);
    return comm.AllToAllV(nullptr, zeros.data(), zeros.data(), nullptr, zeros.data(), zeros.data());
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(CommunicatorTest, AllReduceSumAndMaxInRankOrder) {
  InProcessGroup group(world(), TestOptions());
  // The double sum must equal the sum taken in rank order, bit for bit, on every rank.
  double expected_sum = 0.1;
  for (int r = 1; r < world(); ++r) expected_sum += 0.1 * (r + 1) + 1e-17 * r;
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    const int64_t ints[2] = {rank + 1, 100 - rank};
    int64_t sum[2], max[2];
    if (auto s = comm.AllReduce(ints, sum, 2, ReduceOp::kSum); !s.ok()) return s;
    if (auto s = comm.AllReduce(ints, max, 2, ReduceOp::kMax); !s.ok()) return s;
    const int64_t w = world();
    EXPECT_EQ(sum[0], w * (w + 1) / 2);
    EXPECT_EQ(sum[1], 100 * w - w * (w - 1) / 2);
    EXPECT_EQ(max[0], w);
    EXPECT_EQ(max[1], 100);
    double d = 0.1 * (rank + 1) + 1e-17 * rank;
    if (auto s = comm.AllReduce(&d, &d, 1, ReduceOp::kSum); !s.ok()) return s;  // in place
    EXPECT_EQ(d, expected_sum);
    double m = -static_cast<double>(rank);
    if (auto s = comm.AllReduce(&m, &m, 1, ReduceOp::kMax); !s.ok()) return s;
    EXPECT_EQ(m, 0.0);
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(CommunicatorTest, BarrierWaitsForEveryRank) {
  InProcessGroup group(world(), TestOptions());
  std::atomic<int> arrived{0};
  absl::Status st = group.Run([&](int, Communicator& comm) -> absl::Status {
    for (int round = 1; round <= 20; ++round) {
      arrived.fetch_add(1);
      if (auto s = comm.Barrier(); !s.ok()) return s;
      EXPECT_GE(arrived.load(), round * world());
      if (auto s = comm.Barrier(); !s.ok()) return s;  // nobody starts round+1 early
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

TEST_P(CommunicatorTest, ManyRoundsOfMixedCollectivesStayConsistent) {
  // Back-to-back collectives with buffers reused and rewritten right after each call: catches
  // a rank reading a peer's buffer after the peer moved on.
  InProcessGroup group(world(), TestOptions());
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    std::vector<int64_t> counts(world()), offsets(world()), rcounts(world()), roffsets(world());
    std::vector<int64_t> buf, rbuf;
    for (int round = 0; round < 300; ++round) {
      int64_t total = 0, rtotal = 0;
      for (int p = 0; p < world(); ++p) {
        counts[p] = 8 * ((rank + p + round) % 4);
        offsets[p] = total;
        total += counts[p];
        rcounts[p] = 8 * ((p + rank + round) % 4);
        roffsets[p] = rtotal;
        rtotal += rcounts[p];
      }
      buf.assign(static_cast<size_t>(total / 8), 0);
      rbuf.assign(static_cast<size_t>(rtotal / 8), -1);
      for (int p = 0; p < world(); ++p) {
        for (int64_t i = 0; i < counts[p] / 8; ++i) buf[offsets[p] / 8 + i] = round * 100 + rank;
      }
      auto s = comm.AllToAllV(buf.data(), counts.data(), offsets.data(), rbuf.data(),
                              rcounts.data(), roffsets.data());
      if (!s.ok()) return s;
      std::fill(buf.begin(), buf.end(), -7);  // the peers must be done reading
      for (int p = 0; p < world(); ++p) {
        for (int64_t i = 0; i < rcounts[p] / 8; ++i) {
          if (rbuf[roffsets[p] / 8 + i] != round * 100 + p) {
            return absl::InternalError("round " + std::to_string(round) + ": wrong data");
          }
        }
      }
      int64_t one = 1, n = 0;
      if (auto s2 = comm.AllReduce(&one, &n, 1, ReduceOp::kSum); !s2.ok()) return s2;
      if (n != world()) return absl::InternalError("allreduce");
    }
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CommunicatorTest, ::testing::Values(1, 2, 4, 8),
                         [](const auto& param_info) {
                           return "world" + std::to_string(param_info.param);
                         });

TEST(CommunicatorErrorsTest, MismatchedCollectivesFailOnEveryRank) {
  InProcessGroup group(4, TestOptions());
  std::vector<absl::Status> seen(4);
  group
      .Run([&](int rank, Communicator& comm) -> absl::Status {
        if (rank == 2) {
          seen[rank] = comm.Barrier();
        } else {
          std::vector<int64_t> v(4, 0);
          seen[rank] = comm.AllToAll(v.data(), v.data(), 1);
        }
        return absl::OkStatus();
      })
      .IgnoreError();
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(seen[r].code(), absl::StatusCode::kFailedPrecondition) << r << ": " << seen[r];
    EXPECT_NE(std::string(seen[r].message()).find("Barrier"), std::string::npos) << seen[r];
  }
  // The group is over: later calls fail at once instead of hanging.
  EXPECT_FALSE(group.comm(0)->Barrier().ok());
}

TEST(CommunicatorErrorsTest, InconsistentAllToAllVCountsAreAnErrorOnEveryRank) {
  InProcessGroup group(2, TestOptions());
  std::vector<absl::Status> seen(2);
  group
      .Run([&](int rank, Communicator& comm) -> absl::Status {
        // Rank 0 sends 4 bytes to rank 1, which expects 8.
        std::vector<int64_t> send_counts = {0, rank == 0 ? 4 : 0},
                             recv_counts = {rank == 1 ? 8 : 0, 0};
        std::vector<int64_t> zero(2, 0);
        char buf[16] = {};
        seen[rank] = comm.AllToAllV(buf, send_counts.data(), zero.data(), buf + 8,
                                    recv_counts.data(), zero.data());
        return absl::OkStatus();
      })
      .IgnoreError();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(seen[r].code(), absl::StatusCode::kInvalidArgument) << seen[r];
    EXPECT_NE(std::string(seen[r].message()).find("rank 0 sends 4 bytes to rank 1"),
              std::string::npos)
        << seen[r];
  }
}

TEST(CommunicatorErrorsTest, AFailingRankReleasesItsWaitingPeers) {
  InProcessGroup group(8, TestOptions());
  absl::Status st = group.Run([&](int rank, Communicator& comm) -> absl::Status {
    if (rank == 5) return absl::ResourceExhaustedError("rank 5 ran out of KV blocks");
    for (int i = 0; i < 3; ++i) {
      if (auto s = comm.Barrier(); !s.ok()) return s;
    }
    return absl::OkStatus();
  });
  // The failing rank's own error, not the Aborted errors it caused.
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
}

TEST(CommunicatorErrorsTest, TimeoutAbortsTheGroup) {
  InProcessGroupOptions options;
  options.timeout = absl::Milliseconds(200);
  InProcessGroup group(2, options);
  // Rank 1 never joins (it is not run): rank 0 gives up after the timeout.
  absl::Status st = group.comm(0)->Barrier();
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_EQ(group.comm(1)->Barrier().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace moeserve::parallel
