// Tokenizer vs mistral-common (tests/data/tokenizer/encode.json, written by
// tools/gen_tokenizer_fixtures.py): every fixture string must encode to the same ids and decode to
// the same text. Also: the embedded model is byte-identical to the vendored file and has the
// recorded SHA-256, special ids, byte-fallback pieces, and Load() failures as Status values.
#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/embedded_model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kVendoredModel[] =
    MOESERVE_SOURCE_DIR "/third_party/mistral_tokenizer/tokenizer.model.v1";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

json LoadFixture() {
  const std::string path = MOESERVE_TEST_DATA_DIR "/tokenizer/encode.json";
  const std::string text = ReadFile(path);
  EXPECT_FALSE(text.empty()) << "missing fixture " << path;
  return json::parse(text);
}

// Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF).
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

// FIPS 180-4 SHA-256, so the checksum test needs no crypto library.
std::string Sha256Hex(std::string_view data) {
  static constexpr std::array<uint32_t, 64> k = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
      0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
      0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
      0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
      0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
      0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
      0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
      0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                               0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string msg(data);
  const uint64_t bit_len = static_cast<uint64_t>(data.size()) * 8;
  msg.push_back(static_cast<char>(0x80));
  while (msg.size() % 64 != 56) msg.push_back('\0');
  for (int i = 7; i >= 0; --i) msg.push_back(static_cast<char>((bit_len >> (8 * i)) & 0xFF));
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  for (size_t block = 0; block < msg.size(); block += 64) {
    std::array<uint32_t, 64> w;
    for (int t = 0; t < 16; ++t) {
      w[t] = 0;
      for (int b = 0; b < 4; ++b) {
        w[t] = (w[t] << 8) | static_cast<unsigned char>(msg[block + 4 * t + b]);
      }
    }
    for (int t = 16; t < 64; ++t) {
      const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    std::array<uint32_t, 8> v = h;
    for (int t = 0; t < 64; ++t) {
      const uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
      const uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const uint32_t t1 = v[7] + s1 + ch + k[t] + w[t];
      const uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
      const uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      const uint32_t t2 = s0 + maj;
      v = {t1 + t2, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6]};
    }
    for (int i = 0; i < 8; ++i) h[i] += v[i];
  }
  std::string hex;
  char buf[9];
  for (uint32_t x : h) {
    std::snprintf(buf, sizeof(buf), "%08x", x);
    hex += buf;
  }
  return hex;
}

std::vector<int32_t> Ids(const json& j) { return j.get<std::vector<int32_t>>(); }

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new json(LoadFixture());
    auto tok = Tokenizer::LoadEmbedded();
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = tok->release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete fixture_;
  }

  static const Tokenizer& tok() { return *tok_; }
  static const json& fixture() { return *fixture_; }

  std::string TempPath(const std::string& name) const {
    return (fs::path(::testing::TempDir()) / ("moeserve_tokenizer_" + name)).string();
  }

 private:
  static const Tokenizer* tok_;
  static const json* fixture_;
};

const Tokenizer* TokenizerTest::tok_ = nullptr;
const json* TokenizerTest::fixture_ = nullptr;

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_F(TokenizerTest, FixtureRecordsItsOrigin) {
  EXPECT_EQ(fixture()["generator"], "tools/gen_tokenizer_fixtures.py");
  EXPECT_FALSE(fixture()["mistral_common_version"].get<std::string>().empty());
  EXPECT_EQ(fixture()["tokenizer_model"], "tokenizer.model.v1");
  EXPECT_GE(fixture()["cases"].size(), 250u);
}

TEST_F(TokenizerTest, EmbeddedModelIsTheVendoredFile) {
  const std::string_view embedded = EmbeddedMistralV1TokenizerModel();
  const std::string vendored = ReadFile(kVendoredModel);
  ASSERT_FALSE(vendored.empty()) << kVendoredModel;
  EXPECT_EQ(embedded.size(), fixture()["tokenizer_model_size"].get<size_t>());
  EXPECT_TRUE(embedded == vendored)
      << "embedded " << embedded.size() << " bytes vs vendored " << vendored.size() << " bytes";
  const std::string expected = fixture()["tokenizer_model_sha256"];
  EXPECT_EQ(Sha256Hex(embedded), expected);
  EXPECT_EQ(std::string(EmbeddedMistralV1TokenizerSha256()), expected);
}

TEST_F(TokenizerTest, SpecialIdsAndVocabulary) {
  EXPECT_EQ(tok().bos_id(), 1);
  EXPECT_EQ(tok().eos_id(), 2);
  EXPECT_EQ(tok().unk_id(), 0);
  EXPECT_EQ(tok().vocab_size(), 32000);
  EXPECT_EQ(tok().bos_id(), fixture()["bos_id"].get<int32_t>());
  EXPECT_EQ(tok().eos_id(), fixture()["eos_id"].get<int32_t>());
  EXPECT_EQ(tok().unk_id(), fixture()["unk_id"].get<int32_t>());
  EXPECT_EQ(tok().vocab_size(), fixture()["vocab_size"].get<int32_t>());
  EXPECT_EQ(tok().IdToPiece(0), "<unk>");
  EXPECT_EQ(tok().IdToPiece(1), "<s>");
  EXPECT_EQ(tok().IdToPiece(2), "</s>");
  EXPECT_EQ(tok().IdToPiece(22557), "\u2581Hello");
  EXPECT_EQ(tok().PieceToId("\u2581Hello"), 22557);
  EXPECT_EQ(tok().PieceToId("no such piece"), tok().unk_id());
  EXPECT_TRUE(tok().IsControl(1));
  EXPECT_TRUE(tok().IsControl(2));
  EXPECT_FALSE(tok().IsControl(0));
  EXPECT_FALSE(tok().IsControl(22557));
  EXPECT_EQ(tok().Encode("", true, true), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(tok().Encode("", false, false), std::vector<int32_t>{});
}

TEST_F(TokenizerTest, EncodeMatchesMistralCommon) {
  int checked = 0;
  for (const json& c : fixture()["cases"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(::testing::Message() << "text " << c["text"].dump());
    const std::vector<int32_t> ids_bos = Ids(c["ids_bos"]);
    EXPECT_EQ(tok().Encode(text, /*add_bos=*/true, /*add_eos=*/false), ids_bos);
    EXPECT_EQ(tok().Encode(text, /*add_bos=*/false, /*add_eos=*/false), Ids(c["ids"]));
    std::vector<int32_t> with_eos = ids_bos;
    with_eos.push_back(2);
    EXPECT_EQ(tok().Encode(text, /*add_bos=*/true, /*add_eos=*/true), with_eos);
    ++checked;
  }
  EXPECT_GE(checked, 250);
}

TEST_F(TokenizerTest, DecodeMatchesMistralCommon) {
  for (const json& c : fixture()["cases"]) {
    SCOPED_TRACE(::testing::Message() << "text " << c["text"].dump());
    const std::string decoded = tok().Decode(Ids(c["ids_bos"]));
    EXPECT_EQ(decoded, c["decoded"].get<std::string>());
    EXPECT_TRUE(IsValidUtf8(decoded));
  }
  for (const json& c : fixture()["decode_cases"]) {
    SCOPED_TRACE(::testing::Message() << "ids " << c["ids"].dump());
    const std::string decoded = tok().Decode(Ids(c["ids"]));
    EXPECT_EQ(decoded, c["decoded"].get<std::string>());
    EXPECT_TRUE(IsValidUtf8(decoded));
  }
}

// The fixture must exercise what it claims to; guards against a generator regression.
TEST_F(TokenizerTest, FixtureExercisesByteFallbackAndLiterals) {
  int byte_fallback_cases = 0;
  for (const json& c : fixture()["cases"]) {
    for (int32_t id : Ids(c["ids"])) {
      if (tok().IsByteFallback(id)) {
        ++byte_fallback_cases;
        break;
      }
    }
  }
  EXPECT_GE(byte_fallback_cases, 20);
  // Special-token look-alikes in text are text: no control id appears in their encoding.
  for (const std::string literal : {"<s>", "</s>", "[INST]", "[/INST]", "<unk>", "<0x41>"}) {
    for (int32_t id : tok().Encode(literal, false, false)) {
      EXPECT_FALSE(tok().IsControl(id)) << literal;
      EXPECT_NE(id, tok().unk_id()) << literal;
      EXPECT_FALSE(tok().IsByteFallback(id)) << literal;
    }
  }
}

TEST_F(TokenizerTest, ByteFallbackPieces) {
  // Mixtral's vocabulary: ids 3..258 are <0x00>..<0xFF>, nothing else is a byte piece.
  for (int32_t id = 0; id < tok().vocab_size(); ++id) {
    const bool expected = id >= 3 && id <= 258;
    ASSERT_EQ(tok().IsByteFallback(id), expected) << id << " " << tok().IdToPiece(id);
    if (!expected) continue;
    char piece[8];
    std::snprintf(piece, sizeof(piece), "<0x%02X>", id - 3);
    EXPECT_EQ(tok().IdToPiece(id), piece);
    // Alone, most bytes are not valid UTF-8; decoding must still produce valid UTF-8 (U+FFFD).
    const std::string decoded = tok().Decode({id});
    EXPECT_TRUE(IsValidUtf8(decoded)) << piece;
    EXPECT_FALSE(decoded.empty()) << piece;
  }
  // A complete multi-byte sequence spelled as byte pieces decodes to the character.
  EXPECT_EQ(tok().Decode({3 + 0xE4, 3 + 0xB9, 3 + 0x99}), "\u4e59");
  // Character outside the vocabulary round-trips through byte fallback.
  const std::vector<int32_t> ids = tok().Encode("\U00020000", false, false);
  ASSERT_FALSE(ids.empty());
  for (int32_t id : ids) {
    if (id != tok().PieceToId("\u2581")) {
      EXPECT_TRUE(tok().IsByteFallback(id)) << id;
    }
  }
  EXPECT_EQ(tok().Decode(ids), "\U00020000");
  EXPECT_FALSE(tok().IsByteFallback(-1));
  EXPECT_FALSE(tok().IsByteFallback(32000));
}

TEST_F(TokenizerTest, DecodeSkipsControlAndOutOfRangeIds) {
  const std::vector<int32_t> hello = tok().Encode("Hello world", false, false);
  std::vector<int32_t> noisy = {1, -1};
  noisy.insert(noisy.end(), hello.begin(), hello.end());
  noisy.push_back(2);
  noisy.push_back(32000);
  noisy.push_back(1 << 30);
  EXPECT_EQ(tok().Decode(noisy), "Hello world");
  EXPECT_EQ(tok().Decode({}), "");
  EXPECT_EQ(tok().IdToPiece(-1), "");
  EXPECT_EQ(tok().IdToPiece(32000), "");
  EXPECT_FALSE(tok().IsControl(-5));
}

TEST_F(TokenizerTest, MalformedUtf8InputIsNotAnError) {
  const std::string bad = std::string("ok \xff\xfe then \xe4\xb9 cut ") + '\0' + "nul";
  const std::vector<int32_t> ids = tok().Encode(bad, true, false);
  ASSERT_GT(ids.size(), 1u);
  EXPECT_EQ(ids.front(), 1);
  const std::string decoded = tok().Decode(ids);
  EXPECT_TRUE(IsValidUtf8(decoded));
  EXPECT_THAT(decoded, HasSubstr("then"));
}

TEST_F(TokenizerTest, ConcurrentEncodeIsDeterministic) {
  const json& cases = fixture()["cases"];
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (const json& c : cases) {
        if (tok().Encode(c["text"].get<std::string>(), true, false) != Ids(c["ids_bos"])) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

TEST_F(TokenizerTest, LoadFromFileMatchesEmbedded) {
  auto loaded = Tokenizer::Load(kVendoredModel);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->vocab_size(), 32000);
  for (const json& c : fixture()["cases"]) {
    const std::string text = c["text"];
    ASSERT_EQ((*loaded)->Encode(text, true, false), tok().Encode(text, true, false)) << text;
  }
}

TEST_F(TokenizerTest, LoadMissingFileIsNotFound) {
  auto tok = Tokenizer::Load("/nonexistent/dir/tokenizer.model");
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(tok.status().message(), HasSubstr("/nonexistent/dir/tokenizer.model"));
}

TEST_F(TokenizerTest, LoadDirectoryIsInvalidArgument) {
  auto tok = Tokenizer::Load(::testing::TempDir());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tok.status().message(), HasSubstr("directory"));
}

TEST_F(TokenizerTest, LoadGarbageIsInvalidArgument) {
  const std::string vendored = ReadFile(kVendoredModel);
  const std::vector<std::pair<std::string, std::string>> files = {
      {"empty.model", ""},
      {"text.model", "this is not a sentencepiece model\n"},
      {"binary.model", std::string("\x0a\xff\xff\xff\xff\x0f\x00\x01\x02", 9)},
      {"json.model", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}"},
      {"truncated.model", vendored.substr(0, vendored.size() / 2 + 7)},
  };
  for (const auto& [name, bytes] : files) {
    const std::string path = TempPath(name);
    {
      std::ofstream out(path, std::ios::binary);
      out << bytes;
    }
    auto tok = Tokenizer::Load(path);
    ASSERT_FALSE(tok.ok()) << name << " loaded with " << (*tok)->vocab_size() << " pieces";
    EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(tok.status().message(), HasSubstr(path)) << name;
    fs::remove(path);
  }
}

}  // namespace
}  // namespace moeserve::runtime
