// corpus.cpp: file discovery, budget selection, document cutting, splitting, the on-disk
// format (bytes files, indexes, manifest.json) and its validation.
//
// Determinism: every listing is sorted (paths byte-wise, files by SHA-256), nothing depends
// on time, the output directory's name or the order the file system returns entries in.
#include "neat/data/corpus.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <regex>
#include <set>
#include <sstream>
#include <system_error>
#include <unordered_set>

namespace neat::data {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kManifestFormat = "neat.corpus.manifest";
constexpr std::string_view kIndexFormat = "neat.corpus.index";
constexpr int kFormatVersion = 1;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CorpusError("cannot read " + path.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw CorpusError("cannot read " + path.string());
  return bytes;
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw CorpusError("cannot write " + path.string());
}

bool ends_with_any(const std::string& name, const std::vector<std::string>& suffixes) {
  return std::any_of(suffixes.begin(), suffixes.end(),
                     [&](const std::string& s) { return name.ends_with(s); });
}

std::string install_hint(const DomainSource& source) {
  return "package " + source.package + " is not installed? run scripts/install-deps";
}

// The paths named by the package's dpkg file list.
std::unordered_set<std::string> dpkg_files(const DomainSource& source) {
  const fs::path& dir = *source.dpkg_info_dir;
  fs::path list = dir / (source.package + ".list");
  if (!fs::exists(list)) {
    // Multi-arch packages are listed as <package>:<arch>.list.
    std::vector<fs::path> arch_lists;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.starts_with(source.package + ":") && name.ends_with(".list")) {
        arch_lists.push_back(entry.path());
      }
    }
    std::sort(arch_lists.begin(), arch_lists.end());
    if (arch_lists.empty()) {
      throw CorpusError("domain '" + source.domain + "': no dpkg file list " + list.string() +
                        "; " + install_hint(source));
    }
    list = arch_lists.front();
  }
  std::unordered_set<std::string> files;
  std::istringstream lines(read_file(list));
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) files.insert(line);
  }
  return files;
}

struct SourceFile {
  fs::path path;
  std::uint64_t size = 0;
  std::string sha256;
};

void walk(const DomainSource& source, const fs::path& dir, int depth,
          const std::unordered_set<std::string>* listed, std::vector<SourceFile>& out) {
  std::vector<fs::directory_entry> entries;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) entries.push_back(entry);
  if (ec) throw CorpusError("domain '" + source.domain + "': cannot list " + dir.string());
  std::sort(entries.begin(), entries.end(),
            [](const auto& a, const auto& b) { return a.path().string() < b.path().string(); });
  for (const auto& entry : entries) {
    const auto status = entry.symlink_status();
    const std::string name = entry.path().filename().string();
    if (fs::is_directory(status)) {
      if (depth < source.max_depth &&
          std::find(source.skip_directories.begin(), source.skip_directories.end(), name) ==
              source.skip_directories.end()) {
        walk(source, entry.path(), depth + 1, listed, out);
      }
      continue;
    }
    // Symlinks are skipped: their targets are either listed themselves or outside the domain.
    if (!fs::is_regular_file(status)) continue;
    if (!source.extensions.empty() && !ends_with_any(name, source.extensions)) continue;
    if (ends_with_any(name, source.skip_suffixes)) continue;
    if (listed != nullptr && !listed->contains(entry.path().string())) continue;
    const auto size = entry.file_size(ec);
    if (ec || size == 0) continue;
    out.push_back({entry.path(), size, {}});
  }
}

void check_options(const PrepareOptions& options) {
  if (options.max_document_bytes == 0) throw CorpusError("max_document_bytes must be > 0");
  if (options.min_document_bytes > options.max_document_bytes) {
    throw CorpusError("min_document_bytes (" + std::to_string(options.min_document_bytes) +
                      ") must be <= max_document_bytes (" +
                      std::to_string(options.max_document_bytes) + ")");
  }
  const double t = options.train_fraction, v = options.val_fraction;
  if (!(t >= 0.0 && v >= 0.0 && t + v <= 1.0)) {
    throw CorpusError("split fractions need train >= 0, val >= 0, train + val <= 1");
  }
  if (options.sources.empty()) throw CorpusError("no domain sources given");
  static const std::regex kName("[a-z0-9_-]+");
  std::set<std::string> names;
  for (const auto& s : options.sources) {
    if (!std::regex_match(s.domain, kName)) {
      throw CorpusError("domain name '" + s.domain + "' must match [a-z0-9_-]+");
    }
    if (!names.insert(s.domain).second) throw CorpusError("domain '" + s.domain + "' twice");
    if (s.roots.empty()) throw CorpusError("domain '" + s.domain + "' has no source root");
  }
}

std::string split_file(const std::string& domain, Split split, std::string_view suffix) {
  return domain + "." + std::string(split_name(split)) + std::string(suffix);
}

json to_json(const SplitTotals& t) { return {{"documents", t.documents}, {"bytes", t.bytes}}; }

json manifest_json(const Manifest& m) {
  json j;
  j["format"] = kManifestFormat;
  j["version"] = kFormatVersion;
  j["options"] = {{"max_document_bytes", m.max_document_bytes},
                  {"min_document_bytes", m.min_document_bytes},
                  {"train_fraction", m.train_fraction},
                  {"val_fraction", m.val_fraction}};
  j["domains"] = json::array();
  for (const auto& d : m.domains) {
    json splits = json::object();
    for (const auto& [split, files] : d.splits) {
      splits[std::string(split_name(split))] = {{"bytes_file", files.bytes_file},
                                                {"index_file", files.index_file},
                                                {"sha256", files.sha256},
                                                {"documents", files.totals.documents},
                                                {"bytes", files.totals.bytes}};
    }
    j["domains"].push_back({{"name", d.name},
                            {"package", d.package},
                            {"roots", d.roots},
                            {"byte_budget", d.byte_budget},
                            {"files_found", d.files_found},
                            {"bytes_found", d.bytes_found},
                            {"files_selected", d.files_selected},
                            {"bytes_selected", d.bytes_selected},
                            {"duplicates_skipped", d.duplicates_skipped},
                            {"splits", splits}});
  }
  j["splits"] = json::object();
  for (const auto& [split, totals] : m.split_totals) {
    j["splits"][std::string(split_name(split))] = to_json(totals);
  }
  j["documents"] = json::array();
  for (const auto& doc : m.documents) {
    j["documents"].push_back({{"domain", doc.domain},
                              {"split", split_name(doc.split)},
                              {"source", doc.source},
                              {"source_offset", doc.source_offset},
                              {"size", doc.size},
                              {"offset", doc.offset},
                              {"sha256", doc.sha256}});
  }
  return j;
}

// Typed access to manifest fields; every failure names the file and the field's path.
class FieldReader {
 public:
  explicit FieldReader(fs::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw CorpusError("manifest " + file_.string() + ": field '" + field + "': " + what);
  }
  const json& get(const json& object, const std::string& parent, const std::string& key) const {
    const std::string field = parent.empty() ? key : parent + "." + key;
    if (!object.is_object()) fail(parent, "expected an object");
    const auto it = object.find(key);
    if (it == object.end()) fail(field, "missing");
    return *it;
  }
  std::uint64_t u64(const json& object, const std::string& parent, const std::string& key) const {
    const json& v = get(object, parent, key);
    if (!v.is_number_unsigned()) fail(join(parent, key), "expected an unsigned integer");
    return v.get<std::uint64_t>();
  }
  double number(const json& object, const std::string& parent, const std::string& key) const {
    const json& v = get(object, parent, key);
    if (!v.is_number()) fail(join(parent, key), "expected a number");
    return v.get<double>();
  }
  std::string string(const json& object, const std::string& parent, const std::string& key) const {
    const json& v = get(object, parent, key);
    if (!v.is_string()) fail(join(parent, key), "expected a string");
    return v.get<std::string>();
  }
  std::string sha256(const json& object, const std::string& parent, const std::string& key) const {
    std::string s = string(object, parent, key);
    static const std::regex kHex("[0-9a-f]{64}");
    if (!std::regex_match(s, kHex)) {
      fail(join(parent, key), "expected 64 lowercase hex digits, got '" + s + "'");
    }
    return s;
  }
  const json& array(const json& object, const std::string& parent, const std::string& key) const {
    const json& v = get(object, parent, key);
    if (!v.is_array()) fail(join(parent, key), "expected an array");
    return v;
  }
  static std::string join(const std::string& parent, const std::string& key) {
    return parent.empty() ? key : parent + "." + key;
  }

 private:
  fs::path file_;
};

}  // namespace

std::string_view split_name(Split split) {
  switch (split) {
    case Split::kTrain:
      return "train";
    case Split::kVal:
      return "val";
    case Split::kTest:
      return "test";
  }
  return "unknown";
}

Split parse_split(std::string_view name) {
  for (Split s : kSplits) {
    if (split_name(s) == name) return s;
  }
  throw CorpusError("unknown split '" + std::string(name) + "' (expected train, val or test)");
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    throw CorpusError("SHA-256 failed (OpenSSL EVP_Digest)");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

std::vector<DomainSource> default_sources(const fs::path& dpkg_info_dir,
                                          std::uint64_t code_budget_bytes) {
  const fs::path fortunes = "/usr/share/games/fortunes";
  const std::vector<std::string> fortune_skips{".dat", ".u8"};
  std::vector<DomainSource> sources;
  auto fortune = [&](std::string domain, std::string package, fs::path root) {
    DomainSource s;
    s.domain = std::move(domain);
    s.package = std::move(package);
    s.roots = {std::move(root)};
    s.max_depth = 0;  // es/off (offensive) and it/ beside the English files stay out
    s.skip_suffixes = fortune_skips;
    s.dpkg_info_dir = dpkg_info_dir;
    sources.push_back(std::move(s));
  };
  fortune("en", "fortunes", fortunes);
  fortune("de", "fortunes-de", fortunes / "de");
  fortune("it", "fortunes-it", fortunes / "it");
  fortune("es", "fortunes-es", fortunes / "es");

  DomainSource c;
  c.domain = "c";
  c.package = "libc6-dev";
  c.roots = {"/usr/include"};
  c.max_depth = 64;
  c.extensions = {".h"};
  c.byte_budget = code_budget_bytes;
  sources.push_back(std::move(c));

  DomainSource py;
  py.domain = "python";
  py.package = "libpython3-stdlib";
  std::vector<fs::path> roots;
  static const std::regex kPythonDir("python3\\.[0-9]+");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib", ec)) {
    if (entry.is_directory() && std::regex_match(entry.path().filename().string(), kPythonDir)) {
      roots.push_back(entry.path());
    }
  }
  std::sort(roots.begin(), roots.end());
  if (roots.empty()) roots.push_back("/usr/lib/python3");  // reported missing by prepare
  py.roots = roots;
  py.max_depth = 1;
  py.extensions = {".py"};
  py.skip_directories = {"test",        "tests",         "idle_test",
                         "__pycache__", "site-packages", "dist-packages"};
  py.byte_budget = code_budget_bytes;
  sources.push_back(std::move(py));
  return sources;
}

const DomainRecord& Manifest::domain(std::string_view name) const {
  std::string known;
  for (const auto& d : domains) {
    if (d.name == name) return d;
    known += (known.empty() ? "" : ", ") + d.name;
  }
  throw CorpusError("unknown domain '" + std::string(name) + "' (manifest has: " + known + ")");
}

std::vector<DocumentSpan> cut_documents(std::string_view text, std::uint64_t max_document_bytes,
                                        std::uint64_t min_document_bytes) {
  if (max_document_bytes == 0) throw CorpusError("max_document_bytes must be > 0");
  if (min_document_bytes > max_document_bytes) {
    throw CorpusError("min_document_bytes must be <= max_document_bytes");
  }
  std::vector<DocumentSpan> spans;
  const std::uint64_t n = text.size();
  std::uint64_t start = 0;
  while (n - start > max_document_bytes) {
    const std::uint64_t lowest = start + std::max<std::uint64_t>(min_document_bytes, 1);
    const std::uint64_t limit = start + max_document_bytes;
    std::uint64_t after_percent = 0, after_blank = 0, after_line = 0;
    std::uint64_t line_start = start;
    for (std::uint64_t i = start; i < limit; ++i) {
      if (text[i] != '\n') continue;
      const std::uint64_t cut = i + 1;  // the next line starts here
      std::string_view line = text.substr(line_start, i - line_start);
      if (line.ends_with('\r')) line.remove_suffix(1);
      if (cut >= lowest) {
        after_line = cut;
        if (line == "%") after_percent = cut;
        if (line.empty()) after_blank = cut;
      }
      line_start = cut;
    }
    const std::uint64_t cut = after_percent ? after_percent
                              : after_blank ? after_blank
                              : after_line  ? after_line
                                            : limit;
    spans.push_back({start, cut - start});
    start = cut;
  }
  if (n > start) spans.push_back({start, n - start});
  return spans;
}

Split assign_split(std::string_view bytes, double train_fraction, double val_fraction) {
  std::string salted = "neat.split.v1\n";
  salted.append(bytes);
  const std::string hex = sha256_hex(salted);
  const std::uint64_t h = std::stoull(hex.substr(0, 16), nullptr, 16);
  const double u = static_cast<double>(h >> 11) * 0x1.0p-53;  // in [0, 1)
  if (u < train_fraction) return Split::kTrain;
  if (u < train_fraction + val_fraction) return Split::kVal;
  return Split::kTest;
}

Manifest prepare_corpus(const PrepareOptions& options) {
  check_options(options);
  std::error_code ec;
  fs::create_directories(options.output_dir, ec);
  if (ec) {
    throw CorpusError("cannot create output directory " + options.output_dir.string() + ": " +
                      ec.message());
  }
  Manifest manifest;
  manifest.directory = options.output_dir;
  manifest.max_document_bytes = options.max_document_bytes;
  manifest.min_document_bytes = options.min_document_bytes;
  manifest.train_fraction = options.train_fraction;
  manifest.val_fraction = options.val_fraction;
  for (Split s : kSplits) manifest.split_totals[s] = {};

  for (const DomainSource& source : options.sources) {
    DomainRecord record;
    record.name = source.domain;
    record.package = source.package;
    record.byte_budget = source.byte_budget;
    for (const auto& r : source.roots) record.roots.push_back(r.string());

    std::unordered_set<std::string> listed;
    if (source.dpkg_info_dir) listed = dpkg_files(source);
    std::vector<SourceFile> files;
    for (const auto& root : source.roots) {
      if (!fs::is_directory(root)) {
        throw CorpusError("domain '" + source.domain + "': source directory " + root.string() +
                          " does not exist; " + install_hint(source));
      }
      walk(source, root, 0, source.dpkg_info_dir ? &listed : nullptr, files);
    }
    if (files.empty()) {
      throw CorpusError("domain '" + source.domain + "': no source file found under " +
                        record.roots.front() + "; " + install_hint(source));
    }
    record.files_found = files.size();
    for (auto& f : files) {
      record.bytes_found += f.size;
      f.sha256 = sha256_hex(read_file(f.path));
    }

    // Budget: whole distinct files in SHA-256 order, each taken if it still fits.
    std::vector<const SourceFile*> by_hash;
    for (const auto& f : files) by_hash.push_back(&f);
    std::sort(by_hash.begin(), by_hash.end(), [](const SourceFile* a, const SourceFile* b) {
      return a->sha256 != b->sha256 ? a->sha256 < b->sha256 : a->path < b->path;
    });
    std::vector<const SourceFile*> selected;
    std::unordered_set<std::string> seen;
    for (const SourceFile* f : by_hash) {
      if (!seen.insert(f->sha256).second) {
        ++record.duplicates_skipped;
        continue;
      }
      if (source.byte_budget != 0 && record.bytes_selected + f->size > source.byte_budget) continue;
      selected.push_back(f);
      record.bytes_selected += f->size;
    }
    record.files_selected = selected.size();
    std::sort(selected.begin(), selected.end(),
              [](const SourceFile* a, const SourceFile* b) { return a->path < b->path; });

    std::map<Split, std::string> bytes;
    std::map<Split, std::vector<DocumentRecord>> docs;
    std::unordered_set<std::string> seen_documents;
    for (const SourceFile* f : selected) {
      const std::string text = read_file(f->path);
      if (sha256_hex(text) != f->sha256) {
        throw CorpusError("domain '" + source.domain + "': " + f->path.string() +
                          " changed during preparation");
      }
      for (const DocumentSpan& span :
           cut_documents(text, options.max_document_bytes, options.min_document_bytes)) {
        const std::string_view content = std::string_view(text).substr(span.offset, span.size);
        DocumentRecord doc;
        doc.sha256 = sha256_hex(content);
        if (!seen_documents.insert(doc.sha256).second) {
          ++record.duplicates_skipped;
          continue;
        }
        doc.domain = source.domain;
        doc.split = assign_split(content, options.train_fraction, options.val_fraction);
        doc.source = f->path.string();
        doc.source_offset = span.offset;
        doc.size = span.size;
        doc.offset = bytes[doc.split].size();
        bytes[doc.split].append(content);
        docs[doc.split].push_back(std::move(doc));
      }
    }

    for (Split split : kSplits) {
      SplitFiles files_out;
      files_out.bytes_file = split_file(source.domain, split, ".bin");
      files_out.index_file = split_file(source.domain, split, ".index.json");
      const std::string& content = bytes[split];
      files_out.sha256 = sha256_hex(content);
      files_out.totals = {docs[split].size(), content.size()};
      write_file(options.output_dir / files_out.bytes_file, content);

      json index = {{"format", kIndexFormat},
                    {"version", kFormatVersion},
                    {"domain", source.domain},
                    {"split", split_name(split)},
                    {"bytes_file", files_out.bytes_file},
                    {"bytes_sha256", files_out.sha256},
                    {"documents", json::array()}};
      for (const auto& doc : docs[split]) {
        index["documents"].push_back({{"offset", doc.offset},
                                      {"size", doc.size},
                                      {"source", doc.source},
                                      {"source_offset", doc.source_offset},
                                      {"sha256", doc.sha256}});
        manifest.documents.push_back(doc);
      }
      write_file(options.output_dir / files_out.index_file, index.dump(1) + "\n");
      manifest.split_totals[split].documents += files_out.totals.documents;
      manifest.split_totals[split].bytes += files_out.totals.bytes;
      record.splits[split] = std::move(files_out);
    }
    manifest.domains.push_back(std::move(record));
  }

  json j = manifest_json(manifest);
  manifest.manifest_sha256 = sha256_hex(j.dump());
  j["manifest_sha256"] = manifest.manifest_sha256;
  write_file(options.output_dir / "manifest.json", j.dump(1) + "\n");
  return manifest;
}

Manifest load_manifest(const fs::path& path) {
  const fs::path file = fs::is_directory(path) ? path / "manifest.json" : path;
  if (!fs::exists(file)) throw CorpusError("manifest " + file.string() + " does not exist");
  const FieldReader r(file);
  json j;
  try {
    j = json::parse(read_file(file));
  } catch (const json::parse_error& e) {
    throw CorpusError("manifest " + file.string() + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) r.fail("", "expected a JSON object at top level");
  if (r.string(j, "", "format") != kManifestFormat) {
    r.fail("format", "expected '" + std::string(kManifestFormat) + "'");
  }
  if (r.u64(j, "", "version") != kFormatVersion) {
    r.fail("version",
           "unsupported (this build reads version " + std::to_string(kFormatVersion) + ")");
  }
  Manifest m;
  m.directory = file.parent_path();
  const json& opts = r.get(j, "", "options");
  m.max_document_bytes = r.u64(opts, "options", "max_document_bytes");
  m.min_document_bytes = r.u64(opts, "options", "min_document_bytes");
  m.train_fraction = r.number(opts, "options", "train_fraction");
  m.val_fraction = r.number(opts, "options", "val_fraction");

  const json& domains = r.array(j, "", "domains");
  for (std::size_t i = 0; i < domains.size(); ++i) {
    const std::string at = "domains[" + std::to_string(i) + "]";
    const json& d = domains[i];
    DomainRecord rec;
    rec.name = r.string(d, at, "name");
    rec.package = r.string(d, at, "package");
    const json& roots = r.array(d, at, "roots");
    for (std::size_t k = 0; k < roots.size(); ++k) {
      if (!roots[k].is_string())
        r.fail(at + ".roots[" + std::to_string(k) + "]", "expected a string");
      rec.roots.push_back(roots[k].get<std::string>());
    }
    rec.byte_budget = r.u64(d, at, "byte_budget");
    rec.files_found = r.u64(d, at, "files_found");
    rec.bytes_found = r.u64(d, at, "bytes_found");
    rec.files_selected = r.u64(d, at, "files_selected");
    rec.bytes_selected = r.u64(d, at, "bytes_selected");
    rec.duplicates_skipped = r.u64(d, at, "duplicates_skipped");
    const json& splits = r.get(d, at, "splits");
    for (Split s : kSplits) {
      const std::string sat = at + ".splits." + std::string(split_name(s));
      const json& sj = r.get(splits, at + ".splits", std::string(split_name(s)));
      SplitFiles f;
      f.bytes_file = r.string(sj, sat, "bytes_file");
      f.index_file = r.string(sj, sat, "index_file");
      for (const std::string* name : {&f.bytes_file, &f.index_file}) {
        if (name->empty() || name->find('/') != std::string::npos || *name == "..") {
          r.fail(sat, "file name '" + *name + "' must be a plain name in the manifest's directory");
        }
      }
      f.sha256 = r.sha256(sj, sat, "sha256");
      f.totals.documents = r.u64(sj, sat, "documents");
      f.totals.bytes = r.u64(sj, sat, "bytes");
      rec.splits[s] = f;
    }
    for (const auto& other : m.domains) {
      if (other.name == rec.name) r.fail(at + ".name", "domain '" + rec.name + "' twice");
    }
    m.domains.push_back(std::move(rec));
  }

  const json& split_totals = r.get(j, "", "splits");
  for (Split s : kSplits) {
    const std::string name(split_name(s));
    const json& t = r.get(split_totals, "splits", name);
    m.split_totals[s] = {r.u64(t, "splits." + name, "documents"),
                         r.u64(t, "splits." + name, "bytes")};
  }

  const json& documents = r.array(j, "", "documents");
  std::map<std::pair<std::string, Split>, SplitTotals> seen;
  for (std::size_t i = 0; i < documents.size(); ++i) {
    const std::string at = "documents[" + std::to_string(i) + "]";
    const json& d = documents[i];
    DocumentRecord doc;
    doc.domain = r.string(d, at, "domain");
    try {
      doc.split = parse_split(r.string(d, at, "split"));
    } catch (const CorpusError& e) {
      r.fail(at + ".split", e.what());
    }
    doc.source = r.string(d, at, "source");
    doc.source_offset = r.u64(d, at, "source_offset");
    doc.size = r.u64(d, at, "size");
    doc.offset = r.u64(d, at, "offset");
    doc.sha256 = r.sha256(d, at, "sha256");
    if (std::none_of(m.domains.begin(), m.domains.end(),
                     [&](const DomainRecord& dr) { return dr.name == doc.domain; })) {
      r.fail(at + ".domain", "'" + doc.domain + "' is not among domains[]");
    }
    SplitTotals& t = seen[{doc.domain, doc.split}];
    if (doc.offset != t.bytes) {
      r.fail(at + ".offset", std::to_string(doc.offset) + " where the previous document of " +
                                 doc.domain + "/" + std::string(split_name(doc.split)) +
                                 " ends at " + std::to_string(t.bytes));
    }
    t.documents += 1;
    t.bytes += doc.size;
    m.documents.push_back(std::move(doc));
  }
  std::map<Split, SplitTotals> sums;
  for (std::size_t i = 0; i < m.domains.size(); ++i) {
    const DomainRecord& d = m.domains[i];
    for (Split s : kSplits) {
      const SplitTotals& want = d.splits.at(s).totals;
      const SplitTotals got = seen[{d.name, s}];
      if (want.documents != got.documents || want.bytes != got.bytes) {
        r.fail("domains[" + std::to_string(i) + "].splits." + std::string(split_name(s)),
               "says " + std::to_string(want.documents) + " documents / " +
                   std::to_string(want.bytes) + " bytes, documents[] has " +
                   std::to_string(got.documents) + " / " + std::to_string(got.bytes));
      }
      sums[s].documents += got.documents;
      sums[s].bytes += got.bytes;
    }
  }
  for (Split s : kSplits) {
    if (sums[s].documents != m.split_totals[s].documents ||
        sums[s].bytes != m.split_totals[s].bytes) {
      r.fail("splits." + std::string(split_name(s)), "totals disagree with documents[]");
    }
  }

  m.manifest_sha256 = r.sha256(j, "", "manifest_sha256");
  json canonical = j;
  canonical.erase("manifest_sha256");
  if (sha256_hex(canonical.dump()) != m.manifest_sha256) {
    r.fail("manifest_sha256", "does not match the manifest's content (edited or corrupt)");
  }
  return m;
}

std::vector<Document> load_split(const Manifest& manifest, std::string_view domain, Split split) {
  const DomainRecord& record = manifest.domain(domain);
  const SplitFiles& files = record.splits.at(split);
  const fs::path bytes_path = manifest.directory / files.bytes_file;
  if (!fs::exists(bytes_path))
    throw CorpusError("bytes file " + bytes_path.string() + " is missing");
  const std::string bytes = read_file(bytes_path);
  if (bytes.size() != files.totals.bytes) {
    throw CorpusError("bytes file " + bytes_path.string() + " has " + std::to_string(bytes.size()) +
                      " bytes, the manifest says " + std::to_string(files.totals.bytes));
  }
  std::vector<Document> out;
  for (const DocumentRecord& doc : manifest.documents) {
    if (doc.domain != domain || doc.split != split) continue;
    const std::string_view content = std::string_view(bytes).substr(doc.offset, doc.size);
    if (sha256_hex(content) != doc.sha256) {
      throw CorpusError("bytes file " + bytes_path.string() + ": document at offset " +
                        std::to_string(doc.offset) + " (from " + doc.source +
                        ") does not match its sha256 in the manifest");
    }
    Document d;
    d.record = doc;
    d.bytes.assign(content.begin(), content.end());
    out.push_back(std::move(d));
  }
  return out;
}

json summary(const Manifest& manifest) {
  json j;
  j["directory"] = manifest.directory.string();
  j["manifest_sha256"] = manifest.manifest_sha256;
  j["domains"] = json::array();
  for (const auto& d : manifest.domains) {
    json splits = json::object();
    for (const auto& [split, files] : d.splits) {
      splits[std::string(split_name(split))] = to_json(files.totals);
    }
    j["domains"].push_back({{"name", d.name},
                            {"package", d.package},
                            {"files_found", d.files_found},
                            {"files_selected", d.files_selected},
                            {"bytes_selected", d.bytes_selected},
                            {"splits", splits}});
  }
  j["splits"] = json::object();
  for (const auto& [split, totals] : manifest.split_totals) {
    j["splits"][std::string(split_name(split))] = to_json(totals);
  }
  return j;
}

}  // namespace neat::data
