// source: files to chunks on input.item.
#include "neat/components/source.hpp"

#include <algorithm>
#include <system_error>

#include "neat/components/messages.hpp"

namespace neat::components {

namespace fs = std::filesystem;

config::Schema Source::schema() {
  using config::Schema;
  return Schema::map()
      .optional("inputs",
                Schema::list(Schema::string()).default_value("[/usr/share/games/fortunes]"),
                "files or directories (default: Debian's English fortunes, "
                "/usr/share/games/fortunes)")
      .optional("recursive", Schema::boolean().default_value("false"),
                "descend into sub-directories")
      .optional("skip_suffixes", Schema::list(Schema::string()).default_value("[.dat]"),
                "file name endings to skip (default: .dat, the fortune index files)")
      .optional("chunk_bytes", Schema::integer(1, 64 << 20).default_value("4096"),
                "bytes per published chunk")
      .optional("topic", Schema::string().default_value("input.item"), "output topic");
}

void list_inputs(const std::vector<std::string>& inputs, bool recursive,
                 const std::vector<std::string>& skip_suffixes, std::vector<fs::path>& files,
                 std::vector<std::string>& unreadable) {
  auto skipped = [&](const fs::path& p) {
    const auto name = p.filename().string();
    return std::any_of(skip_suffixes.begin(), skip_suffixes.end(),
                       [&](const std::string& s) { return name.ends_with(s); });
  };
  for (const auto& input : inputs) {
    std::error_code ec;
    const fs::path p(input);
    auto st = fs::status(p, ec);
    if (ec || !fs::exists(st)) {
      unreadable.push_back(input + ": " + (ec ? ec.message() : "no such file or directory"));
      continue;
    }
    if (fs::is_directory(st)) {
      std::vector<fs::path> found;
      auto add = [&](const fs::directory_entry& e) {
        std::error_code fe;
        if (e.is_regular_file(fe) && !skipped(e.path())) found.push_back(e.path());
      };
      if (recursive) {
        for (fs::recursive_directory_iterator
                 it(p, fs::directory_options::skip_permission_denied, ec),
             end;
             !ec && it != end; it.increment(ec)) {
          add(*it);
        }
      } else {
        for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec)) add(*it);
      }
      if (ec) unreadable.push_back(input + ": " + ec.message());
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (!skipped(p)) {
      files.push_back(p);
    }
  }
}

void Source::configure(const YAML::Node& config, Context& ctx) {
  std::vector<std::string> inputs = {"/usr/share/games/fortunes"};
  std::vector<std::string> skip = {".dat"};
  if (config["inputs"]) inputs = config["inputs"].as<std::vector<std::string>>();
  if (config["skip_suffixes"]) skip = config["skip_suffixes"].as<std::vector<std::string>>();
  if (config["chunk_bytes"]) chunk_bytes_ = config["chunk_bytes"].as<std::size_t>();
  if (config["topic"]) topic_ = config["topic"].as<std::string>();
  const bool recursive = config["recursive"] && config["recursive"].as<bool>();
  list_inputs(inputs, recursive, skip, files_, unreadable_);
  for (const auto& u : unreadable_) ctx.log().warn("skipping unreadable input {}", u);
  ctx.log().info("{} input files", files_.size());
}

bool Source::open_next(Context& ctx) {
  while (next_file_ < files_.size()) {
    const auto& p = files_[next_file_];
    doc_id_ = next_file_++;
    std::error_code ec;
    auto size = fs::file_size(p, ec);
    in_ = std::ifstream(p, std::ios::binary);
    if (ec || !in_) {
      unreadable_.push_back(p.string() + ": " + (ec ? ec.message() : "cannot open"));
      ctx.log().warn("skipping unreadable input {}", unreadable_.back());
      continue;
    }
    path_ = p.string();
    item_bytes_ = size;
    offset_ = 0;
    in_item_ = true;
    return true;
  }
  return false;
}

bool Source::step(Context& ctx) {
  if (eos_sent_) return false;
  if (!in_item_ && !open_next(ctx)) {
    bus::publish(ctx.node(), topic_, EndOfStream{items_, bytes_});
    eos_sent_ = true;
    ctx.log().info("sent {} items, {} bytes", items_, bytes_);
    ctx.finish(stats().dump());
    return false;
  }
  std::vector<std::uint8_t> chunk(chunk_bytes_);
  in_.read(reinterpret_cast<char*>(chunk.data()), static_cast<std::streamsize>(chunk.size()));
  chunk.resize(static_cast<std::size_t>(in_.gcount()));
  const bool last = offset_ + chunk.size() >= item_bytes_ || !in_;
  InputChunk msg{doc_id_, path_, offset_, item_bytes_, last};
  const auto n = static_cast<std::int64_t>(chunk.size());
  offset_ += chunk.size();
  bytes_ += chunk.size();
  bus::publish(ctx.node(), topic_, msg,
               {bus::TensorOut::from_vector("bytes", bus::DType::u8, {n}, std::move(chunk))});
  if (last) {
    ++items_;
    in_item_ = false;
    in_.close();
  }
  return true;
}

nlohmann::json Source::stats() const {
  return {{"files", files_.size()},
          {"items_sent", items_},
          {"bytes_sent", bytes_},
          {"unreadable", unreadable_},
          {"progress", {{"items_total", files_.size()}}}};
}

std::string Source::snapshot() const {
  // The exact position: the item being sent and the offset of its next chunk, so that a
  // restored source continues with the same chunks (and sequence numbers) it would have sent.
  msgpack::sbuffer buf;
  msgpack::pack(buf,
                std::make_tuple(next_file_, in_item_, doc_id_, offset_, items_, bytes_, eos_sent_));
  return {buf.data(), buf.size()};
}

void Source::restore(std::string_view bytes) {
  std::tuple<std::size_t, bool, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t, bool> t;
  try {
    auto h = msgpack::unpack(bytes.data(), bytes.size());
    h.get().convert(t);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("source: corrupt snapshot: ") + e.what());
  }
  std::tie(next_file_, in_item_, doc_id_, offset_, items_, bytes_, eos_sent_) = t;
  in_.close();
  if (in_item_) {
    const auto& p = files_.at(doc_id_);
    in_ = std::ifstream(p, std::ios::binary);
    in_.seekg(static_cast<std::streamoff>(offset_));
    path_ = p.string();
    item_bytes_ = fs::file_size(p);
  }
}

}  // namespace neat::components
