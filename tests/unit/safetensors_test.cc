// SafetensorsFile and WriteSafetensors: round trips, the byte layout the format specifies, and one
// test per header validation rule (each error must name the file and, where there is one, the
// tensor).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/weights/safetensors.h"
#include "runtime/weights/safetensors_writer.h"

namespace moeserve::runtime {
namespace {

namespace fs = std::filesystem;
using kernels::DType;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string Message(const absl::Status& status) { return std::string(status.message()); }

class SafetensorsFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::path(::testing::TempDir()) / (std::string("moeserve_safetensors_") + test->name()))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (fs::path(dir_) / "model.safetensors").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes [u64 header length][header][data_bytes zero bytes] to path_; the length field is
  // header.size() unless overridden (to fake corrupt lengths).
  void WriteRaw(const std::string& header, size_t data_bytes,
                std::optional<uint64_t> header_length = std::nullopt) {
    const uint64_t length = header_length.value_or(header.size());
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(&length), sizeof(length));
    out << header << std::string(data_bytes, '\0');
  }

  // Opens a raw file built from `header`; expects failure and returns the message.
  std::string OpenError(const std::string& header, size_t data_bytes) {
    WriteRaw(header, data_bytes);
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
    EXPECT_FALSE(file.ok()) << header;
    if (file.ok()) return "";
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(Message(file.status()), HasSubstr(path_));
    return Message(file.status());
  }

  std::string dir_;
  std::string path_;
};

TEST_F(SafetensorsFileTest, RoundTripF32Bf16F16ExactBytes) {
  const std::vector<float> f32 = {1.0f, -2.5f, 3.25f, 0.0f, -0.0f, 1e-30f};
  std::vector<uint16_t> bf16, f16;
  for (float v : {0.5f, -1.0f, 3.0f, 65504.0f, -7.75f}) bf16.push_back(kernels::F32ToBf16(v));
  for (float v : {0.5f, -1.0f, 1e-7f}) f16.push_back(kernels::F32ToF16(v));
  const std::vector<int32_t> i32 = {7, -9};
  const std::vector<NamedTensor> tensors = {
      {"a.f32", DType::kF32, {2, 3}, f32.data()},
      {"b.bf16", DType::kBF16, {5}, bf16.data()},  // odd byte count: next tensor unaligned
      {"c.f16", DType::kF16, {3, 1}, f16.data()},
      {"d.i32", DType::kI32, {2}, i32.data()},
  };
  ASSERT_TRUE(WriteSafetensors(path_, tensors, {{"format", "pt"}}).ok());

  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ((*file)->tensors().size(), 4u);
  uint64_t offset = 0;
  for (const NamedTensor& t : tensors) {
    const TensorInfo& info = (*file)->tensors().at(t.name);
    EXPECT_EQ(info.name, t.name);
    EXPECT_EQ(info.dtype, t.dtype);
    EXPECT_EQ(info.shape, t.shape);
    EXPECT_EQ(info.file, path_);
    absl::StatusOr<kernels::TensorView> view = (*file)->View(t.name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->device, kernels::Device::kCpu);
    EXPECT_EQ(view->dtype, t.dtype);
    EXPECT_EQ(view->shape, t.shape);
    EXPECT_EQ(info.begin, offset) << "tensors are contiguous in the given order";
    EXPECT_EQ(info.end - info.begin, view->nbytes());
    EXPECT_EQ(std::memcmp(view->data, t.data, view->nbytes()), 0) << t.name;
    offset = info.end;
  }
  // Header length is a multiple of 8 and the file is exactly header + data.
  std::ifstream in(path_, std::ios::binary);
  uint64_t header_length = 0;
  in.read(reinterpret_cast<char*>(&header_length), sizeof(header_length));
  EXPECT_EQ(header_length % 8, 0u);
  EXPECT_EQ(fs::file_size(path_), 8 + header_length + offset);
}

// The exact bytes the format specifies for one tensor: an independent oracle for the writer.
TEST_F(SafetensorsFileTest, WriterMatchesSpecifiedLayout) {
  const float value = 1.5f;
  ASSERT_TRUE(WriteSafetensors(path_, {{"x", DType::kF32, {1}, &value}}).ok());
  const std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ASSERT_EQ(header.size(), 54u);
  std::string expected(8, '\0');
  expected[0] = 56;  // 54 padded to 56 with spaces
  expected += header + "  ";
  expected.append(reinterpret_cast<const char*>(&value), 4);  // 00 00 c0 3f
  std::ifstream in(path_, std::ios::binary);
  const std::string actual((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(actual, expected);
}

TEST_F(SafetensorsFileTest, WriterRejectsRepeatedName) {
  const float value = 0;
  absl::Status status =
      WriteSafetensors(path_, {{"x", DType::kF32, {1}, &value}, {"x", DType::kF32, {1}, &value}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(status), AllOf(HasSubstr(path_), HasSubstr("'x'")));
}

TEST_F(SafetensorsFileTest, ZeroSizedTensor) {
  const float value = 2.0f;
  ASSERT_TRUE(WriteSafetensors(path_, {{"empty", DType::kBF16, {0, 16}, nullptr},
                                       {"x", DType::kF32, {1}, &value},
                                       {"tail", DType::kF32, {4, 0}, nullptr}})
                  .ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<kernels::TensorView> empty = (*file)->View("empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->shape, (std::vector<int64_t>{0, 16}));
  EXPECT_EQ(empty->nbytes(), 0u);
  absl::StatusOr<kernels::TensorView> x = (*file)->View("x");
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(*static_cast<const float*>(x->data), 2.0f);
  EXPECT_TRUE((*file)->View("tail").ok());
}

TEST_F(SafetensorsFileTest, EmptyHeaderAndNoTensors) {
  ASSERT_TRUE(WriteSafetensors(path_, {}).ok());
  EXPECT_EQ(fs::file_size(path_), 16u);  // "{}" padded to 8
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE((*file)->tensors().empty());
  EXPECT_TRUE((*file)->metadata().empty());
  WriteRaw("{}", 0);  // unpadded is legal too
  EXPECT_TRUE(SafetensorsFile::Open(path_).ok());
}

TEST_F(SafetensorsFileTest, MissingFileIsNotFound) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(file.status()), HasSubstr(path_));
}

TEST_F(SafetensorsFileTest, FileShorterThanEightBytes) {
  for (size_t bytes : {0, 3, 7}) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << std::string(bytes, 'x');
    absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
    ASSERT_FALSE(file.ok());
    EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path_), HasSubstr("truncated")));
  }
}

TEST_F(SafetensorsFileTest, HeaderLengthPastEndOfFile) {
  WriteRaw("{}", 0, /*header_length=*/4096);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(Message(file.status()),
              AllOf(HasSubstr(path_), HasSubstr("4096"), HasSubstr("past the end")));
}

TEST_F(SafetensorsFileTest, HeaderLengthAbsurd) {
  WriteRaw("{}", 0, /*header_length=*/uint64_t{1} << 62);
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_FALSE(file.ok());
  EXPECT_THAT(Message(file.status()), AllOf(HasSubstr(path_), HasSubstr("limit")));
}

TEST_F(SafetensorsFileTest, HeaderNotJson) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32",)", 0), HasSubstr("not valid JSON"));
}

// nlohmann throws out_of_range (not parse_error) for a number that overflows a double; that used
// to escape Open and abort the process. Anywhere in the header, it is a Status naming the file.
TEST_F(SafetensorsFileTest, NumberOverflowAnywhereInHeaderIsAnError) {
  for (const std::string header : {
           R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "x": 1e999})",
           R"({"w": {"dtype": "F32", "shape": [1e999], "data_offsets": [0, 4]}})",
           R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, -1e999]}})",
           R"({"__metadata__": {"format": 1e999}})",
       }) {
    EXPECT_THAT(OpenError(header, 4), HasSubstr("not valid JSON")) << header;
  }
  // Past 2^64 nlohmann reads an integer as a double: a shape that is not integers.
  EXPECT_THAT(
      OpenError(
          R"({"w": {"dtype": "F32", "shape": [99999999999999999999], "data_offsets": [0, 4]}})", 4),
      HasSubstr("\"shape\" must hold integers"));
}

TEST_F(SafetensorsFileTest, HeaderNotObject) {
  EXPECT_THAT(OpenError("[1, 2]", 0), HasSubstr("must be a JSON object, got array"));
}

TEST_F(SafetensorsFileTest, EntryMissingDtype) {
  EXPECT_THAT(OpenError(R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("missing \"dtype\"")));
}

TEST_F(SafetensorsFileTest, EntryMissingShape) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("missing \"shape\"")));
}

TEST_F(SafetensorsFileTest, EntryMissingDataOffsets) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [1]}})", 4),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("missing \"data_offsets\"")));
}

TEST_F(SafetensorsFileTest, EntryWrongTypes) {
  EXPECT_THAT(OpenError(R"({"w": 3})", 4), HasSubstr("tensor 'w': entry is not a JSON object"));
  EXPECT_THAT(OpenError(R"({"w": {"dtype": 1, "shape": [1], "data_offsets": [0, 4]}})", 4),
              HasSubstr("tensor 'w': \"dtype\" must be a string"));
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", 4),
              HasSubstr("tensor 'w': \"shape\" must be an array"));
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4),
              HasSubstr("tensor 'w': \"shape\" must hold integers"));
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8),
              HasSubstr("tensor 'w': \"data_offsets\" must be [begin, end]"));
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}})", 4),
              HasSubstr("tensor 'w': \"data_offsets\" must be [begin, end]"));
}

TEST_F(SafetensorsFileTest, UnsupportedDtype) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", 4),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("unsupported dtype \"F8_E4M3\"")));
}

TEST_F(SafetensorsFileTest, NegativeDimension) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 0]}})", 0),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("negative dimension")));
}

TEST_F(SafetensorsFileTest, DataOffsetsOutOfRange) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 8),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("out of range of the 8-byte data section")));
}

TEST_F(SafetensorsFileTest, DataOffsetsEndBeforeBegin) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("end 4 < begin 8")));
}

TEST_F(SafetensorsFileTest, ByteLengthDisagreesWithShape) {
  EXPECT_THAT(OpenError(R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 8]}})", 8),
              AllOf(HasSubstr("tensor 'w'"), HasSubstr("span 8 bytes"), HasSubstr("needs 12")));
}

TEST_F(SafetensorsFileTest, OverlappingTensors) {
  const std::string message = OpenError(
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
      12);
  EXPECT_THAT(message, AllOf(HasSubstr("tensor 'b'"), HasSubstr("overlap tensor 'a'")));
}

TEST_F(SafetensorsFileTest, MetadataMustMapStringsToStrings) {
  EXPECT_THAT(OpenError(R"({"__metadata__": {"format": 1}})", 0),
              HasSubstr("\"__metadata__\" value for 'format' must be a string"));
}

TEST_F(SafetensorsFileTest, ViewOfMissingTensor) {
  ASSERT_TRUE(WriteSafetensors(path_, {}).ok());
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
  ASSERT_TRUE(file.ok());
  absl::StatusOr<kernels::TensorView> view = (*file)->View("lm_head.weight");
  EXPECT_EQ(view.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(view.status()), AllOf(HasSubstr(path_), HasSubstr("'lm_head.weight'")));
}

TEST(ParseSafetensorsDType, KnownAndUnknownNames) {
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64}) {
    absl::StatusOr<DType> parsed = ParseSafetensorsDType(std::string(kernels::DTypeName(t)));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, t);
  }
  for (const char* name : {"F64", "U8", "BOOL", "F8_E5M2", "bf16", ""}) {
    EXPECT_EQ(ParseSafetensorsDType(name).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace moeserve::runtime
