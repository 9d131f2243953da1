// report: per-item join of the components' outputs and the final report.json.
#include "neat/job/report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "neat/blt/messages.hpp"
#include "neat/components/messages.hpp"
#include "neat/components/paths.hpp"
#include "neat/components/plot.hpp"
#include "neat/data/compressors.hpp"
#include "neat/mvot/codebook.hpp"
#include "neat/mvot/idx.hpp"
#include "neat/mvot/image_io.hpp"
#include "neat/mvot/mvot_component.hpp"
#include "neat/mvot/tokens.hpp"

namespace neat::job {

namespace {

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto end = path.find('/', start);
    parts.push_back(path.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

double bits_per_byte(double bits, std::uint64_t bytes) {
  return bytes == 0 ? 0.0 : bits / static_cast<double>(bytes);
}

}  // namespace

std::string domain_of_path(const std::string& path) {
  const auto parts = split_path(path);
  return parts.size() >= 2 && parts[0] == "corpus" ? parts[1] : "";
}

std::string class_of_path(const std::string& path) {
  const auto parts = split_path(path);
  if (parts.size() != 4 || parts[0] != "fashion-mnist" || !parts[3].ends_with(".pgm")) return "";
  return parts[3].substr(0, parts[3].size() - 4);
}

nlohmann::json build_report(const std::map<std::uint64_t, ItemRecord>& items,
                            const std::map<std::uint64_t, std::uint64_t>& histogram,
                            bool run_compressors, std::uint64_t source_items) {
  // Consistency: bits recomputed from the logged log-probabilities, patch lengths summing to
  // each item's tokens, and the item count against the stream's own count.
  std::uint64_t checked = 0, bits_mismatches = 0, patch_checked = 0, patch_mismatches = 0;
  for (const auto& [id, r] : items) {
    for (const auto& [variant, bits] : r.bits) {
      const auto it = r.logged_bits.find(variant);
      if (it == r.logged_bits.end()) continue;
      ++checked;
      if (std::abs(it->second - bits) > 1e-6 * std::max(1.0, std::abs(bits))) ++bits_mismatches;
    }
    if (r.token_count > 0 && r.patches > 0) {
      ++patch_checked;
      if (r.patch_tokens != r.token_count) ++patch_mismatches;
    }
  }
  nlohmann::json documents = nlohmann::json::array(), images = nlohmann::json::array();
  struct DomainTotals {
    std::uint64_t documents = 0, bytes = 0, identified = 0, correct = 0;
    std::map<std::string, double> bits;
    std::uint64_t scored = 0;
    std::vector<std::uint8_t> text;
  };
  std::map<std::string, DomainTotals> domains;
  DomainTotals all;
  std::uint64_t patches = 0, patch_tokens = 0, image_items = 0;
  double psnr_sum = 0.0;
  std::uint64_t psnr_images = 0;
  for (const auto& [id, r] : items) {
    patches += r.patches;
    patch_tokens += r.patch_tokens;
    if (r.modality == "image") {
      ++image_items;
      psnr_sum += r.psnr_db * static_cast<double>(r.images);
      psnr_images += r.images;
      images.push_back({{"doc_id", id},
                        {"path", r.path},
                        {"class", class_of_path(r.path)},
                        {"images", r.images},
                        {"codes", r.codes},
                        {"psnr_db", r.psnr_db},
                        {"patches", r.patches}});
      continue;
    }
    std::string domain = domain_of_path(r.path);
    if (domain.empty()) domain = std::filesystem::path(r.path).filename().string();  // a file
    nlohmann::json bpb = nlohmann::json::object();
    for (const auto& [variant, bits] : r.bits) bpb[variant] = bits_per_byte(bits, r.scored_bytes);
    nlohmann::json d = {
        {"doc_id", id},
        {"path", r.path},
        {"domain", domain},
        {"modality", r.modality},
        {"bytes", r.item_bytes},
        {"patches", r.patches},
        {"mean_patch_size", r.patches ? double(r.patch_tokens) / double(r.patches) : 0.0},
        {"bits_per_byte", bpb}};
    if (!r.detected_domain.empty()) {
      d["detected_domain"] = r.detected_domain;
      d["confidence"] = r.confidence;
    }
    documents.push_back(std::move(d));
    for (auto* t : {&domains[domain], &all}) {
      ++t->documents;
      t->bytes += r.item_bytes;
      t->scored += r.scored_bytes;
      for (const auto& [variant, bits] : r.bits) t->bits[variant] += bits;
      if (!r.detected_domain.empty() && !domain_of_path(r.path).empty()) {  // true domain known
        ++t->identified;
        if (r.detected_domain == domain) ++t->correct;
      }
    }
    auto& text = domains[domain].text;
    text.insert(text.end(), r.text.begin(), r.text.end());
  }
  auto totals_json = [&](const DomainTotals& t) {
    nlohmann::json bpb = nlohmann::json::object();
    for (const auto& [variant, bits] : t.bits) bpb[variant] = bits_per_byte(bits, t.scored);
    nlohmann::json j = {{"documents", t.documents}, {"bytes", t.bytes}, {"bits_per_byte", bpb}};
    if (t.identified > 0) {
      j["identified"] = t.identified;
      j["identification_accuracy"] = double(t.correct) / double(t.identified);
    }
    return j;
  };
  nlohmann::json by_domain = nlohmann::json::object();
  for (const auto& [name, t] : domains) {
    auto j = totals_json(t);
    if (run_compressors && !t.text.empty()) {
      nlohmann::json c = nlohmann::json::object();
      for (auto compressor : data::kCompressors) {
        const auto r = data::compress_stream(compressor, t.text);
        const std::string key(data::compressor_name(compressor));
        if (r.bits_per_byte()) {
          c[key] = *r.bits_per_byte();
        } else {
          c[key] = nullptr;
          j["unavailable"][key] = r.unavailable_reason;
        }
      }
      j["compressors"] = c;
    }
    by_domain[name] = std::move(j);
  }
  auto totals = totals_json(all);
  if (run_compressors && domains.size() > 1) {
    // All text as one stream, the byte LM's totals' counterpart.
    std::vector<std::uint8_t> text;
    for (const auto& [name, t] : domains) text.insert(text.end(), t.text.begin(), t.text.end());
    nlohmann::json c = nlohmann::json::object();
    for (auto compressor : data::kCompressors) {
      const auto r = data::compress_stream(compressor, text);
      c[std::string(data::compressor_name(compressor))] =
          r.bits_per_byte() ? nlohmann::json(*r.bits_per_byte()) : nlohmann::json(nullptr);
    }
    totals["compressors"] = c;
  }
  totals["items"] = items.size();
  totals["image_items"] = image_items;
  totals["images"] = psnr_images;
  totals["mean_psnr_db"] = psnr_images ? psnr_sum / double(psnr_images) : 0.0;
  totals["patches"] = patches;
  totals["mean_patch_size"] = patches ? double(patch_tokens) / double(patches) : 0.0;
  totals["consistency"] = {{"bits_checked", checked},
                           {"bits_mismatches", bits_mismatches},
                           {"patch_sums_checked", patch_checked},
                           {"patch_sum_mismatches", patch_mismatches},
                           {"source_items", source_items},
                           {"items_match", source_items == 0 || source_items == items.size()}};
  nlohmann::json hist = nlohmann::json::object();
  for (const auto& [size, count] : histogram) hist[std::to_string(size)] = count;
  return {{"documents", documents},
          {"images", images},
          {"domains", by_domain},
          {"totals", totals},
          {"patch_size_histogram", hist}};
}

std::string report_table(const nlohmann::json& report) {
  static const std::vector<std::pair<std::string, std::string>> kVariants = {
      {"base", "base LM"}, {"t2", "+T2"}, {"titans", "+Titans"}, {"full", "full"}};
  const auto& totals = report.at("totals");
  std::vector<std::pair<std::string, std::string>> variants;
  for (const auto& v : kVariants) {
    if (totals["bits_per_byte"].contains(v.first)) variants.push_back(v);
  }
  std::vector<std::string> compressors;
  for (auto c : data::kCompressors) compressors.emplace_back(data::compressor_name(c));
  auto cell = [](const nlohmann::json& j, const std::string& key) -> std::string {
    if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return "n/a";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", j[key].get<double>());
    return buf;
  };
  std::string out = "| domain | docs | bytes |";
  std::string rule = "|---|---:|---:|";
  for (const auto& v : variants) {
    out += " " + v.second + " |";
    rule += "---:|";
  }
  for (const auto& c : compressors) {
    out += " " + c + " |";
    rule += "---:|";
  }
  out += " domain id |\n" + rule + "---:|\n";
  auto row = [&](const std::string& name, const nlohmann::json& d) {
    out += "| " + name + " | " + std::to_string(d.value("documents", 0)) + " | " +
           std::to_string(d.value("bytes", 0)) + " |";
    for (const auto& v : variants) out += " " + cell(d["bits_per_byte"], v.first) + " |";
    for (const auto& c : compressors)
      out += " " + cell(d.value("compressors", nlohmann::json()), c) + " |";
    out += " " +
           (d.contains("identification_accuracy") ? cell(d, "identification_accuracy")
                                                  : std::string("n/a")) +
           " |\n";
  };
  for (const auto& [name, d] : report.at("domains").items()) row(name, d);
  row("all", totals);
  char images[160];
  std::snprintf(images, sizeof images,
                "\nimages: %d items, %d images, mean PSNR of the codebook round trip %.2f dB; "
                "patches: %d, mean patch size %.2f tokens\n",
                totals.value("image_items", 0), totals.value("images", 0),
                totals.value("mean_psnr_db", 0.0), totals.value("patches", 0),
                totals.value("mean_patch_size", 0.0));
  return out + images;
}

nlohmann::json write_plots(const nlohmann::json& report,
                           const std::map<std::uint64_t, ItemRecord>& items,
                           const std::filesystem::path& dir, const std::filesystem::path& codebook,
                           const std::filesystem::path& idx_images) {
  nlohmann::json out = {{"written", nlohmann::json::array()},
                        {"skipped", nlohmann::json::object()}};
  auto done = [&](const std::filesystem::path& file, const std::optional<std::string>& failed) {
    if (failed) {
      out["skipped"][file.filename().string()] = *failed;
    } else {
      out["written"].push_back(file.string());
    }
  };
  // Bits per byte per domain: one cluster per domain, one bar per variant and compressor.
  std::vector<std::string> columns;
  for (const auto* v : {"base", "t2", "titans", "full"}) {
    if (report["totals"]["bits_per_byte"].contains(v)) columns.push_back(v);
  }
  std::vector<std::string> compressors;
  for (auto c : data::kCompressors) compressors.emplace_back(data::compressor_name(c));
  {
    std::ofstream dat(dir / "bits_per_byte.dat");
    dat << "domain";
    for (const auto& c : columns) dat << " \"" << c << "\"";
    for (const auto& c : compressors) dat << " \"" << c << "\"";
    dat << "\n";
    for (const auto& [name, d] : report["domains"].items()) {
      dat << name;
      for (const auto& c : columns) dat << " " << d["bits_per_byte"].value(c, 0.0);
      for (const auto& c : compressors) {
        const auto& cc = d.value("compressors", nlohmann::json::object());
        dat << " " << (cc.contains(c) && cc[c].is_number() ? cc[c].get<double>() : 0.0);
      }
      dat << "\n";
    }
  }
  const auto n = columns.size() + compressors.size();
  std::string gp = "set terminal png size 1000,560\nset output " +
                   components::gnuplot_quoted(dir / "bits_per_byte.png") +
                   "\nset style data histogram\nset style histogram cluster gap 1\n"
                   "set style fill solid 0.8 border -1\nset ylabel 'bits per byte'\n"
                   "set key outside right\nset grid ytics\nset yrange [0:*]\n"
                   "set title 'bits per byte per domain: byte LM variants and compressors'\n"
                   "plot for [i=2:" +
                   std::to_string(n + 1) + "] " +
                   components::gnuplot_quoted(dir / "bits_per_byte.dat") +
                   " using i:xtic(1) title columnheader(i)\n";
  done(dir / "bits_per_byte.png", components::run_gnuplot(dir / "bits_per_byte.gp", gp));
  // Patch-size histogram.
  {
    std::ofstream dat(dir / "patch_sizes.dat");
    dat << "# tokens patches\n";
    for (const auto& [size, count] : report["patch_size_histogram"].items())
      dat << size << " " << count.get<std::uint64_t>() << "\n";
  }
  gp = "set terminal png size 900,500\nset output " +
       components::gnuplot_quoted(dir / "patch_sizes.png") +
       "\nset style fill solid 0.8\nset boxwidth 0.8\nset xlabel 'patch size (tokens)'\n"
       "set ylabel 'patches'\nset grid ytics\nset title 'entropy patch sizes'\nplot " +
       components::gnuplot_quoted(dir / "patch_sizes.dat") + " using 1:2 with boxes notitle\n";
  done(dir / "patch_sizes.png", components::run_gnuplot(dir / "patch_sizes.gp", gp));
  // Images as streamed (top) and their codebook reconstructions (bottom).
  try {
    std::vector<std::pair<std::size_t, std::vector<std::int32_t>>> strip;  // IDX index, codes
    const auto book = mvot::Codebook::load(codebook);
    for (const auto& [id, r] : items) {
      if (r.modality != "image" || r.image_tokens.size() != 51 || strip.size() >= 16) continue;
      const auto parts = split_path(r.path);
      if (parts.size() != 4 || parts[0] != "fashion-mnist") continue;
      strip.emplace_back(std::stoul(parts[2]),
                         mvot::tokens_to_image_codes(r.image_tokens, book.size()));
    }
    if (strip.empty()) {
      out["skipped"]["images.png"] = "no Fashion-MNIST test image items in this run";
    } else {
      const auto idx = mvot::read_idx_images(idx_images);
      mvot::GrayImage sheet;
      sheet.width = static_cast<int>(28 * strip.size());
      sheet.height = 56;
      sheet.pixels.assign(static_cast<std::size_t>(sheet.width) * 56, 0);
      for (std::size_t j = 0; j < strip.size(); ++j) {
        const auto* original = idx.pixels.data() + strip[j].first * 784;
        const auto decoded = book.decode(strip[j].second);
        for (std::size_t y = 0; y < 28; ++y) {
          for (std::size_t x = 0; x < 28; ++x) {
            sheet.pixels[y * sheet.width + j * 28 + x] = original[y * 28 + x];
            sheet.pixels[(y + 28) * sheet.width + j * 28 + x] = decoded[y * 28 + x];
          }
        }
      }
      mvot::write_png(dir / "images.png", sheet);
      out["written"].push_back((dir / "images.png").string());
    }
  } catch (const std::exception& e) {
    out["skipped"]["images.png"] = e.what();
  }
  return out;
}

void add_run_totals(const std::filesystem::path& report_json,
                    const std::filesystem::path& run_json) {
  std::ifstream rin(report_json), uin(run_json);
  if (!rin || !uin) return;
  auto report = nlohmann::json::parse(rin, nullptr, false);
  const auto run = nlohmann::json::parse(uin, nullptr, false);
  if (report.is_discarded() || run.is_discarded() || !report.contains("totals")) return;
  const double wall = run.value("wall_seconds", 0.0);
  const auto& t = report["totals"];
  nlohmann::json out = {{"wall_seconds", wall},
                        {"memory", run.value("memory", nlohmann::json::object())},
                        {"stability", run.value("learning", nlohmann::json::object())}};
  if (wall > 0) {
    out["bytes_per_second"] = t.value("bytes", 0.0) / wall;
    out["images_per_second"] = t.value("images", 0.0) / wall;
  }
  nlohmann::json bus = nlohmann::json::object();
  const nlohmann::json no_object = nlohmann::json::object();
  const auto& components = run.contains("components") ? run["components"] : no_object;
  for (const auto& [name, c] : components.items()) {
    const auto& stats = c.contains("stats") ? c["stats"] : no_object;
    if (stats.contains("component") && stats["component"].contains("latency_ms")) {
      out["latency_ms"] = stats["component"]["latency_ms"];
    }
    std::uint64_t messages = 0, bytes = 0, dropped = 0;
    if (stats.contains("bus") && stats["bus"].contains("topics")) {
      for (const auto& [topic, st] : stats["bus"]["topics"].items()) {
        messages += st.value("published", std::uint64_t{0});
        bytes += st.value("published_bytes", std::uint64_t{0});
        dropped += st.value("dropped", std::uint64_t{0});
      }
    }
    bus[name] = {
        {"published_messages", messages}, {"published_bytes", bytes}, {"dropped", dropped}};
  }
  out["bus"] = bus;
  // Issue 8: the profile each component ran under (precision, batch cap, grant) and the peak
  // resident set of each process (VmHWM of the process itself, not of the compressors it ran;
  // the components of an embedded run share one process). The largest is the run's peak.
  nlohmann::json profile = nlohmann::json::object(), processes = nlohmann::json::object();
  std::uint64_t peak_rss = 0;
  for (const auto& [name, c] : components.items()) {
    const auto& stats = c.contains("stats") ? c["stats"] : no_object;
    if (stats.contains("profile")) profile[name] = stats["profile"];
    if (!stats.contains("process")) continue;
    const auto& p = stats["process"];
    const auto pid = std::to_string(p.value("pid", 0));
    const std::uint64_t hwm = p.value("peak_rss_bytes", std::uint64_t{0});
    auto& entry = processes[pid];
    if (!entry.contains("components")) entry["components"] = nlohmann::json::array();
    entry["components"].push_back(name);
    entry["peak_rss_bytes"] = std::max(entry.value("peak_rss_bytes", std::uint64_t{0}), hwm);
    entry["heap"] = p.value("heap", nlohmann::json::object());
    entry["tensors"] = p.value("tensors", nlohmann::json::object());
    peak_rss = std::max(peak_rss, hwm);
  }
  out["profile"] = profile;
  out["processes"] = processes;
  out["peak_rss_bytes"] = peak_rss;
  report["run"] = out;
  std::ofstream(report_json) << report.dump(2) << "\n";
}

config::Schema Report::schema() {
  using config::Schema;
  return Schema::map()
      .optional("report", Schema::string().default_value("report.json"),
                "file written in the run's output directory")
      .optional("tokens", Schema::string().default_value("tokens"), "mvot's token topic")
      .optional("patches", Schema::string().default_value("blt.patches"),
                "blt's patch topic (\"\": none)")
      .optional("scores", Schema::string().default_value("blt.scores"),
                "byte LM code lengths (\"\": none)")
      .optional("adaptation", Schema::string().default_value("t2.adaptation"),
                "Transformer² decisions (\"\": none)")
      .optional("end_on", Schema::list(Schema::string()).default_value("[tokens, blt.patches]"),
                "topics whose EndOfStream must all arrive before the report is written")
      .optional("compressors", Schema::boolean().default_value("true"),
                "run xz -9e, bzip2 -9, zstd -19 and zpaq -m5 on each domain's bytes")
      .optional("plots", Schema::boolean().default_value("true"),
                "write bits_per_byte.png, patch_sizes.png (gnuplot) and images.png")
      .optional("codebook", Schema::string().default_value("models/mvot/codebook.msgpack"),
                "codebook that decodes the image strip's reconstructions")
      .optional("images",
                Schema::string().default_value(
                    "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
                "IDX file the image strip reads the originals from");
}

void Report::configure(const YAML::Node& config, components::Context& ctx) {
  auto str = [&](const char* key, std::string fallback) {
    return config[key] ? config[key].as<std::string>() : fallback;
  };
  report_name_ = str("report", report_name_);
  compressors_ = config["compressors"] ? config["compressors"].as<bool>() : true;
  plots_ = config["plots"] ? config["plots"].as<bool>() : true;
  codebook_ = str("codebook", codebook_);
  idx_images_ = str("images", idx_images_);
  const auto tokens = str("tokens", "tokens"), patches = str("patches", "blt.patches"),
             scores = str("scores", "blt.scores"), adaptation = str("adaptation", "t2.adaptation");
  end_on_ = config["end_on"] ? config["end_on"].as<std::vector<std::string>>()
                             : std::vector<std::string>{tokens, patches};
  auto& node = ctx.node();
  bus::subscribe<mvot::Tokens>(node, tokens, [this](const mvot::Tokens& t, const bus::Message& m) {
    auto& r = items_[t.doc_id];
    r.path = t.path;
    r.modality = t.modality;
    r.item_bytes = t.item_bytes;
    r.images = t.images;
    r.psnr_db = t.psnr_db;
    if (t.modality == "image") {
      r.codes = t.images * 49;
      for (const auto& v : m.tensors()) {
        if (v.desc().name == "tokens") r.image_tokens = v.to_vector<std::int32_t>();
      }
      return;
    }
    for (const auto& v : m.tensors()) {
      if (v.desc().name != "tokens") continue;
      for (std::int32_t tok : v.to_vector<std::int32_t>()) {
        if (tok >= 0 && tok < 256) r.text.push_back(static_cast<std::uint8_t>(tok));
      }
    }
  });
  if (!patches.empty()) {
    bus::subscribe<blt::Patches>(node, patches, [this](const blt::Patches& p, const bus::Message&) {
      auto& r = items_[p.doc_id];
      r.patches += p.lengths.size();
      for (auto len : p.lengths) {
        r.patch_tokens += len;
        ++patch_sizes_[len];
      }
    });
  }
  if (!scores.empty()) {
    bus::subscribe<blt::Scores>(node, scores, [this](const blt::Scores& s, const bus::Message& m) {
      if (s.variants.size() != s.bits.size()) {
        ++rejected_;
        return;
      }
      auto& r = items_[s.doc_id];
      for (std::size_t v = 0; v < s.variants.size(); ++v) r.bits[s.variants[v]] = s.bits[v];
      r.scored_bytes = s.bytes;
      r.token_count = s.token_count;
      // Recompute each variant's code length from the logged per-token log-probabilities:
      // targets 1 .. token_count-1, of which the last (EOS) is not a byte for a text item.
      for (const auto& t : m.tensors()) {
        if (t.desc().name != "logprob" || t.desc().dtype != bus::DType::f32) continue;
        const auto lp = t.to_vector<float>();
        const std::size_t n = s.token_count > 0 ? s.token_count - 1 : 0;
        if (n == 0 || lp.size() != n * s.variants.size() || s.modality != "text") break;
        for (std::size_t v = 0; v < s.variants.size(); ++v) {
          double nats = 0.0;
          for (std::size_t i = 0; i + 1 < n; ++i) nats -= lp[v * n + i];
          r.logged_bits[s.variants[v]] = nats / std::log(2.0);
        }
      }
    });
  }
  if (!adaptation.empty()) {
    bus::subscribe<blt::Adaptation>(node, adaptation,
                                    [this](const blt::Adaptation& a, const bus::Message&) {
                                      auto& r = items_[a.doc_id];
                                      r.detected_domain = a.domain;
                                      r.confidence = a.confidence;
                                    });
  }
  for (const auto& topic : end_on_) {
    ended_[topic] = false;
    bus::subscribe<components::EndOfStream>(
        node, topic,
        [this, topic, tokens, &ctx](const components::EndOfStream& eos, const bus::Message&) {
          if (topic == tokens) source_items_ = eos.items;
          ended_[topic] = true;
          maybe_finish(ctx);
        });
  }
}

void Report::maybe_finish(components::Context& ctx) {
  if (written_) return;
  for (const auto& [topic, ended] : ended_) {
    if (!ended) return;
  }
  write(ctx, false);
  ctx.finish(
      nlohmann::json{{"report", (ctx.out_dir() / report_name_).string()}, {"items", items_.size()}}
          .dump());
}

void Report::shutdown(components::Context& ctx) {
  if (!written_) write(ctx, true);
}

void Report::write(components::Context& ctx, bool partial) {
  auto report = build_report(items_, patch_sizes_, compressors_ && !partial, source_items_);
  if (partial) report["partial"] = true;
  std::filesystem::create_directories(ctx.out_dir());
  const auto path = ctx.out_dir() / report_name_;
  std::ofstream(path) << report.dump(2) << "\n";
  written_ = true;
  ctx.log().info("wrote {} ({} items{})", path.string(), items_.size(),
                 partial ? ", partial: the run was stopped" : "");
  if (plots_ && !partial) {
    const auto plots = write_plots(report, items_, ctx.out_dir(),
                                   components::resolve_path(codebook_), idx_images_);
    for (const auto& f : plots["written"]) ctx.log().info("wrote {}", f.get<std::string>());
    for (const auto& [f, why] : plots["skipped"].items())
      ctx.log().warn("no {}: {}", f, why.get<std::string>());
  }
}

nlohmann::json Report::stats() const {
  return {{"items", items_.size()}, {"rejected", rejected_}, {"written", written_}};
}

}  // namespace neat::job
