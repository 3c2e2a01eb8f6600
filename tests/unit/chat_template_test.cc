// EncodeChat vs mistral-common's MistralTokenizer.v1().encode_chat_completion
// (tests/data/tokenizer/chat.json, written by tools/gen_tokenizer_fixtures.py): every accepted
// conversation must give identical tokens, every conversation mistral-common rejects must be
// rejected with its message.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/chat_template.h"
#include "runtime/tokenizer/tokenizer.h"

namespace moeserve::runtime {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::vector<ChatMessage> Messages(const json& j) {
  std::vector<ChatMessage> messages;
  for (const json& m : j) messages.push_back({m["role"], m["content"]});
  return messages;
}

class ChatTemplateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = MOESERVE_TEST_DATA_DIR "/tokenizer/chat.json";
    std::ifstream in(path);
    ASSERT_TRUE(in) << "missing fixture " << path;
    std::ostringstream text;
    text << in.rdbuf();
    fixture_ = new json(json::parse(text.str()));
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

  // The pieces of `ids` joined, e.g. "<s>▁[INST]▁Hi▁[/INST]", for readable failure messages.
  static std::string Render(const std::vector<int32_t>& ids) {
    std::string out;
    for (int32_t id : ids) out += tok().IdToPiece(id);
    return out;
  }

 private:
  static const Tokenizer* tok_;
  static const json* fixture_;
};

const Tokenizer* ChatTemplateTest::tok_ = nullptr;
const json* ChatTemplateTest::fixture_ = nullptr;

TEST_F(ChatTemplateTest, FixtureRecordsItsOrigin) {
  EXPECT_EQ(fixture()["generator"], "tools/gen_tokenizer_fixtures.py");
  EXPECT_FALSE(fixture()["mistral_common_version"].get<std::string>().empty());
  EXPECT_GE(fixture()["conversations"].size(), 30u);
  EXPECT_GE(fixture()["rejected"].size(), 5u);
}

TEST_F(ChatTemplateTest, ConversationsMatchMistralCommon) {
  for (const json& c : fixture()["conversations"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<ChatMessage> messages = Messages(c["messages"]);
    EXPECT_TRUE(ValidateChat(messages).ok()) << ValidateChat(messages);
    auto tokens = EncodeChat(tok(), messages);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    const std::vector<int32_t> expected = c["tokens"].get<std::vector<int32_t>>();
    EXPECT_EQ(*tokens, expected) << "  ours:   " << Render(*tokens)
                                 << "\n  theirs: " << c["text"].get<std::string>();
  }
}

TEST_F(ChatTemplateTest, RejectedConversationsAreRejected) {
  for (const json& c : fixture()["rejected"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::vector<ChatMessage> messages = Messages(c["messages"]);
    const std::string expected = c["message"];
    auto tokens = EncodeChat(tok(), messages);
    ASSERT_FALSE(tokens.ok()) << Render(*tokens);
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tokens.status().message(), HasSubstr(expected));
    const absl::Status validated = ValidateChat(messages);
    EXPECT_EQ(validated, tokens.status());
  }
}

TEST_F(ChatTemplateTest, ErrorsNameTheMessage) {
  auto tokens =
      EncodeChat(tok(), {{"user", "Hi"}, {"assistant", "Hello"}, {"system", "s"}, {"user", "x"}});
  ASSERT_FALSE(tokens.ok());
  EXPECT_THAT(tokens.status().message(), HasSubstr("messages[2]"));
}

TEST_F(ChatTemplateTest, UnknownAndToolRolesAreRejected) {
  for (const std::string role : {"tool", "bot", "User", ""}) {
    auto tokens = EncodeChat(tok(), {{"user", "Hi"}, {role, "x"}, {"user", "y"}});
    ASSERT_FALSE(tokens.ok()) << "role '" << role << "'";
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tokens.status().message(), HasSubstr("messages[1]"));
    EXPECT_THAT(tokens.status().message(), HasSubstr("'" + role + "'"));
  }
}

// The template spelled out, independent of the fixture: text markers, BOS once, EOS per reply.
TEST_F(ChatTemplateTest, TemplateStructure) {
  auto tokens = EncodeChat(
      tok(), {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}});
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  std::vector<int32_t> expected = {tok().bos_id()};
  for (int32_t id : tok().Encode("[INST] Be brief.\n\nHi [/INST]", false, false)) {
    expected.push_back(id);
  }
  for (int32_t id : tok().Encode("Hello!", false, true)) expected.push_back(id);
  for (int32_t id : tok().Encode("[INST] Bye [/INST]", false, false)) expected.push_back(id);
  EXPECT_EQ(*tokens, expected) << Render(*tokens);
  int controls = 0;
  for (int32_t id : *tokens) controls += tok().IsControl(id);
  EXPECT_EQ(controls, 2);  // <s> and the one </s>
}

}  // namespace
}  // namespace moeserve::runtime
