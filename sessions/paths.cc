#include "sessions/paths.h"

#include <cstdint>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "sessions/state_machine.h"

namespace lockd::sessions {

bool IsValidUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<uint8_t>(text[i]);
    if (byte < 0x80) {
      ++i;
      continue;
    }
    size_t length;
    uint32_t code_point;
    uint32_t min_code_point;
    if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code_point = byte & 0x1F;
      min_code_point = 0x80;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code_point = byte & 0x0F;
      min_code_point = 0x800;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code_point = byte & 0x07;
      min_code_point = 0x10000;
    } else {
      return false;
    }
    if (text.size() - i < length) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<uint8_t>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    if (code_point < min_code_point || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

absl::Status ValidateName(absl::string_view name, absl::string_view what,
                          const Limits& limits) {
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(name), " is not allowed"));
  }
  if (name.size() > limits.max_name_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", Quote(name), " has ", name.size(),
        " bytes, above max_name_bytes (", limits.max_name_bytes, ")"));
  }
  if (name.find('/') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(name), " contains \"/\""));
  }
  if (name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(name), " contains a NUL byte"));
  }
  if (!IsValidUtf8(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(name), " is not valid UTF-8"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePathImpl(absl::string_view path, const Limits& limits) {
  if (path.empty() || path[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path ", Quote(path),
                     " is not absolute (must start "
                     "with \"/\")"));
  }
  if (path.size() > limits.max_path_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("path has ", path.size(), " bytes, above max_path_bytes (",
                     limits.max_path_bytes, ")"));
  }
  if (path == "/") return absl::OkStatus();
  if (path.back() == '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("path ", Quote(path), " ends with \"/\""));
  }
  size_t depth = 0;
  for (absl::string_view name : absl::StrSplit(path.substr(1), '/')) {
    if (++depth > limits.max_path_depth) {
      return absl::InvalidArgumentError(
          absl::StrCat("path ", Quote(path), " is deeper than max_path_depth (",
                       limits.max_path_depth, ")"));
    }
    absl::Status status = ValidateName(name, "name", limits);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("path ", Quote(path), ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePath(std::string_view path, const Limits& limits) {
  return ValidatePathImpl(ToAbsl(path), limits);
}

absl::string_view ParentPath(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == 0 ? path.substr(0, 1) : path.substr(0, slash);
}

absl::string_view BaseName(absl::string_view path) {
  return path.substr(path.rfind('/') + 1);
}

std::string ChildPath(absl::string_view parent, absl::string_view name) {
  return parent == "/" ? absl::StrCat("/", name)
                       : absl::StrCat(parent, "/", name);
}

std::string Quote(absl::string_view text) {
  return absl::StrCat("\"", absl::CHexEscape(text), "\"");
}

}  // namespace lockd::sessions
