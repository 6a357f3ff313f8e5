// SafeTensorsFile: a memory-mapped, fully validated .safetensors file.
//
// Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}},
// then the data; offsets are relative to the start of the data. Everything the header claims is checked against
// the file before any tensor is touched: a corrupt file raises, it never reads out of bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace kvcache {

enum class DType { F32, F16, BF16, Other };

struct TensorInfo {
  std::string dtype_name;      // as written in the header, e.g. "F32"
  DType dtype;
  std::vector<int64_t> shape;
  std::size_t begin = 0;       // byte offsets into the data section
  std::size_t end = 0;
  int64_t numel() const;
};

class SafeTensorsFile {
 public:
  // Throws FileError when the file cannot be opened, std::invalid_argument when it is malformed.
  explicit SafeTensorsFile(const std::string& path);
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::byte* data(const TensorInfo& info) const { return data_ + info.begin; }
  std::vector<std::string> names() const;
  // Whether p points into this file's tensor data.
  bool maps(const void* p) const {
    const auto* b = static_cast<const std::byte*>(p);
    return data_ != nullptr && b >= data_ && b < data_ + data_size_;
  }

 private:
  void parse_header(std::size_t header_len);

  std::string path_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // start of the data section
  std::size_t data_size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace kvcache
