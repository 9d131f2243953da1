// report: the per-item join and the report's arithmetic (bits per byte per variant, domains,
// identification accuracy, images, patch sizes), and the compressors on the same bytes.
#include <gtest/gtest.h>

#include <cmath>

#include "neat/job/report.hpp"

namespace neat::job {
namespace {

TEST(Report, PathsNameTheTrueDomainAndClass) {
  EXPECT_EQ(domain_of_path("corpus/de/test/3"), "de");
  EXPECT_EQ(domain_of_path("/usr/share/games/fortunes/art"), "");
  EXPECT_EQ(class_of_path("fashion-mnist/t10k/500/Ankle boot.pgm"), "Ankle boot");
  EXPECT_EQ(class_of_path("fashion-mnist/t10k/500"), "");
}

TEST(Report, BitsPerByteAreTotalsOverBytesPerVariantAndDomain) {
  std::map<std::uint64_t, ItemRecord> items;
  auto text = [](std::string path, std::uint64_t bytes, double base, double t2, std::string det) {
    ItemRecord r;
    r.path = std::move(path);
    r.modality = "text";
    r.item_bytes = r.scored_bytes = bytes;
    r.bits = {{"base", base}, {"t2", t2}};
    r.detected_domain = std::move(det);
    r.confidence = 0.9;
    r.patches = bytes / 4;
    r.patch_tokens = bytes + 2;
    r.text.assign(bytes, 'a');
    return r;
  };
  items[0] = text("corpus/en/test/0", 1000, 2500, 2400, "en");
  items[1] = text("corpus/de/test/0", 3000, 6000, 5700, "de");
  items[2] = text("corpus/en/test/1", 1000, 1500, 1400, "de");  // misidentified
  ItemRecord image;
  image.path = "fashion-mnist/t10k/0/Ankle boot.pgm";
  image.modality = "image";
  image.images = 1;
  image.codes = 49;
  image.psnr_db = 23.5;
  items[3] = image;
  const auto r = build_report(items, {{4, 10}, {7, 2}}, /*run_compressors=*/true);
  const auto& en = r["domains"]["en"];
  EXPECT_EQ(en["documents"], 2);
  EXPECT_DOUBLE_EQ(en["bits_per_byte"]["base"].get<double>(), 4000.0 / 2000.0);
  EXPECT_DOUBLE_EQ(en["bits_per_byte"]["t2"].get<double>(), 3800.0 / 2000.0);
  EXPECT_DOUBLE_EQ(en["identification_accuracy"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r["totals"]["bits_per_byte"]["base"].get<double>(), 10000.0 / 5000.0);
  EXPECT_DOUBLE_EQ(r["totals"]["identification_accuracy"].get<double>(), 2.0 / 3.0);
  EXPECT_EQ(r["documents"].size(), 3u);
  EXPECT_DOUBLE_EQ(r["documents"][1]["bits_per_byte"]["base"].get<double>(), 2.0);
  ASSERT_EQ(r["images"].size(), 1u);
  EXPECT_EQ(r["images"][0]["class"], "Ankle boot");
  EXPECT_DOUBLE_EQ(r["totals"]["mean_psnr_db"].get<double>(), 23.5);
  EXPECT_EQ(r["patch_size_histogram"]["4"], 10);
  // The compressors ran on each domain's bytes: 2000 'a's compress to far below 1 bit/byte.
  const double xz = en["compressors"]["xz -9e"].get<double>();
  EXPECT_GT(xz, 0.0);
  EXPECT_LT(xz, 1.0);
  EXPECT_TRUE(en["compressors"].contains("bzip2 -9"));
  // The printed table: a row per domain and the total, variants and compressors as columns.
  const auto table = report_table(r);
  EXPECT_NE(table.find("| domain | docs | bytes | base LM | +T2 | xz -9e |"), std::string::npos)
      << table;
  EXPECT_NE(table.find("| en | 2 | 2000 | 2.000 | 1.900 |"), std::string::npos) << table;
  EXPECT_NE(table.find("| all | 3 | 5000 | 2.000 |"), std::string::npos) << table;
  EXPECT_EQ(table.find("+Titans"), std::string::npos);  // no such variant in this run
}

}  // namespace
}  // namespace neat::job
