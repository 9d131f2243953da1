// Validation of a YAML document against a Schema, and loading files and strings with it.
// Every problem becomes one Issue with file, 1-based line:column and key path; the walk never
// stops at the first problem.
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "neat/config/bytes.hpp"
#include "neat/config/schema.hpp"

namespace neat::config {
namespace {

constexpr std::size_t kMaxShownScalar = 40;

std::string shown(const std::string& scalar) {
  if (scalar.size() <= kMaxShownScalar) return "'" + scalar + "'";
  return "'" + scalar.substr(0, kMaxShownScalar) + "...'";
}

// Plain (unquoted) scalars may be numbers or booleans; so may scalars with an explicit core
// schema tag (!!int, !!float, !!bool). Quoted scalars are strings.
bool is_plain(const YAML::Node& node) {
  const std::string& tag = node.Tag();
  return tag == "?" || tag.rfind("tag:yaml.org,2002:", 0) == 0;
}

std::optional<std::int64_t> as_integer(const YAML::Node& node) {
  std::int64_t v = 0;
  if (is_plain(node) && YAML::convert<std::int64_t>::decode(node, v)) return v;
  return std::nullopt;
}

std::optional<double> as_number(const YAML::Node& node) {
  double v = 0;
  if (is_plain(node) && YAML::convert<double>::decode(node, v)) return v;
  return std::nullopt;
}

std::optional<bool> as_boolean(const YAML::Node& node) {
  bool v = false;
  if (is_plain(node) && YAML::convert<bool>::decode(node, v)) return v;
  return std::nullopt;
}

std::string format_number(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// "got ..." part of a type error: what the node actually holds.
std::string actual(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return "null (no value)";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string& s = node.Scalar();
  if (as_integer(node)) return "integer " + s;
  if (as_number(node)) return "number " + s;
  if (as_boolean(node)) return "boolean " + s;
  return "string " + shown(s);
}

class Validator {
 public:
  explicit Validator(const std::string& file) : file_(file) {}

  void walk(const YAML::Node& node, const Schema& schema, const std::string& path,
            const YAML::Mark& fallback) {
    const YAML::Mark mark = position(node, fallback);
    switch (schema.kind()) {
      case Kind::kAny:
        return;
      case Kind::kString:
        if (!node.IsScalar()) return type_error(node, "string", path, mark);
        break;
      case Kind::kBoolean:
        if (!node.IsScalar() || !as_boolean(node)) return type_error(node, "boolean", path, mark);
        break;
      case Kind::kInteger:
        if (!check_integer(node, schema, path, mark)) return;
        break;
      case Kind::kNumber:
        if (!check_number(node, schema, path, mark)) return;
        break;
      case Kind::kEnum:
        if (!check_enum(node, schema, path, mark)) return;
        break;
      case Kind::kBytes:
        if (!check_bytes(node, schema, path, mark)) return;
        break;
      case Kind::kList:
        if (!check_list(node, schema, path, mark)) return;
        break;
      case Kind::kMap:
        if (!check_map(node, schema, path, mark)) return;
        break;
      case Kind::kDict:
        if (!check_dict(node, schema, path, mark)) return;
        break;
    }
    for (const Schema::Check& check : schema.checks()) {
      if (std::optional<std::string> message = check(node)) add(mark, path, *message);
    }
  }

  std::vector<Issue> take() { return std::move(issues_); }

 private:
  // yaml-cpp gives a null value the position of the next token; the key's position (the
  // fallback) is where the reader looks.
  static YAML::Mark position(const YAML::Node& node, const YAML::Mark& fallback) {
    if (!node.IsDefined() || node.IsNull()) return fallback;
    const YAML::Mark m = node.Mark();
    return m.is_null() ? fallback : m;
  }

  void add(const YAML::Mark& mark, const std::string& path, std::string message) {
    Issue issue;
    issue.file = file_;
    if (!mark.is_null()) {
      issue.line = mark.line + 1;
      issue.column = mark.column + 1;
    }
    issue.path = path;
    issue.message = std::move(message);
    issues_.push_back(std::move(issue));
  }

  void type_error(const YAML::Node& node, const std::string& expected, const std::string& path,
                  const YAML::Mark& mark) {
    add(mark, path, "expected " + expected + ", got " + actual(node));
  }

  bool check_integer(const YAML::Node& node, const Schema& schema, const std::string& path,
                     const YAML::Mark& mark) {
    const std::optional<std::int64_t> v = node.IsScalar() ? as_integer(node) : std::nullopt;
    if (!v) {
      type_error(node, "integer", path, mark);
      return false;
    }
    if (*v < schema.int_min()) {
      add(mark, path,
          std::to_string(*v) + " is below the minimum " + std::to_string(schema.int_min()));
      return false;
    }
    if (*v > schema.int_max()) {
      add(mark, path,
          std::to_string(*v) + " is above the maximum " + std::to_string(schema.int_max()));
      return false;
    }
    return true;
  }

  bool check_number(const YAML::Node& node, const Schema& schema, const std::string& path,
                    const YAML::Mark& mark) {
    const std::optional<double> v = node.IsScalar() ? as_number(node) : std::nullopt;
    if (!v) {
      type_error(node, "number", path, mark);
      return false;
    }
    if (std::isnan(*v)) {
      add(mark, path, "NaN is not allowed");
      return false;
    }
    if (*v < schema.num_min()) {
      add(mark, path, node.Scalar() + " is below the minimum " + format_number(schema.num_min()));
      return false;
    }
    if (*v > schema.num_max()) {
      add(mark, path, node.Scalar() + " is above the maximum " + format_number(schema.num_max()));
      return false;
    }
    return true;
  }

  bool check_enum(const YAML::Node& node, const Schema& schema, const std::string& path,
                  const YAML::Mark& mark) {
    std::string allowed;
    for (const std::string& a : schema.allowed()) allowed += (allowed.empty() ? "" : ", ") + a;
    if (!node.IsScalar()) {
      add(mark, path, "expected one of: " + allowed + "; got " + actual(node));
      return false;
    }
    const std::string& value = node.Scalar();
    for (const std::string& a : schema.allowed()) {
      if (a == value) return true;
    }
    std::string message = shown(value) + " is not one of: " + allowed;
    const std::string guess = closest_match(value, schema.allowed());
    if (!guess.empty()) message += " (did you mean '" + guess + "'?)";
    add(mark, path, message);
    return false;
  }

  bool check_bytes(const YAML::Node& node, const Schema& schema, const std::string& path,
                   const YAML::Mark& mark) {
    if (!node.IsScalar()) {
      type_error(node, "byte size (e.g. 512MiB)", path, mark);
      return false;
    }
    std::uint64_t v = 0;
    try {
      v = parse_bytes(node.Scalar());
    } catch (const std::invalid_argument& e) {
      add(mark, path, e.what());
      return false;
    }
    if (v < schema.bytes_min()) {
      add(mark, path, node.Scalar() + " is below the minimum " + format_bytes(schema.bytes_min()));
      return false;
    }
    if (v > schema.bytes_max()) {
      add(mark, path, node.Scalar() + " is above the maximum " + format_bytes(schema.bytes_max()));
      return false;
    }
    return true;
  }

  bool check_list(const YAML::Node& node, const Schema& schema, const std::string& path,
                  const YAML::Mark& mark) {
    if (!node.IsSequence()) {
      type_error(node, "list of " + schema.item()->type_name(), path, mark);
      return false;
    }
    bool ok = true;
    if (node.size() < schema.min_size()) {
      add(mark, path,
          "list has " + std::to_string(node.size()) + " item(s), needs at least " +
              std::to_string(schema.min_size()));
      ok = false;
    }
    const std::size_t before = issues_.size();
    for (std::size_t i = 0; i < node.size(); ++i) {
      walk(node[i], *schema.item(), path + "[" + std::to_string(i) + "]", mark);
    }
    return ok && issues_.size() == before;
  }

  // Keys of a map node, reporting non-scalar and duplicate keys. Returns false when the node is
  // not a map.
  bool map_entries(const YAML::Node& node, const std::string& path, const YAML::Mark& mark,
                   const std::string& expected,
                   std::vector<std::pair<YAML::Node, YAML::Node>>* entries) {
    if (!node.IsMap()) {
      if (path.empty() && node.IsNull()) {
        add(mark, path, "the document is empty; expected " + expected);
      } else {
        type_error(node, expected, path, mark);
      }
      return false;
    }
    std::map<std::string, YAML::Mark> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      if (!key.IsScalar()) {
        add(position(key, mark), path, "map keys must be plain strings, got " + actual(key));
        continue;
      }
      const auto [where, inserted] = seen.emplace(key.Scalar(), key.Mark());
      if (!inserted) {
        const std::string child = path.empty() ? key.Scalar() : path + "." + key.Scalar();
        add(key.Mark(), child,
            "duplicate key '" + key.Scalar() + "' (first at line " +
                std::to_string(where->second.line + 1) + ")");
        continue;
      }
      entries->emplace_back(key, it->second);
    }
    return true;
  }

  bool check_map(const YAML::Node& node, const Schema& schema, const std::string& path,
                 const YAML::Mark& mark) {
    std::vector<std::pair<YAML::Node, YAML::Node>> entries;
    if (!map_entries(node, path, mark, "map", &entries)) return false;
    std::vector<std::string> known;
    for (const Schema::Field& f : schema.fields()) known.push_back(f.key);
    const std::size_t before = issues_.size();
    std::map<std::string, bool> present;
    for (const auto& [key, value] : entries) {
      const std::string& name = key.Scalar();
      const std::string child = path.empty() ? name : path + "." + name;
      const Schema::Field* field = schema.field(name);
      if (field == nullptr) {
        std::string message = "unknown key '" + name + "'";
        const std::string guess = closest_match(name, known);
        if (!guess.empty()) {
          message += " (did you mean '" + guess + "'?)";
        } else if (!known.empty()) {
          std::string list;
          for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
          message += "; known keys: " + list;
        }
        add(key.Mark(), child, message);
        continue;
      }
      present[name] = true;
      walk(value, *field->schema, child, key.Mark());
    }
    for (const Schema::Field& f : schema.fields()) {
      if (f.required && !present.count(f.key)) {
        add(mark, path.empty() ? f.key : path + "." + f.key,
            "missing required key '" + f.key + "'");
      }
    }
    return issues_.size() == before;
  }

  bool check_dict(const YAML::Node& node, const Schema& schema, const std::string& path,
                  const YAML::Mark& mark) {
    std::vector<std::pair<YAML::Node, YAML::Node>> entries;
    if (!map_entries(node, path, mark, "map of " + schema.item()->type_name(), &entries)) {
      return false;
    }
    const std::size_t before = issues_.size();
    for (const auto& [key, value] : entries) {
      const std::string child = path.empty() ? key.Scalar() : path + "." + key.Scalar();
      walk(value, *schema.item(), child, key.Mark());
    }
    return issues_.size() == before;
  }

  const std::string& file_;
  std::vector<Issue> issues_;
};

Issue file_issue(const std::string& file, std::string message) {
  Issue issue;
  issue.file = file;
  issue.message = std::move(message);
  return issue;
}

}  // namespace

std::vector<Issue> validate(const YAML::Node& node, const Schema& schema, const std::string& file) {
  Validator v(file);
  YAML::Mark start = YAML::Mark::null_mark();
  if (node.IsDefined() && !node.Mark().is_null()) start = node.Mark();
  v.walk(node, schema, "", start);
  return v.take();
}

YAML::Node load_string(std::string_view text, const Schema& schema, const std::string& name) {
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(std::string(text));
  } catch (const YAML::ParserException& e) {
    Issue issue = file_issue(name, "invalid YAML: " + e.msg);
    if (!e.mark.is_null()) {
      issue.line = e.mark.line + 1;
      issue.column = e.mark.column + 1;
    }
    throw ConfigError({std::move(issue)});
  } catch (const YAML::Exception& e) {
    throw ConfigError({file_issue(name, std::string("invalid YAML: ") + e.what())});
  }
  if (documents.size() > 1) {
    Issue issue = file_issue(name, "expected one YAML document, found " +
                                       std::to_string(documents.size()) + " (separated by ---)");
    const YAML::Mark m = documents[1].Mark();
    if (!m.is_null()) {
      issue.line = m.line + 1;
      issue.column = m.column + 1;
    }
    throw ConfigError({std::move(issue)});
  }
  YAML::Node root = documents.empty() ? YAML::Node(YAML::NodeType::Null) : documents.front();
  std::vector<Issue> issues = validate(root, schema, name);
  if (!issues.empty()) throw ConfigError(std::move(issues));
  return root;
}

YAML::Node load_file(const std::filesystem::path& file, const Schema& schema) {
  const std::string name = file.string();
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) {
    throw ConfigError({file_issue(name, "cannot read: no such file")});
  }
  if (std::filesystem::is_directory(file, ec)) {
    throw ConfigError({file_issue(name, "cannot read: it is a directory")});
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw ConfigError({file_issue(name, std::string("cannot read: ") + std::strerror(errno))});
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    throw ConfigError({file_issue(name, std::string("cannot read: ") + std::strerror(errno))});
  }
  return load_string(text.str(), schema, name);
}

}  // namespace neat::config
