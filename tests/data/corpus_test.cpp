// Corpus preparation on a small fixture tree: determinism, file selection, budgets, cutting,
// splits, and rejection of corrupt manifests and bytes files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <string>

#include "neat/data/corpus.hpp"

namespace fs = std::filesystem;
namespace nd = neat::data;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// Pseudo-fortunes: lines of words, a "%" line after each fortune, deterministic per seed.
std::string fortunes_text(std::uint64_t seed, std::size_t bytes) {
  std::mt19937_64 rng(seed);
  static const char* kWords[] = {"the",      "byte",     "entropy", "memory", "patch", "fortune",
                                 "surprise", "momentum", "cookie",  "debian", "is",    "a"};
  std::string out;
  while (out.size() < bytes) {
    const int lines = 1 + static_cast<int>(rng() % 4);
    for (int l = 0; l < lines; ++l) {
      const int words = 3 + static_cast<int>(rng() % 9);
      for (int w = 0; w < words; ++w) {
        out += kWords[rng() % std::size(kWords)];
        out += (w + 1 < words) ? " " : "\n";
      }
    }
    out += "%\n";
  }
  return out;
}

// A temporary directory holding a fortunes-like package (with a dpkg list that names only some
// of the files beside it) and a C-like header tree.
class CorpusFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("neat-corpus-test-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    const fs::path fortunes = root_ / "share/fortunes";
    write(fortunes / "alpha", fortunes_text(1, 3000));
    write(fortunes / "alpha.dat", std::string(64, '\x01'));
    fs::create_symlink("alpha", fortunes / "alpha.u8");
    write(fortunes / "beta", fortunes_text(2, 200000));  // cut into several documents
    write(fortunes / "gamma", fortunes_text(3, 9000));
    write(fortunes / "foreign", fortunes_text(4, 5000));   // another package's file
    write(fortunes / "off/rude", fortunes_text(5, 5000));  // subdirectory: not taken
    std::string list = "/.\n" + fortunes.string() + "\n";
    for (const char* name : {"alpha", "alpha.dat", "alpha.u8", "beta", "gamma", "off/rude"}) {
      list += (fortunes / name).string() + "\n";
    }
    write(root_ / "dpkg/fixture-fortunes.list", list);

    const fs::path include = root_ / "include";
    for (int i = 0; i < 30; ++i) {
      const std::string body = "/* header " + std::to_string(i) + " */\n#define N" +
                               std::to_string(i) + " " + std::to_string(i * i) + "\n\n" +
                               fortunes_text(100 + i, 1000 + 97 * i);
      write(include / (i % 3 == 0 ? "sys" : ".") / ("h" + std::to_string(i) + ".h"), body);
    }
    write(include / "copy.h", read(include / "h1.h"));  // duplicate content
    write(include / "notes.txt", "not a header\n");
  }
  void TearDown() override { fs::remove_all(root_); }

  nd::DomainSource fortune_source() const {
    nd::DomainSource s;
    s.domain = "en";
    s.package = "fixture-fortunes";
    s.roots = {root_ / "share/fortunes"};
    s.skip_suffixes = {".dat", ".u8"};
    s.dpkg_info_dir = root_ / "dpkg";
    return s;
  }
  nd::DomainSource c_source(std::uint64_t budget = 0) const {
    nd::DomainSource s;
    s.domain = "c";
    s.package = "fixture-libc-dev";
    s.roots = {root_ / "include"};
    s.max_depth = 8;
    s.extensions = {".h"};
    s.byte_budget = budget;
    return s;
  }
  nd::PrepareOptions options(const std::string& out) const {
    nd::PrepareOptions o;
    o.sources = {fortune_source(), c_source()};
    o.output_dir = root_ / out;
    o.max_document_bytes = 20000;
    o.min_document_bytes = 5000;
    return o;
  }

  fs::path root_;
};

std::map<std::string, std::string> directory_bytes(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    files[e.path().filename().string()] = read(e.path());
  return files;
}

}  // namespace

TEST_F(CorpusFixture, TwoRunsGiveByteIdenticalOutputDirectories) {
  const nd::Manifest a = nd::prepare_corpus(options("out-a"));
  const nd::Manifest b = nd::prepare_corpus(options("out-b"));
  EXPECT_EQ(a.manifest_sha256, b.manifest_sha256);
  const auto files_a = directory_bytes(root_ / "out-a");
  const auto files_b = directory_bytes(root_ / "out-b");
  EXPECT_EQ(files_a.size(), 1u + 2u * 3u * 2u);  // manifest + (bin, index) per domain and split
  EXPECT_TRUE(files_a == files_b);
}

TEST_F(CorpusFixture, TakesOnlyRegularFilesTheDpkgListNamesWithoutDatOrSubdirectories) {
  const nd::Manifest m = nd::prepare_corpus(options("out"));
  std::set<std::string> sources;
  for (const auto& d : m.documents) {
    if (d.domain == "en") sources.insert(fs::path(d.source).filename().string());
  }
  EXPECT_EQ(sources, (std::set<std::string>{"alpha", "beta", "gamma"}));
  EXPECT_EQ(m.domain("en").files_found, 3u);
}

TEST_F(CorpusFixture, DocumentsReassembleTheirSourceFilesExactly) {
  const nd::Manifest m = nd::prepare_corpus(options("out"));
  std::map<std::string, std::string> rebuilt;
  for (nd::Split split : nd::kSplits) {
    for (const nd::Document& d : nd::load_split(m, "en", split)) {
      const std::string source = read(d.record.source);
      const std::string bytes(d.bytes.begin(), d.bytes.end());
      ASSERT_EQ(source.substr(d.record.source_offset, d.record.size), bytes);
      EXPECT_LE(d.bytes.size(), m.max_document_bytes);
      std::string& r = rebuilt[d.record.source];
      if (r.size() < d.record.source_offset + d.record.size)
        r.resize(d.record.source_offset + d.record.size);
      r.replace(d.record.source_offset, d.record.size, bytes);
    }
  }
  for (const auto& [path, bytes] : rebuilt) EXPECT_EQ(bytes, read(path)) << path;
  // beta (200000 bytes) was cut after "%" lines into documents of 5000..20000 bytes.
  int beta_documents = 0;
  for (const auto& d : m.documents) {
    if (d.source.ends_with("/beta")) {
      ++beta_documents;
      const std::string text = read(d.source).substr(d.source_offset, d.size);
      if (d.source_offset + d.size < 200000) {
        EXPECT_TRUE(text.ends_with("\n%\n"));
        EXPECT_GE(d.size, m.min_document_bytes);
      }
    }
  }
  EXPECT_GE(beta_documents, 10);
}

TEST_F(CorpusFixture, ByteBudgetKeepsWholeDistinctFilesWithinTheCap) {
  nd::PrepareOptions o = options("out");
  o.sources = {c_source(20000)};
  const nd::Manifest m = nd::prepare_corpus(o);
  const nd::DomainRecord& c = m.domain("c");
  EXPECT_EQ(c.files_found, 31u);  // 30 headers + the copy; notes.txt is no header
  EXPECT_GE(c.duplicates_skipped, 1u);
  EXPECT_LE(c.bytes_selected, 20000u);
  EXPECT_GT(c.bytes_selected, 15000u);
  std::uint64_t total = 0;
  std::set<std::string> sources;
  for (const auto& d : m.documents) {
    total += d.size;
    sources.insert(d.source);
  }
  EXPECT_EQ(total, c.bytes_selected);
  std::uint64_t whole = 0;
  for (const auto& s : sources) whole += fs::file_size(s);
  EXPECT_EQ(whole, c.bytes_selected);  // files are taken whole
}

TEST_F(CorpusFixture, MissingPackageNamesThePackageAndInstallScript) {
  nd::PrepareOptions o = options("out");
  o.sources[0].package = "fortunes-absent";
  try {
    nd::prepare_corpus(o);
    FAIL() << "expected CorpusError";
  } catch (const nd::CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find("fortunes-absent"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("scripts/install-deps"), std::string::npos) << e.what();
  }
  o = options("out");
  o.sources[1].roots = {root_ / "no-such-include"};
  try {
    nd::prepare_corpus(o);
    FAIL() << "expected CorpusError";
  } catch (const nd::CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find("fixture-libc-dev"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("scripts/install-deps"), std::string::npos) << e.what();
  }
}

TEST_F(CorpusFixture, LoadManifestRoundTripsThePreparedManifest) {
  const nd::Manifest written = nd::prepare_corpus(options("out"));
  const nd::Manifest loaded = nd::load_manifest(root_ / "out");
  EXPECT_EQ(loaded.manifest_sha256, written.manifest_sha256);
  ASSERT_EQ(loaded.documents.size(), written.documents.size());
  for (std::size_t i = 0; i < loaded.documents.size(); ++i) {
    EXPECT_EQ(loaded.documents[i].sha256, written.documents[i].sha256);
    EXPECT_EQ(loaded.documents[i].offset, written.documents[i].offset);
  }
  const auto s = nd::summary(loaded);
  EXPECT_EQ(s["manifest_sha256"], written.manifest_sha256);
  EXPECT_EQ(s["domains"].size(), 2u);
  std::uint64_t docs = 0;
  for (nd::Split split : nd::kSplits)
    docs += s["splits"][std::string(nd::split_name(split))]["documents"].get<std::uint64_t>();
  EXPECT_EQ(docs, written.documents.size());
}

TEST_F(CorpusFixture, LoadManifestRejectsCorruptionNamingFileAndField) {
  nd::prepare_corpus(options("out"));
  const fs::path file = root_ / "out/manifest.json";
  const std::string original = read(file);
  auto expect_error = [&](const std::string& content, const std::string& field) {
    write(file, content);
    try {
      nd::load_manifest(file);
      ADD_FAILURE() << "expected CorpusError mentioning " << field;
    } catch (const nd::CorpusError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(file.string()), std::string::npos) << what;
      EXPECT_NE(what.find(field), std::string::npos) << what;
    }
  };
  auto edited = [&](auto edit) {
    nlohmann::json j = nlohmann::json::parse(original);
    edit(j);
    return j.dump(1);
  };
  expect_error(original.substr(0, original.size() / 2), "not valid JSON");
  expect_error(edited([](auto& j) { j["documents"][0].erase("sha256"); }), "documents[0].sha256");
  expect_error(edited([](auto& j) { j["documents"][1]["size"] = "big"; }), "documents[1].size");
  expect_error(edited([](auto& j) { j["documents"][0]["split"] = "holdout"; }),
               "documents[0].split");
  expect_error(edited([](auto& j) { j["domains"][0]["splits"].erase("val"); }),
               "domains[0].splits.val");
  // A consistent-looking edit is caught by the manifest hash.
  expect_error(edited([](auto& j) { j["domains"][0]["package"] = "other"; }), "manifest_sha256");
  // Offsets must be contiguous within a domain's split.
  expect_error(edited([](auto& j) { j["documents"][1]["offset"] = 7u; }), "offset");
  write(file, original);
  EXPECT_NO_THROW(nd::load_manifest(file));
}

TEST_F(CorpusFixture, LoadSplitRejectsABytesFileThatNoLongerMatches) {
  const nd::Manifest m = nd::prepare_corpus(options("out"));
  const fs::path bin = root_ / "out" / m.domain("en").splits.at(nd::Split::kTrain).bytes_file;
  std::string bytes = read(bin);
  ASSERT_FALSE(bytes.empty());
  bytes[bytes.size() / 2] ^= 0x20;
  write(bin, bytes);
  try {
    nd::load_split(m, "en", nd::Split::kTrain);
    FAIL() << "expected CorpusError";
  } catch (const nd::CorpusError& e) {
    EXPECT_NE(std::string(e.what()).find(bin.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  }
  EXPECT_THROW(nd::load_split(m, "klingon", nd::Split::kTrain), nd::CorpusError);
}

TEST(CutDocuments, ShortTextIsOneDocumentAndEmptyTextNone) {
  EXPECT_TRUE(nd::cut_documents("", 10, 2).empty());
  const auto spans = nd::cut_documents("hello\n", 10, 2);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(spans[0].offset, 0u);
  EXPECT_EQ(spans[0].size, 6u);
}

TEST(CutDocuments, PrefersTheLastFortuneSeparatorOverBlankLinesAndLineEnds) {
  //                 0123 4 56 7 8 9012 3 4 5 6789...
  const std::string text = "aaa\n%\nbb\n\ncc\ndd\neeeeeeeeee\n";
  const auto spans = nd::cut_documents(text, 16, 1);
  ASSERT_GE(spans.size(), 2u);
  EXPECT_EQ(spans[0].size, 6u);  // after "%\n", though a blank line (10) and "cc\n" (13) fit
}

TEST(CutDocuments, FallsBackToBlankLineThenLineEndThenHardLimit) {
  EXPECT_EQ(nd::cut_documents("ab\n\ncd\nef\nghijklmnop", 12, 1)[0].size, 4u);     // blank line
  EXPECT_EQ(nd::cut_documents("abc\ndef\nghijklmnopq", 10, 1)[0].size, 8u);        // line end
  EXPECT_EQ(nd::cut_documents("abcdefghijklmnopqrstuvwxyz", 10, 1)[0].size, 10u);  // hard limit
}

TEST(CutDocuments, NeverCutsBeforeTheMinimumAndCoversTheText) {
  const std::string text = fortunes_text(7, 50000);
  const auto spans = nd::cut_documents(text, 4096, 3000);
  std::uint64_t next = 0;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(spans[i].offset, next);
    EXPECT_LE(spans[i].size, 4096u);
    if (i + 1 < spans.size()) {
      EXPECT_GE(spans[i].size, 3000u);
      EXPECT_EQ(text.substr(spans[i].offset + spans[i].size - 3, 3), "\n%\n");
    }
    next += spans[i].size;
  }
  EXPECT_EQ(next, text.size());
  EXPECT_THROW(nd::cut_documents(text, 0, 0), nd::CorpusError);
  EXPECT_THROW(nd::cut_documents(text, 10, 11), nd::CorpusError);
}

TEST(AssignSplit, SharesFollowTheFractionsAndRepeat) {
  std::map<nd::Split, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    const std::string doc = "document " + std::to_string(i);
    const nd::Split s = nd::assign_split(doc, 0.8, 0.1);
    ++counts[s];
    if (i < 100) {
      EXPECT_EQ(s, nd::assign_split(doc, 0.8, 0.1));
    }
  }
  // Binomial standard deviation at n = 20000 is 0.28% (train) and 0.21% (val, test).
  EXPECT_NEAR(counts[nd::Split::kTrain] / double(n), 0.8, 0.012);
  EXPECT_NEAR(counts[nd::Split::kVal] / double(n), 0.1, 0.01);
  EXPECT_NEAR(counts[nd::Split::kTest] / double(n), 0.1, 0.01);
  EXPECT_EQ(nd::assign_split("x", 1.0, 0.0), nd::Split::kTrain);
  EXPECT_EQ(nd::assign_split("x", 0.0, 0.0), nd::Split::kTest);
}

TEST(Sha256, MatchesTheKnownDigestOfAbc) {
  EXPECT_EQ(nd::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
