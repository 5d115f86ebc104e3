// Output of lockctl: aligned tables for people, JSON for programs, and the
// one-line error format of both.

#ifndef LOCKD_CLI_OUTPUT_H_
#define LOCKD_CLI_OUTPUT_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace lockd::cli {

// Whether `text` is valid UTF-8 (no overlong forms, surrogates or code
// points above U+10FFFF).
bool IsValidUtf8(absl::string_view text);

// A JSON string literal (quotes included). Bytes that are not valid UTF-8
// are written as \u00XX escapes of their Latin-1 reading, so the output is
// always valid JSON.
std::string JsonString(absl::string_view text);

// Builds one JSON object, keys in insertion order.
class JsonObject {
 public:
  JsonObject& String(absl::string_view key, absl::string_view value);
  JsonObject& Int(absl::string_view key, int64_t value);
  JsonObject& Uint(absl::string_view key, uint64_t value);
  JsonObject& Bool(absl::string_view key, bool value);
  JsonObject& Null(absl::string_view key);
  // A time as FormatTimeMs writes it; null for 0 (no time).
  JsonObject& TimeMs(absl::string_view key, int64_t unix_ms);
  // `json` must be valid JSON (an object, array, ...).
  JsonObject& Raw(absl::string_view key, absl::string_view json);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  void Key(absl::string_view key);
  std::string body_;
};

// A JSON array of the given JSON values.
std::string JsonArray(const std::vector<std::string>& elements);

// Columns aligned with two spaces between them, headers first.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);
  void AddRow(std::vector<std::string> cells);
  void Print(FILE* out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "2026-11-22T20:31:07.123Z" for ms since the Unix epoch; "-" for 0.
std::string FormatTimeMs(int64_t unix_ms);
// An epoch (the leader's Paxos ballot, round * 65536 + replica id) as the
// server's logs write it, round.replica: 65539 is "1.3".
std::string FormatEpoch(uint64_t epoch);
// "1.5s", "250ms", "2m0s" style.
std::string FormatDurationMs(int64_t ms);

// Where a command's results and errors go, in the chosen format.
class Output {
 public:
  explicit Output(bool json) : json_(json) {}
  bool json() const { return json_; }

  // Prints `json` (one line) to stdout.
  void Json(const std::string& json) const;
  // Prints a line of text to stdout.
  void Line(absl::string_view text) const;
  // Reports an error: "lockctl: <what>: <message>" on stderr, or with
  // --output=json a line {"error": {...}} on stdout. Returns `exit_code`.
  int Error(absl::string_view what, const absl::Status& status,
            int exit_code) const;

 private:
  bool json_;
};

}  // namespace lockd::cli

#endif  // LOCKD_CLI_OUTPUT_H_
