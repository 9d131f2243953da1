// corpus_source: the main job's stream of real documents (round-robin over domains) with real
// Fashion-MNIST test images spread among them as PGM items.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "neat/data/corpus.hpp"
#include "neat/job/corpus_source.hpp"
#include "neat/mvot/idx.hpp"

namespace neat::job {
namespace {

namespace fs = std::filesystem;

class CorpusSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("neat-job-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    // Two real domains from the installed Debian packages (scripts/install-deps).
    data::PrepareOptions o;
    o.sources.clear();
    for (auto& s : data::default_sources("/var/lib/dpkg/info", 1 << 20)) {
      if (s.domain == "en" || s.domain == "de") o.sources.push_back(s);
    }
    o.output_dir = dir_;
    data::prepare_corpus(o);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(CorpusSourceTest, DomainsAlternateAndImagesAreSpreadAsPgmItems) {
  CorpusSourceOptions o;
  o.corpus = dir_.string();
  o.split = "test";
  o.domains = {"en", "de"};
  o.max_documents = 2;
  o.image_count = 4;
  const auto items = corpus_items(o);
  ASSERT_EQ(items.size(), 8u);
  std::vector<std::string> documents;
  std::size_t images = 0, last_image = 0, first_image = items.size();
  for (std::size_t k = 0; k < items.size(); ++k) {
    const auto& p = items[k].path;
    if (p.starts_with("fashion-mnist/")) {
      ++images;
      first_image = std::min(first_image, k);
      last_image = k;
      // A real binary PGM of one 28x28 image: header then 784 pixels.
      const std::string header = "P5\n28 28\n255\n";
      ASSERT_EQ(items[k].bytes.size(), header.size() + 784);
      EXPECT_TRUE(std::equal(header.begin(), header.end(), items[k].bytes.begin()));
      EXPECT_TRUE(p.ends_with(".pgm"));
    } else {
      documents.push_back(p);
      EXPECT_FALSE(items[k].bytes.empty());
    }
  }
  EXPECT_EQ(images, 4u);
  EXPECT_GT(first_image, 0u);               // not all at the front
  EXPECT_LT(last_image, items.size() - 1);  // nor all at the end
  ASSERT_EQ(documents.size(), 4u);
  EXPECT_EQ(documents[0], "corpus/en/test/0");
  EXPECT_EQ(documents[1], "corpus/de/test/0");
  EXPECT_EQ(documents[2], "corpus/en/test/1");
  // The documents are the split's bytes, in order.
  const auto manifest = data::load_manifest(dir_);
  const auto en = data::load_split(manifest, "en", data::Split::kTest);
  EXPECT_EQ(items[0].bytes, en.at(0).bytes);
}

TEST_F(CorpusSourceTest, MissingCorpusSaysHowToPrepareIt) {
  CorpusSourceOptions o;
  o.corpus = (dir_ / "nowhere").string();
  try {
    corpus_items(o);
    FAIL() << "no error for a missing corpus";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("neat data prepare"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace neat::job
