// Schema construction, its markdown description, Issue formatting and typo suggestions.
#include "neat/config/schema.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "neat/config/bytes.hpp"

namespace neat::config {
namespace {

std::string format_double(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  // Shortest text that reads back to the same value.
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// Table cells must not break the markdown row.
std::string cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
// adjacent characters each cost 1, so "endpiont" is one step from "endpoint".
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

void describe_rows(const Schema& s, const std::string& path, const std::string& required,
                   const std::string& doc, std::ostringstream& out) {
  if (!path.empty()) {
    const std::string& text = doc.empty() ? s.doc_text() : doc;
    out << "| `" << cell(path) << "` | " << cell(s.type_name()) << " | " << cell(s.constraint())
        << " | " << required << " | ";
    if (!s.default_text().empty()) out << "`" << cell(s.default_text()) << "`";
    out << " | " << cell(text) << " |\n";
  }
  switch (s.kind()) {
    case Kind::kMap:
      for (const Schema::Field& f : s.fields()) {
        const std::string child = path.empty() ? f.key : path + "." + f.key;
        describe_rows(*f.schema, child, f.required ? "yes" : "no", f.doc, out);
      }
      break;
    case Kind::kList:
      if (s.item()->kind() == Kind::kMap || s.item()->kind() == Kind::kDict ||
          s.item()->kind() == Kind::kList) {
        describe_rows(*s.item(), path + "[]", "-", "", out);
      }
      break;
    case Kind::kDict:
      describe_rows(*s.item(), (path.empty() ? "" : path + ".") + "<key>", "-", "", out);
      break;
    default:
      break;
  }
}

}  // namespace

Schema Schema::string() { return Schema(Kind::kString); }
Schema Schema::boolean() { return Schema(Kind::kBoolean); }

Schema Schema::integer(std::int64_t min, std::int64_t max) {
  if (min > max) throw std::logic_error("Schema::integer: min > max");
  Schema s(Kind::kInteger);
  s.int_min_ = min;
  s.int_max_ = max;
  return s;
}

Schema Schema::number(double min, double max) {
  if (std::isnan(min) || std::isnan(max) || min > max) {
    throw std::logic_error("Schema::number: min > max or NaN bound");
  }
  Schema s(Kind::kNumber);
  s.num_min_ = min;
  s.num_max_ = max;
  return s;
}

Schema Schema::one_of(std::vector<std::string> allowed) {
  if (allowed.empty()) throw std::logic_error("Schema::one_of: no allowed value");
  Schema s(Kind::kEnum);
  s.allowed_ = std::move(allowed);
  return s;
}

Schema Schema::list(Schema item, std::size_t min_size) {
  Schema s(Kind::kList);
  s.item_ = std::make_shared<const Schema>(std::move(item));
  s.min_size_ = min_size;
  return s;
}

Schema Schema::map() { return Schema(Kind::kMap); }

Schema Schema::dict(Schema value) {
  Schema s(Kind::kDict);
  s.item_ = std::make_shared<const Schema>(std::move(value));
  return s;
}

Schema Schema::bytes(std::uint64_t min, std::uint64_t max) {
  if (min > max) throw std::logic_error("Schema::bytes: min > max");
  Schema s(Kind::kBytes);
  s.bytes_min_ = min;
  s.bytes_max_ = max;
  return s;
}

Schema Schema::any() { return Schema(Kind::kAny); }

Schema& Schema::add_field(std::string key, Schema s, std::string doc, bool required) {
  if (kind_ != Kind::kMap) {
    throw std::logic_error("Schema: keys can only be declared on Schema::map() ('" + key + "')");
  }
  if (field(key) != nullptr) throw std::logic_error("Schema: key '" + key + "' declared twice");
  fields_.push_back(Field{std::move(key), std::make_shared<const Schema>(std::move(s)), required,
                          std::move(doc)});
  return *this;
}

Schema& Schema::required(std::string key, Schema s, std::string doc) {
  return add_field(std::move(key), std::move(s), std::move(doc), true);
}

Schema& Schema::optional(std::string key, Schema s, std::string doc) {
  return add_field(std::move(key), std::move(s), std::move(doc), false);
}

Schema& Schema::doc(std::string text) {
  doc_ = std::move(text);
  return *this;
}

Schema& Schema::default_value(std::string text) {
  default_ = std::move(text);
  return *this;
}

Schema& Schema::check(Check fn) {
  checks_.push_back(std::move(fn));
  return *this;
}

const Schema::Field* Schema::field(std::string_view key) const {
  for (const Field& f : fields_) {
    if (f.key == key) return &f;
  }
  return nullptr;
}

std::string Schema::type_name() const {
  switch (kind_) {
    case Kind::kString:
      return "string";
    case Kind::kBoolean:
      return "boolean";
    case Kind::kInteger:
      return "integer";
    case Kind::kNumber:
      return "number";
    case Kind::kEnum:
      return "enum";
    case Kind::kList:
      return "list of " + item_->type_name();
    case Kind::kMap:
      return "map";
    case Kind::kDict:
      return "map of " + item_->type_name();
    case Kind::kBytes:
      return "byte size";
    case Kind::kAny:
      return "any";
  }
  return "?";
}

std::string Schema::constraint() const {
  constexpr auto kIntMin = std::numeric_limits<std::int64_t>::min();
  constexpr auto kIntMax = std::numeric_limits<std::int64_t>::max();
  switch (kind_) {
    case Kind::kInteger:
      if (int_min_ == kIntMin && int_max_ == kIntMax) return "";
      if (int_max_ == kIntMax) return ">= " + std::to_string(int_min_);
      if (int_min_ == kIntMin) return "<= " + std::to_string(int_max_);
      return std::to_string(int_min_) + " .. " + std::to_string(int_max_);
    case Kind::kNumber:
      if (std::isinf(num_min_) && std::isinf(num_max_)) return "";
      if (std::isinf(num_max_)) return ">= " + format_double(num_min_);
      if (std::isinf(num_min_)) return "<= " + format_double(num_max_);
      return format_double(num_min_) + " .. " + format_double(num_max_);
    case Kind::kEnum:
      return join(allowed_, " | ");
    case Kind::kList:
      return min_size_ > 0 ? "at least " + std::to_string(min_size_) + " item(s)" : "";
    case Kind::kBytes:
      if (bytes_min_ == 0 && bytes_max_ == std::numeric_limits<std::uint64_t>::max()) {
        return "e.g. 512MiB, 4GiB";
      }
      if (bytes_max_ == std::numeric_limits<std::uint64_t>::max()) {
        return ">= " + format_bytes(bytes_min_);
      }
      return format_bytes(bytes_min_) + " .. " + format_bytes(bytes_max_);
    default:
      return "";
  }
}

std::string Schema::describe() const {
  std::ostringstream out;
  if (!doc_.empty()) out << doc_ << "\n\n";
  out << "| key | type | allowed | required | default | description |\n";
  out << "|---|---|---|---|---|---|\n";
  describe_rows(*this, "", "", "", out);
  return out.str();
}

std::string Issue::str() const {
  std::string out = file;
  if (line > 0) {
    out += ':';
    out += std::to_string(line);
    if (column > 0) {
      out += ':';
      out += std::to_string(column);
    }
  }
  out += ": ";
  if (!path.empty()) out += path + ": ";
  out += message;
  return out;
}

std::string format_issues(const std::vector<Issue>& issues) {
  std::string out;
  for (std::size_t i = 0; i < issues.size(); ++i) {
    if (i) out += '\n';
    out += issues[i].str();
  }
  return out;
}

ConfigError::ConfigError(std::vector<Issue> issues)
    : std::runtime_error(format_issues(issues)), issues_(std::move(issues)) {}

std::string closest_match(std::string_view word, const std::vector<std::string>& candidates) {
  const std::size_t limit = std::min<std::size_t>(3, std::max<std::size_t>(1, word.size() / 3));
  std::string best;
  std::size_t best_distance = limit + 1;
  for (const std::string& c : candidates) {
    const std::size_t d = edit_distance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += sep;
    out += items[i];
  }
  return out;
}

}  // namespace neat::config
