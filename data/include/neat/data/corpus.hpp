// neat/data/corpus.hpp: the text corpora, built from installed Debian packages only.
//
// Six domains (DESIGN.md, "Real data"): English, German, Italian and Spanish fortunes (packages
// fortunes, fortunes-de, fortunes-it, fortunes-es), C headers (/usr/include) and the Python
// standard library (/usr/lib/python3.*). A document is a source file; a file longer than
// PrepareOptions::max_document_bytes is cut into documents at natural boundaries (a fortune
// separator line "%", else a blank line, else a line end). Each domain is capped at a byte
// budget filled with whole files taken in SHA-256 order; each document goes to train, val or
// test by a salted SHA-256 of its bytes.
//
// Invariants: nothing is downloaded; preparation is a pure function of the options and the
// bytes of the source files, so two runs give byte-identical output directories; a loaded
// Manifest passed every check of load_manifest() (types, totals, contiguous offsets, the
// manifest hash); every Document returned by load_split() matches its recorded SHA-256.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace neat::data {

// Every failure of this header: a missing package or source directory (the message names the
// Debian package and scripts/install-deps), bad options, an unreadable or corrupt output file
// (the message names the file and the field or document).
class CorpusError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Split { kTrain, kVal, kTest };

// train, val, test: the order of every per-split listing.
inline constexpr std::array<Split, 3> kSplits{Split::kTrain, Split::kVal, Split::kTest};

// "train" | "val" | "test".
std::string_view split_name(Split split);
// Inverse of split_name(). Throws CorpusError naming the accepted names.
Split parse_split(std::string_view name);

// Where one domain's files come from.
struct DomainSource {
  std::string domain;   // short name, [a-z0-9_-]+: "en", "de", "it", "es", "c", "python"
  std::string package;  // Debian package that installs the files; named in errors
  std::vector<std::filesystem::path> roots;  // directories scanned, in this order
  int max_depth = 0;  // 0: only files directly in a root; 1: also in its subdirectories; ...
  std::vector<std::string> extensions;        // keep names ending so (".h"); empty: any name
  std::vector<std::string> skip_suffixes;     // drop names ending so (".dat", ".u8")
  std::vector<std::string> skip_directories;  // directory names never entered ("test")
  // When set, the package's dpkg file list (<dir>/<package>.list or <package>:<arch>.list) must
  // exist and only the files it names are taken: this tells the fortunes package's files from
  // those of fortunes-it installed in the same directory.
  std::optional<std::filesystem::path> dpkg_info_dir;
  std::uint64_t byte_budget = 0;  // bytes of whole files kept, in SHA-256 order; 0: no cap
};

inline constexpr std::uint64_t kDefaultCodeBudgetBytes = 6ull << 20;  // 6 MiB

// The six domains of DESIGN.md on this machine: fortunes (all of them, via the dpkg lists in
// `dpkg_info_dir`; Spanish without its offensive "off" subdirectory), *.h under /usr/include
// (recursive) and *.py of every /usr/lib/python3.N (top level and one level of packages,
// tests excluded), the last two capped at `code_budget_bytes` each.
std::vector<DomainSource> default_sources(
    const std::filesystem::path& dpkg_info_dir = "/var/lib/dpkg/info",
    std::uint64_t code_budget_bytes = kDefaultCodeBudgetBytes);

struct PrepareOptions {
  std::vector<DomainSource> sources = default_sources();
  std::filesystem::path output_dir = "data/corpus";  // created if missing; files overwritten
  std::uint64_t max_document_bytes = 64 * 1024;      // longer files are cut, bytes
  // A cut is never placed before this many bytes of a document (unless the file ends), so
  // documents of at least this length exist wherever the sources have them. Must be <= max.
  std::uint64_t min_document_bytes = 16 * 1024;
  double train_fraction = 0.8;  // expected share of documents; test gets 1 - train - val
  double val_fraction = 0.1;
};

// One document: where its bytes are in the split's bytes file and where they came from.
struct DocumentRecord {
  std::string domain;
  Split split = Split::kTrain;
  std::string source;               // absolute path of the source file
  std::uint64_t source_offset = 0;  // bytes from the start of the source file
  std::uint64_t size = 0;           // bytes
  std::uint64_t offset = 0;         // bytes from the start of <domain>.<split>.bin
  std::string sha256;               // lowercase hex digest of the document's bytes
};

struct SplitTotals {
  std::uint64_t documents = 0;
  std::uint64_t bytes = 0;
};

// One domain's split on disk: a concatenation of its documents plus a JSON index.
struct SplitFiles {
  std::string bytes_file;  // "<domain>.<split>.bin", relative to the manifest's directory
  std::string index_file;  // "<domain>.<split>.index.json"
  std::string sha256;      // of the whole bytes file
  SplitTotals totals;
};

struct DomainRecord {
  std::string name;
  std::string package;
  std::vector<std::string> roots;
  std::uint64_t byte_budget = 0;         // 0: no cap
  std::uint64_t files_found = 0;         // regular, non-empty files that matched the source
  std::uint64_t bytes_found = 0;         // their bytes
  std::uint64_t files_selected = 0;      // distinct files kept within the budget
  std::uint64_t bytes_selected = 0;      // their bytes
  std::uint64_t duplicates_skipped = 0;  // files or documents whose bytes were seen before
  std::map<Split, SplitFiles> splits;    // all three, possibly empty
};

struct Manifest {
  std::filesystem::path directory;  // where manifest.json is; not part of the file
  std::uint64_t max_document_bytes = 0;
  std::uint64_t min_document_bytes = 0;
  double train_fraction = 0.0;
  double val_fraction = 0.0;
  std::vector<DomainRecord> domains;          // in the order of PrepareOptions::sources
  std::vector<DocumentRecord> documents;      // by domain, then split, then offset
  std::map<Split, SplitTotals> split_totals;  // over all domains
  // SHA-256 (hex) of the canonical manifest: the JSON of manifest.json without this field,
  // serialized compactly with sorted keys (nlohmann::json::dump()).
  std::string manifest_sha256;

  // The record of domain `name`. Throws CorpusError naming the known domains.
  const DomainRecord& domain(std::string_view name) const;
};

// Builds the corpora into options.output_dir: per domain and split <domain>.<split>.bin and
// <domain>.<split>.index.json, then manifest.json. Returns the manifest written. Throws
// CorpusError when an option is out of range, a package is missing (its dpkg list or source
// directory is absent, or it yields no file), or a file cannot be read or written.
Manifest prepare_corpus(const PrepareOptions& options);

// Reads and validates manifest.json (`path` is the file or its directory). Throws CorpusError
// naming the file and the field (e.g. "documents[12].sha256") when the file is missing, is not
// JSON, a field is absent or of the wrong type, totals or offsets disagree, or the manifest
// hash does not match the content.
Manifest load_manifest(const std::filesystem::path& path);

// A document's bytes with its record.
struct Document {
  DocumentRecord record;
  std::vector<std::uint8_t> bytes;
};

// The documents of `domain`'s `split`, in file order, read from the manifest's directory.
// Throws CorpusError for an unknown domain, a missing or wrongly sized bytes file, or a
// document whose SHA-256 differs from the manifest (naming the file and the document).
std::vector<Document> load_split(const Manifest& manifest, std::string_view domain, Split split);

// Per domain and split: documents and bytes; totals per split; the manifest hash and
// directory. The JSON printed by `neat data prepare`.
nlohmann::json summary(const Manifest& manifest);

// --- building blocks, public for tests and for tools that cut or split other text ---

// A document's place in its source: [offset, offset + size), bytes.
struct DocumentSpan {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

// Cuts `text` into consecutive spans covering it, each at most `max_document_bytes` long.
// Each cut is the last one in (start + min_document_bytes, start + max_document_bytes] that
// follows a line "%" (fortune separator); failing that, a blank line; failing that, a line end;
// failing all, the hard limit. Text of at most max bytes is one span; empty text gives none.
// Throws CorpusError when max is 0 or min > max.
std::vector<DocumentSpan> cut_documents(std::string_view text, std::uint64_t max_document_bytes,
                                        std::uint64_t min_document_bytes);

// The split of a document with these bytes: u = first 8 bytes of SHA-256("neat.split.v1\n" +
// bytes) as a fraction in [0, 1); train if u < train_fraction, val if u < train + val, else
// test. The salt keeps this independent of the budget's SHA-256 order.
Split assign_split(std::string_view bytes, double train_fraction, double val_fraction);

// Lowercase hex SHA-256 of `bytes`.
std::string sha256_hex(std::string_view bytes);

}  // namespace neat::data
