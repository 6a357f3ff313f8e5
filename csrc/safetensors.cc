#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "errors.h"

namespace kvcache {

namespace {

// Bytes per element of every dtype the format defines; unknown names are rejected at parse time.
std::size_t dtype_size(const std::string& name) {
  static const std::map<std::string, std::size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(name);
  return it == sizes.end() ? 0 : it->second;
}

DType dtype_of(const std::string& name) {
  if (name == "F32") return DType::F32;
  if (name == "F16") return DType::F16;
  if (name == "BF16") return DType::BF16;
  return DType::Other;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw FileError("cannot open weights file '" + path + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw FileError("weights path '" + path + "' is not a regular file");
  }
  map_size_ = static_cast<std::size_t>(st.st_size);
  if (map_size_ < 8) {
    ::close(fd);
    fail("truncated safetensors file '" + path + "': " + std::to_string(map_size_) +
         " bytes, too short for the 8-byte header length");
  }
  map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    throw FileError("cannot memory-map '" + path + "': " + std::strerror(errno));
  }
  uint64_t header_len = 0;
  std::memcpy(&header_len, map_, 8);  // little-endian on every platform we build for
  try {
    if (header_len > map_size_ - 8) {
      fail("malformed safetensors file '" + path + "': header length " + std::to_string(header_len) +
           " goes beyond the file size " + std::to_string(map_size_));
    }
    parse_header(static_cast<std::size_t>(header_len));
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

void SafeTensorsFile::parse_header(std::size_t header_len) {
  const char* header = static_cast<const char*>(map_) + 8;
  data_ = static_cast<const std::byte*>(map_) + 8 + header_len;
  data_size_ = map_size_ - 8 - header_len;
  const std::string where = "malformed safetensors file '" + path_ + "': ";

  nlohmann::json root = nlohmann::json::parse(header, header + header_len, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object()) fail(where + "the header is not a JSON object");

  for (auto& [name, entry] : root.items()) {
    if (name == "__metadata__") continue;
    const std::string at = where + "tensor '" + name + "' ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      fail(at + "needs dtype, shape and data_offsets");
    }
    TensorInfo info;
    if (!entry["dtype"].is_string()) fail(at + "has a non-string dtype");
    info.dtype_name = entry["dtype"].get<std::string>();
    info.dtype = dtype_of(info.dtype_name);
    std::size_t elem = dtype_size(info.dtype_name);
    if (elem == 0) fail(at + "has unknown dtype '" + info.dtype_name + "'");
    if (!entry["shape"].is_array()) fail(at + "has a shape that is not a list");
    for (auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(at + "has a bad dimension " + d.dump());
      info.shape.push_back(d.get<int64_t>());
    }
    auto& offsets = entry["data_offsets"];
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      fail(at + "has bad data_offsets " + offsets.dump());
    }
    info.begin = offsets[0].get<std::size_t>();
    info.end = offsets[1].get<std::size_t>();
    if (info.begin > info.end || info.end > data_size_) {
      fail(at + "has data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
           "] outside the data section of " + std::to_string(data_size_) + " bytes (truncated file?)");
    }
    // The byte count is multiplied out with overflow checks: a shape such as [2**62, 4] would otherwise wrap
    // to 0 and match an empty data range. Once it equals the range, numel() cannot overflow anywhere later.
    uint64_t need = elem;
    for (int64_t d : info.shape) {
      if (__builtin_mul_overflow(need, static_cast<uint64_t>(d), &need)) {
        fail(at + "has a shape " + entry["shape"].dump() + " too large for any file");
      }
    }
    if (info.end - info.begin != need) {
      fail(at + "has " + std::to_string(info.end - info.begin) + " bytes of data but its shape and dtype need " +
           std::to_string(need));
    }
    tensors_.emplace(name, std::move(info));
  }

  // No two tensors may share bytes: sort by start and compare neighbours.
  std::vector<const std::pair<const std::string, TensorInfo>*> order;
  for (auto& item : tensors_) order.push_back(&item);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->second.begin < b->second.begin; });
  for (std::size_t i = 1; i < order.size(); ++i) {
    if (order[i]->second.begin < order[i - 1]->second.end) {
      fail(where + "tensors '" + order[i - 1]->first + "' and '" + order[i]->first + "' overlap");
    }
  }
}

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("tensor '" + name + "' not found in '" + path_ + "'");
  return it->second;
}

std::vector<std::string> SafeTensorsFile::names() const {
  std::vector<std::string> out;
  for (auto& item : tensors_) out.push_back(item.first);
  return out;
}

}  // namespace kvcache
