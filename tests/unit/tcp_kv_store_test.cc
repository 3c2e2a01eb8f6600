// The rendezvous key-value store over TCP: values set by one client are read by another (the
// bytes as set, including NUL and empty values), a waiter sees a key set after it started
// waiting, a missing key is DeadlineExceeded naming the key, and bad addresses are errors.
#include "parallel/comm/tcp_kv_store.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace moeserve::parallel {
namespace {

std::vector<char> Bytes(const std::string& s) { return std::vector<char>(s.begin(), s.end()); }

TEST(TcpKvStore, SetByOneClientIsReadByAnother) {
  absl::StatusOr<std::unique_ptr<TcpKvServer>> server = TcpKvServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string addr = absl::StrCat("127.0.0.1:", (*server)->port());
  auto a = TcpKvClient::Connect(addr, absl::Seconds(5));
  auto b = TcpKvClient::Connect(addr, absl::Seconds(5));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->local_host(), "127.0.0.1");

  const std::vector<char> binary = {'x', '\0', 'y', '\xff'};
  ASSERT_TRUE((*a)->Set("rank0", binary).ok());
  ASSERT_TRUE((*a)->Set("empty", {}).ok());
  auto got = (*b)->Get("rank0");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, binary);
  got = (*b)->Get("empty");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_TRUE((*got)->empty());
  got = (*b)->Get("never");
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  // Overwrite: the last value wins.
  ASSERT_TRUE((*b)->Set("rank0", Bytes("second")).ok());
  got = (*a)->Get("rank0");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(**got, Bytes("second"));
}

TEST(TcpKvStore, WaitSeesALaterSetAndTimesOutOnAMissingKey) {
  absl::StatusOr<std::unique_ptr<TcpKvServer>> server = TcpKvServer::Start("127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string addr = absl::StrCat("127.0.0.1:", (*server)->port());
  auto waiter = TcpKvClient::Connect(addr, absl::Seconds(5));
  ASSERT_TRUE(waiter.ok());
  std::thread setter([&] {
    auto c = TcpKvClient::Connect(addr, absl::Seconds(5));
    ASSERT_TRUE(c.ok());
    absl::SleepFor(absl::Milliseconds(100));
    ASSERT_TRUE((*c)->Set("late", Bytes("v")).ok());
  });
  EXPECT_TRUE((*waiter)->Wait({"late"}, absl::Seconds(10)).ok());
  setter.join();
  const absl::Status missing = (*waiter)->Wait({"late", "absent"}, absl::Milliseconds(100));
  EXPECT_EQ(missing.code(), absl::StatusCode::kDeadlineExceeded) << missing;
  EXPECT_NE(missing.message().find("absent"), std::string::npos) << missing;
  EXPECT_EQ(missing.message().find("late,"), std::string::npos) << missing;
}

TEST(TcpKvStore, ConnectWaitsForAServerThatStartsLater) {
  int port = 0;
  {
    auto probe = TcpKvServer::Start("127.0.0.1", 0);
    ASSERT_TRUE(probe.ok());
    port = (*probe)->port();
  }
  std::unique_ptr<TcpKvServer> late;
  std::thread starter([&] {
    absl::SleepFor(absl::Milliseconds(300));
    auto s = TcpKvServer::Start("127.0.0.1", port);
    ASSERT_TRUE(s.ok()) << s.status();
    late = *std::move(s);
  });
  auto c = TcpKvClient::Connect(absl::StrCat("127.0.0.1:", port), absl::Seconds(10));
  starter.join();
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->Set("k", Bytes("v")).ok());
}

TEST(TcpKvStore, BadAddressesAreErrors) {
  std::string host;
  int port = 0;
  for (const char* bad : {"", "host", "host:", ":29500", "host:0", "host:70000", "host:12ab"}) {
    EXPECT_EQ(ParseHostPort(bad, &host, &port).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  ASSERT_TRUE(ParseHostPort("10.0.0.1:29500", &host, &port).ok());
  EXPECT_EQ(host, "10.0.0.1");
  EXPECT_EQ(port, 29500);
  auto c = TcpKvClient::Connect("bad", absl::Milliseconds(10));
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moeserve::parallel
