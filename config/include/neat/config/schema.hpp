// neat/config/schema.hpp: YAML configuration files checked against a declared schema.
//
// A Schema describes what a YAML node may hold (type, range, allowed values, keys). validate()
// walks a document against it and returns every problem it finds, each with the file, the
// 1-based line and column of the offending node and its key path ("components.blt.priority",
// "stages[2].name"). load_file()/load_string() parse and validate in one step and throw a
// ConfigError that carries all issues.
//
// Invariant: a document returned by load_file()/load_string() has passed validate() with no
// issue, so callers may read required keys with as<T>() without further checks.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace neat::config {

// What kind of node a Schema accepts.
enum class Kind {
  kString,   // any scalar (numbers and booleans are read as their text)
  kBoolean,  // plain scalar true/false (also yes/no/on/off, as YAML 1.1)
  kInteger,  // plain scalar holding a signed 64-bit integer
  kNumber,   // plain scalar holding a finite or infinite double (integers accepted)
  kEnum,     // scalar equal to one of a fixed set of strings
  kList,     // sequence; every item matches one item schema
  kMap,      // closed map: declared keys only, unknown keys are errors
  kDict,     // open map: any scalar key, every value matches one value schema
  kBytes,    // byte size: "512MiB", "4GiB", "1.5GB", "4096" (see neat/config/bytes.hpp)
  kAny,      // anything, not inspected
};

// Describes one YAML node. Value semantics: copies are independent (child schemas are
// immutable and shared).
class Schema {
 public:
  // One declared key of a closed map.
  struct Field {
    std::string key;
    std::shared_ptr<const Schema> schema;
    bool required = false;
    std::string doc;
  };

  // Custom check run after the type and range checks pass. Returns an error message
  // (without position or path) or std::nullopt when the node is acceptable.
  using Check = std::function<std::optional<std::string>(const YAML::Node&)>;

  static Schema string();
  static Schema boolean();
  // Integer in [min, max] (inclusive).
  static Schema integer(std::int64_t min = std::numeric_limits<std::int64_t>::min(),
                        std::int64_t max = std::numeric_limits<std::int64_t>::max());
  // Number in [min, max] (inclusive); integers are accepted. NaN is rejected.
  static Schema number(double min = -std::numeric_limits<double>::infinity(),
                       double max = std::numeric_limits<double>::infinity());
  // String equal to one of `allowed` (case-sensitive).
  static Schema one_of(std::vector<std::string> allowed);
  // Sequence of at least `min_size` items, each matching `item`.
  static Schema list(Schema item, std::size_t min_size = 0);
  // Closed map: only keys declared with required()/optional() are allowed.
  static Schema map();
  // Open map: any scalar key; each value must match `value`.
  static Schema dict(Schema value);
  // Byte size in [min, max] bytes, written as parse_bytes() accepts ("768MiB", "4GiB").
  static Schema bytes(std::uint64_t min = 0,
                      std::uint64_t max = std::numeric_limits<std::uint64_t>::max());
  // Anything.
  static Schema any();

  // Declares a key of a closed map (map() only; throws std::logic_error otherwise or when the
  // key is declared twice). A required key must be present; an optional one may be absent.
  Schema& required(std::string key, Schema s, std::string doc = "");
  Schema& optional(std::string key, Schema s, std::string doc = "");
  // Description of this node, shown by describe().
  Schema& doc(std::string text);
  // Default used by the reader when an optional key is absent, for describe() only (the
  // validator does not insert it).
  Schema& default_value(std::string text);
  // Adds a custom check (see Check); several checks run in order.
  Schema& check(Check fn);

  // Markdown table of every key reachable from this schema: path, type, range or allowed
  // values, required, default, description. Lists show their item as "path[]", dicts their
  // value as "path.<key>".
  std::string describe() const;

  // Short type name: "integer", "list of string", "one of: cpu, cuda", ...
  std::string type_name() const;
  // Range or allowed values in words ("1 .. 1024", "cpu | cuda"), or "" when unconstrained.
  std::string constraint() const;

  Kind kind() const { return kind_; }
  const std::vector<Field>& fields() const { return fields_; }
  const Field* field(std::string_view key) const;
  const std::vector<std::string>& allowed() const { return allowed_; }
  const Schema* item() const { return item_.get(); }  // list item / dict value, else nullptr
  std::int64_t int_min() const { return int_min_; }
  std::int64_t int_max() const { return int_max_; }
  double num_min() const { return num_min_; }
  double num_max() const { return num_max_; }
  std::uint64_t bytes_min() const { return bytes_min_; }
  std::uint64_t bytes_max() const { return bytes_max_; }
  std::size_t min_size() const { return min_size_; }
  const std::string& doc_text() const { return doc_; }
  const std::string& default_text() const { return default_; }
  const std::vector<Check>& checks() const { return checks_; }

 private:
  explicit Schema(Kind kind) : kind_(kind) {}
  Schema& add_field(std::string key, Schema s, std::string doc, bool required);

  Kind kind_;
  std::vector<Field> fields_;
  std::vector<std::string> allowed_;
  std::shared_ptr<const Schema> item_;
  std::int64_t int_min_ = std::numeric_limits<std::int64_t>::min();
  std::int64_t int_max_ = std::numeric_limits<std::int64_t>::max();
  double num_min_ = -std::numeric_limits<double>::infinity();
  double num_max_ = std::numeric_limits<double>::infinity();
  std::uint64_t bytes_min_ = 0;
  std::uint64_t bytes_max_ = std::numeric_limits<std::uint64_t>::max();
  std::size_t min_size_ = 0;
  std::string doc_;
  std::string default_;
  std::vector<Check> checks_;
};

// One problem found in a configuration file.
struct Issue {
  std::string file;  // as given by the caller (path or a name such as "<inline>")
  int line = 0;      // 1-based; 0 when the position is not known (empty document, missing file)
  int column = 0;    // 1-based; 0 when not known
  std::string path;  // key path: "match.min_cores", "stages[2].name"; "" for the document root
  std::string message;

  // "file:line:column: path: message"; the position is left out when not known and the path
  // when empty.
  std::string str() const;
};

// All issues of one load, in document order. what() lists them one per line.
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<Issue> issues);
  const std::vector<Issue>& issues() const { return issues_; }

 private:
  std::vector<Issue> issues_;
};

// Issue::str() of every issue, one per line.
std::string format_issues(const std::vector<Issue>& issues);

// Checks `node` against `schema` and returns every issue (empty when valid). `file` is copied
// into each issue. Duplicate map keys are reported too. Never throws for bad input.
std::vector<Issue> validate(const YAML::Node& node, const Schema& schema, const std::string& file);

// Reads and parses `file`, then validates it. Throws ConfigError when the file cannot be read,
// is not valid YAML (issue at the parser's line and column) or does not match the schema.
YAML::Node load_file(const std::filesystem::path& file, const Schema& schema);

// Parses `text` (named `name` in issues) and validates it; throws ConfigError like load_file.
YAML::Node load_string(std::string_view text, const Schema& schema, const std::string& name);

// Closest candidate to `word` by edit distance, or "" when none is close enough to be a likely
// typo (distance at most max(1, len/3), capped at 3).
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);

// The items separated by `sep` ("a, b, c"); for lists of names in error messages.
std::string join(const std::vector<std::string>& items, std::string_view sep);

// node[key].as<T>() when the key is present and not null, else `fallback`. Throws
// YAML::BadConversion when present with a value that does not convert (validate first).
template <class T>
T get_or(const YAML::Node& node, const std::string& key, T fallback) {
  if (!node.IsMap()) return fallback;
  const YAML::Node value = node[key];
  if (!value.IsDefined() || value.IsNull()) return fallback;
  return value.as<T>();
}

}  // namespace neat::config
