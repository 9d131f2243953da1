// bench_blt: streaming entropy + patching throughput (BLT, Pagnoni et al. 2024, §2.3) at batch 1
// with the KV cache, for the shipped byte LM (models/blt/byte_lm.bf16.ckpt): neat against the
// same model in PyTorch (bench/blt/torch_stream.py), in the same run, on the same real bytes, at
// the same thread count. Two stream shapes, the same on both sides:
//  - token:    the bytes arrive one at a time; each token is one cached forward step
//              (blt::EntropyStream::push with one token), the latency-bound case;
//  - document: the whole document is pushed at once (blt::next_token_entropies): each context
//              window of up to max_seq_len tokens is one cached forward call (causal within it).
// Each pass then takes the global-threshold patch starts (blt::patch_starts, BLT eq. 3).
//
// The weights go to PyTorch through a temporary directory: one raw little-endian float32 file
// per parameter (names from nn::Module::named_parameters) and index.json with names, shapes
// and the architecture. neat's entropies and patch starts go along, so the script first checks
// that its entropies match (max |diff| <= 1e-3 nats, else it fails and so does this bench) and
// that the patch starts agree, then times itself. Throughput is input bytes / seconds for the
// whole stream, median of the repeats; beside it the ratio of the process CPU seconds (medians),
// which a busy machine disturbs less than the wall clock, and the range of the per-repeat
// ratios.
//
// Same BLAS kernels on both sides: OpenBLAS picks its kernels by CPU model and falls back to SSE3
// ("Prescott") on CPUs it does not know; like the neat binary, the bench then sets
// OPENBLAS_CORETYPE to what the CPU's features allow (nn::better_blas_core) and re-executes
// itself once, and the PyTorch child inherits the variable; both report the kernel set they use.
//
// After the comparison, the per-token cost of the paths of a step (1 thread, CPU time): the
// token decoder (nn::TokenDecoder) with bfloat16 and with float32 weights, the tensor path
// (TransformerLM::forward_cached with one token), and the bare 25 weight products through
// OpenBLAS (cblas_sgemm with M = 1, as nn::matmul calls it) and Eigen's matrix-vector product.
//
// Usage: bench_blt [--model PATH] [--input FILE] [--bytes N] [--threads 1,2] [--repeats R]
//                  [--modes token,document] [--threshold THETA]
// Default input: the first 4096 bytes of Debian's /usr/share/games/fortunes/fortunes (package
// fortunes-min), or of the repository's README.md where that file is absent.
#include <cblas.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include "neat/blt/byte_lm.hpp"
#include "neat/blt/entropy_stream.hpp"
#include "neat/blt/patcher.hpp"
#include "neat/hardware/detect.hpp"
#include "neat/nn/decode.hpp"
#include "neat/nn/ops.hpp"

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// CPU seconds of this process (all its threads, OpenBLAS's included).
double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double load_average() {
  double load[1] = {0.0};
  return getloadavg(load, 1) == 1 ? load[0] : -1.0;
}

// The machine line of the results: the CPU model as hardware detection reads it.
std::string cpu_model() {
  const auto model = neat::hardware::detect_hardware().cpu_model;
  return model.empty() ? "unknown" : model;
}

enum class StreamShape { token, document };

const char* shape_name(StreamShape shape) {
  return shape == StreamShape::token ? "token" : "document";
}

struct Options {
  fs::path model = fs::path(NEAT_SOURCE_DIR) / "models/blt/byte_lm.bf16.ckpt";
  fs::path input;
  std::size_t bytes = 4096;
  std::vector<int> threads = {1, 2};
  std::vector<StreamShape> shapes = {StreamShape::token, StreamShape::document};
  int repeats = 5;
  double threshold = neat::blt::PatcherOptions{}.threshold;
};

std::vector<std::string> split_list(const std::string& text, const std::string& option) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  if (out.empty()) throw std::invalid_argument(option + ": empty list");
  return out;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(arg + ": missing value (see the usage line)");
    const std::string value = argv[++i];
    if (arg == "--model") {
      o.model = value;
    } else if (arg == "--input") {
      o.input = value;
    } else if (arg == "--bytes") {
      o.bytes = static_cast<std::size_t>(std::stoull(value));
    } else if (arg == "--threads") {
      o.threads.clear();
      for (const auto& item : split_list(value, arg)) {
        const int n = std::atoi(item.c_str());
        if (n <= 0)
          throw std::invalid_argument("--threads: '" + item + "' is not a positive count");
        o.threads.push_back(n);
      }
    } else if (arg == "--modes") {
      o.shapes.clear();
      for (const auto& item : split_list(value, arg)) {
        if (item == "token") {
          o.shapes.push_back(StreamShape::token);
        } else if (item == "document") {
          o.shapes.push_back(StreamShape::document);
        } else {
          throw std::invalid_argument("--modes: '" + item + "' is neither token nor document");
        }
      }
    } else if (arg == "--repeats") {
      o.repeats = std::stoi(value);
    } else if (arg == "--threshold") {
      o.threshold = std::stod(value);
    } else {
      throw std::invalid_argument("unknown option " + arg);
    }
  }
  if (o.repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
  if (o.bytes < 1) throw std::invalid_argument("--bytes must be at least 1");
  if (o.input.empty()) {
    const fs::path fortunes = "/usr/share/games/fortunes/fortunes";
    o.input = fs::exists(fortunes) ? fortunes : fs::path(NEAT_SOURCE_DIR) / "README.md";
  }
  return o;
}

std::vector<std::uint8_t> read_prefix(const fs::path& file, std::size_t max_bytes) {
  std::ifstream f(file, std::ios::binary);
  if (!f) throw std::runtime_error(file.string() + ": cannot open the input");
  std::vector<std::uint8_t> bytes(max_bytes);
  f.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(max_bytes));
  bytes.resize(static_cast<std::size_t>(f.gcount()));
  if (bytes.empty()) throw std::runtime_error(file.string() + ": empty input");
  return bytes;
}

template <typename T>
void write_raw(const fs::path& file, const T* data, std::size_t count) {
  std::ofstream f(file, std::ios::binary);
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(T)));
  if (!f) throw std::runtime_error(file.string() + ": write failed");
}

// The model's parameters as one float32 file each plus index.json (names, shapes, files, the
// architecture) and the input tokens (int32).
void export_model(const fs::path& dir, const neat::nn::TransformerLM<float>& model,
                  const std::vector<std::int32_t>& tokens, double threshold) {
  nlohmann::json params = nlohmann::json::array();
  std::size_t i = 0;
  for (const auto& [name, tensor] : model.named_parameters()) {
    const neat::nn::Tensor<float> dense = tensor.contiguous();
    const std::string file = "p" + std::to_string(i++) + ".f32";
    write_raw(dir / file, dense.data(), static_cast<std::size_t>(dense.numel()));
    params.push_back({{"name", name}, {"shape", dense.shape()}, {"file", file}});
  }
  const auto& c = model.config();
  const nlohmann::json index = {{"config", neat::blt::model_config_json(c)},
                                {"norm_eps", c.norm_eps},
                                {"activation", "gelu_tanh"},
                                {"parameters", params},
                                {"threshold", threshold},
                                {"tokens", tokens.size()}};
  std::ofstream(dir / "index.json") << index.dump(1);
  write_raw(dir / "tokens.i32", tokens.data(), tokens.size());
}

// The export directory, removed on every way out of the bench.
struct TempDir {
  explicit TempDir(fs::path p) : path(std::move(p)) { fs::create_directories(path); }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  fs::path path;
};

struct StreamResult {
  std::vector<double> entropies;  ///< H_i, nats
  std::vector<std::uint8_t> starts;
  double seconds = 0.0;      ///< wall clock
  double cpu_seconds = 0.0;  ///< process CPU time
};

// One pass over the document as the blt component runs it: entropies with the KV cache (token
// by token, or the whole document pushed at once), then the global-threshold patch starts.
StreamResult stream_once(const neat::nn::TransformerLM<float>& model,
                         const std::vector<std::int32_t>& tokens, StreamShape shape,
                         const neat::blt::PatcherOptions& patching) {
  StreamResult r;
  const double cpu0 = process_cpu_seconds();
  const auto t0 = Clock::now();
  if (shape == StreamShape::token) {
    neat::blt::EntropyStream stream(model);
    neat::blt::EntropyStreamOutput out;
    for (const std::int32_t& token : tokens) stream.push({&token, 1}, out);
    r.entropies = std::move(out.entropies);
  } else {
    r.entropies = neat::blt::next_token_entropies(model, tokens);
  }
  r.starts = neat::blt::patch_starts(r.entropies, tokens, patching);
  r.seconds = seconds_since(t0);
  r.cpu_seconds = process_cpu_seconds() - cpu0;
  return r;
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// The PyTorch side as a child process (Debian's /usr/bin/python3, which has python3-torch),
// spoken to over its stdin and stdout so that neat's and PyTorch's repeats can alternate: on
// start it loads the export in `dir`, checks its entropies against neat's and answers one JSON
// line; then each "run" line makes it time one pass and answer with the seconds. Its
// diagnostics go to this process's stderr.
class TorchStream {
 public:
  TorchStream(const fs::path& dir, StreamShape shape, int threads) {
    const std::string script = (fs::path(NEAT_SOURCE_DIR) / "bench/blt/torch_stream.py").string();
    const std::string n = std::to_string(threads);
    const std::string cmd = "OMP_NUM_THREADS=" + n + " OPENBLAS_NUM_THREADS=" + n +
                            " MKL_NUM_THREADS=" + n + " exec /usr/bin/python3 " +
                            shell_quote(script) + " --dir " + shell_quote(dir.string()) +
                            " --mode " + shape_name(shape) + " --threads " + n;
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0)
      throw std::runtime_error("bench_blt: pipe() failed");
    std::fflush(nullptr);
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("bench_blt: fork() failed");
    if (pid_ == 0) {
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
      for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) close(fd);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    in_ = fdopen(to_child[1], "w");
    out_ = fdopen(from_child[0], "r");
  }
  TorchStream(const TorchStream&) = delete;
  TorchStream& operator=(const TorchStream&) = delete;
  ~TorchStream() { finish(); }

  /// The next line from the child as JSON; an object with "error" at end of output.
  nlohmann::json read() {
    char buf[4096];
    if (!out_ || !std::fgets(buf, sizeof buf, out_)) {
      const int status = finish();
      return {{"error", "torch_stream.py ended (exit status " + std::to_string(status) +
                            "); its message is above"}};
    }
    auto j = nlohmann::json::parse(buf, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      return {{"error", std::string("torch_stream.py answered: ") + buf}};
    return j;
  }
  /// Times one PyTorch pass (wall and process CPU seconds); throws std::runtime_error when the
  /// child fails.
  std::pair<double, double> run_once() {
    std::fputs("run\n", in_);
    std::fflush(in_);
    const auto j = read();
    if (j.contains("error")) throw std::runtime_error(j["error"].get<std::string>());
    return {j.at("seconds").get<double>(), j.at("cpu_seconds").get<double>()};
  }
  /// Closes the pipes and waits for the child; its exit status.
  int finish() {
    if (in_) std::fclose(std::exchange(in_, nullptr));
    if (out_) std::fclose(std::exchange(out_, nullptr));
    int status = 0;
    if (pid_ > 0) waitpid(std::exchange(pid_, -1), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

// CPU microseconds per token of each path of a single-position step over the document's tokens
// (1 thread; the context restarts every max_seq_len positions as in the stream): the token
// decoder with bfloat16 and with float32 weights, the tensor path, and the 25 weight products
// alone (wq wk wv wo up down per block, lm_head) through cblas_sgemm with M = 1 and the (out, in)
// weight transposed (as nn::matmul issues them) and through Eigen's matrix-vector product.
void step_paths(const neat::nn::TransformerLM<float>& model,
                const std::vector<std::int32_t>& tokens, double stream_cpu_seconds) {
  neat::nn::NoGradGuard no_grad;
  const auto& c = model.config();
  const double n = static_cast<double>(tokens.size());
  double checksum = 0.0;
  auto decode = [&](neat::nn::TokenDecoder& decoder) {
    auto cache = model.make_cache(1);
    const double t0 = process_cpu_seconds();
    for (const std::int32_t token : tokens) {
      if (cache.front().length >= c.max_seq_len)
        for (auto& layer : cache) layer.length = 0;
      decoder.step(token, cache);
      checksum += decoder.logits()[0];
    }
    return process_cpu_seconds() - t0;
  };
  neat::nn::TokenDecoder automatic(model), f32(model, neat::nn::DecodeWeights::f32);
  const double t_auto = decode(automatic), t_f32 = decode(f32);
  auto cache = model.make_cache(1);
  double t0 = process_cpu_seconds();
  for (const std::int32_t token : tokens) {
    if (cache.front().length >= c.max_seq_len)
      for (auto& layer : cache) layer.length = 0;
    checksum += model.forward_cached({token}, 1, cache).contiguous().data()[0];
  }
  const double t_tensors = process_cpu_seconds() - t0;
  // The tensor path with pushes of several tokens (one GEMM per weight for the chunk): where it
  // overtakes the decoder is EntropyStream::kTokenDecoderBelow.
  std::vector<std::pair<std::size_t, double>> t_chunks;
  for (const std::size_t chunk : {2u, 4u, 8u}) {
    auto chunk_cache = model.make_cache(1);
    t0 = process_cpu_seconds();
    for (std::size_t i = 0; i < tokens.size(); i += chunk) {
      const std::size_t len = std::min(chunk, tokens.size() - i);
      if (chunk_cache.front().length + static_cast<std::int64_t>(len) > c.max_seq_len)
        for (auto& layer : chunk_cache) layer.length = 0;
      const std::vector<std::int32_t> ids(tokens.begin() + static_cast<std::ptrdiff_t>(i),
                                          tokens.begin() + static_cast<std::ptrdiff_t>(i + len));
      checksum += model.forward_cached(ids, 1, chunk_cache).contiguous().data()[0];
    }
    t_chunks.emplace_back(chunk, process_cpu_seconds() - t0);
  }

  std::vector<const neat::nn::Tensor<float>*> weights;
  for (const auto& block : model.blocks) {
    for (const auto* w : {&block->attn.wq.weight, &block->attn.wk.weight, &block->attn.wv.weight,
                          &block->attn.wo.weight, &block->mlp.up.weight, &block->mlp.down.weight})
      weights.push_back(w);
  }
  weights.push_back(&model.lm_head.weight);
  const auto widest = static_cast<std::size_t>(std::max({c.dim, c.mlp_hidden, c.vocab_size}));
  std::vector<float> in(widest, 0.5f), out(widest);
  auto bare = [&](bool eigen) {
    const double start = process_cpu_seconds();
    for (std::size_t k = 0; k < tokens.size(); ++k) {
      for (const auto* w : weights) {
        const int rows = static_cast<int>(w->shape()[0]), cols = static_cast<int>(w->shape()[1]);
        if (eigen) {
          using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
          Eigen::Map<const RowMajor> weight(w->data(), rows, cols);
          Eigen::Map<const Eigen::VectorXf> input(in.data(), cols);
          Eigen::Map<Eigen::VectorXf>(out.data(), rows).noalias() = weight * input;
        } else {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, rows, cols, 1.0f, in.data(), cols,
                      w->data(), cols, 0.0f, out.data(), rows);
        }
      }
      in[0] += 1e-9f * out[0];  // each step depends on the last, as in the model
    }
    return process_cpu_seconds() - start;
  };
  const double t_blas = bare(false), t_eigen = bare(true);

  std::printf(
      "\nPer-token cost of the step's paths, 1 thread, %zu tokens, CPU time (checksum %.3f):"
      "\n\n| path | CPU us/token |\n|---|---:|\n",
      tokens.size(), checksum);
  auto row = [&](const std::string& name, double seconds) {
    std::printf("| %s | %.1f |\n", name.c_str(), 1e6 * seconds / n);
  };
  row("the timed token stream (EntropyStream::push, entropy and patching included; median)",
      stream_cpu_seconds);
  row(std::string("TokenDecoder::step, automatic weights (") +
          (automatic.bf16_weights() ? "bfloat16" : "float32") + ")",
      t_auto);
  row("TokenDecoder::step, float32 weights", t_f32);
  row("TransformerLM::forward_cached with one token (tensors, nn::matmul)", t_tensors);
  for (const auto& [chunk, seconds] : t_chunks)
    row("TransformerLM::forward_cached with " + std::to_string(chunk) + " tokens per call",
        seconds);
  row("the " + std::to_string(weights.size()) +
          " float32 weight products alone: cblas_sgemm M = 1 (as nn::matmul)",
      t_blas);
  row("the " + std::to_string(weights.size()) +
          " float32 weight products alone: Eigen matrix-vector (Map over the weights)",
      t_eigen);
}

}  // namespace

// The comparison and the step paths; returns 1 when the PyTorch side failed its check.
int run_bench(const Options& o) {
  const auto model = neat::blt::load_byte_lm(o.model);
  const auto bytes = read_prefix(o.input, o.bytes);
  const auto tokens = neat::blt::document_tokens(bytes);
  neat::blt::PatcherOptions patching;
  patching.mode = neat::blt::PatchMode::global;
  patching.threshold = o.threshold;
  const auto& c = model->config();
  std::printf("bench_blt: %s (vocab %ld, dim %ld, %ld layers, %ld heads, MLP %ld, context %ld)\n",
              o.model.c_str(), static_cast<long>(c.vocab_size), static_cast<long>(c.dim),
              static_cast<long>(c.layers), static_cast<long>(c.heads),
              static_cast<long>(c.mlp_hidden), static_cast<long>(c.max_seq_len));
  std::printf("input: first %zu bytes of %s (%zu tokens with BOS and EOS), global threshold %.6f\n",
              bytes.size(), o.input.c_str(), tokens.size(), o.threshold);
  const char* fallback = std::getenv("NEAT_BLAS_FALLBACK");
  std::printf(
      "machine: %s, %ld hardware threads, OpenBLAS kernels '%s'%s%s%s; load average (1 min) at "
      "start %.2f\n",
      cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN), openblas_get_corename(),
      fallback ? " (OPENBLAS_CORETYPE set by the bench; OpenBLAS chose '" : "",
      fallback ? fallback : "", fallback ? "' by itself)" : "", load_average());
  {
    const neat::nn::TokenDecoder decoder(*model);
    std::printf("token decoder weights: %s\n",
                decoder.bf16_weights() ? "bfloat16 (every weight of the checkpoint is bf16-exact)"
                                       : "float32");
  }

  const TempDir export_dir(fs::temp_directory_path() / ("bench_blt_" + std::to_string(::getpid())));
  const fs::path& dir = export_dir.path;
  export_model(dir, *model, tokens, o.threshold);
  struct Row {
    StreamShape shape = StreamShape::token;
    int threads = 1;
    double neat_bps = 0, torch_bps = 0, cpu_ratio = 0, low = 0, high = 0;
    std::string torch_note;
  };
  std::vector<Row> rows;
  bool failed = false;
  double token_stream_cpu = 0.0;
  for (const int threads : o.threads) {
    neat::nn::set_num_threads(threads);
    for (const StreamShape shape : o.shapes) {
      const auto reference = stream_once(*model, tokens, shape, patching);  // also the warm-up
      const auto patches = neat::blt::patches_from_starts(reference.starts);
      std::printf("\n[%s stream, %d thread%s] %zu patches (mean %.2f tokens)\n", shape_name(shape),
                  threads, threads == 1 ? "" : "s", patches.size(),
                  static_cast<double>(tokens.size()) / static_cast<double>(patches.size()));
      std::fflush(stdout);
      write_raw(dir / "entropies.f64", reference.entropies.data(), reference.entropies.size());
      write_raw(dir / "starts.u8", reference.starts.data(), reference.starts.size());
      TorchStream torch(dir, shape, threads);
      const auto check = torch.read();  // loads the export, checks, warms up
      Row row;
      row.shape = shape;
      row.threads = threads;
      std::vector<double> neat_seconds, neat_cpu, torch_seconds, torch_cpu;
      auto run_neat = [&] {
        const auto run = stream_once(*model, tokens, shape, patching);
        if (run.entropies != reference.entropies)
          throw std::runtime_error("neat's entropies changed between repeats");
        neat_seconds.push_back(run.seconds);
        neat_cpu.push_back(run.cpu_seconds);
      };
      if (check.contains("error")) {
        std::printf("PyTorch: FAILED: %s\n", check["error"].get<std::string>().c_str());
        row.torch_note = "failed";
        failed = true;
      } else if (!check.value("available", false)) {
        std::printf("PyTorch: not available (%s)\n", check.value("reason", "").c_str());
        row.torch_note = "not available";
      } else {
        std::printf(
            "PyTorch %s, %d threads, OpenBLAS kernels '%s': entropies max |neat - torch| = %.2e "
            "nats; patch starts differing: %ld (all within 1e-3 of the threshold)\n",
            check["torch"].get<std::string>().c_str(), check["threads"].get<int>(),
            check.value("openblas_core", std::string("unknown")).c_str(),
            check["max_abs_entropy_diff"].get<double>(), check["starts_differing"].get<long>());
        // Alternate which side goes first, so that a change of load hits both alike.
        for (int r = 0; r < o.repeats; ++r) {
          if (r % 2 == 0) run_neat();
          const auto [wall, cpu] = torch.run_once();
          torch_seconds.push_back(wall);
          torch_cpu.push_back(cpu);
          if (r % 2 == 1) run_neat();
        }
        row.torch_bps = static_cast<double>(bytes.size()) / median(torch_seconds);
        row.cpu_ratio = median(torch_cpu) / median(neat_cpu);
        std::vector<double> ratios;
        for (int r = 0; r < o.repeats; ++r) ratios.push_back(torch_seconds[r] / neat_seconds[r]);
        row.low = *std::min_element(ratios.begin(), ratios.end());
        row.high = *std::max_element(ratios.begin(), ratios.end());
      }
      torch.finish();
      while (static_cast<int>(neat_seconds.size()) < o.repeats) run_neat();
      const double neat_s = median(neat_seconds);
      row.neat_bps = static_cast<double>(bytes.size()) / neat_s;
      if (threads == 1 && shape == StreamShape::token) token_stream_cpu = median(neat_cpu);
      std::printf("neat: median %.3f s (CPU %.3f s), %.0f bytes/s", neat_s, median(neat_cpu),
                  row.neat_bps);
      if (row.torch_bps > 0)
        std::printf("; PyTorch: median %.3f s (CPU %.3f s), %.0f bytes/s", median(torch_seconds),
                    median(torch_cpu), row.torch_bps);
      std::printf(" (%d repeats each, alternating)\n", o.repeats);
      rows.push_back(row);
    }
  }

  std::printf(
      "\n| stream | threads | bytes | neat bytes/s | PyTorch bytes/s | neat / PyTorch | per-repeat "
      "range | CPU-time ratio |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows) {
    if (r.torch_bps > 0) {
      std::printf("| %s | %d | %zu | %.0f | %.0f | %.2fx | %.2f-%.2fx | %.2fx |\n",
                  shape_name(r.shape), r.threads, bytes.size(), r.neat_bps, r.torch_bps,
                  r.neat_bps / r.torch_bps, r.low, r.high, r.cpu_ratio);
    } else {
      std::printf("| %s | %d | %zu | %.0f | %s | - | - | - |\n", shape_name(r.shape), r.threads,
                  bytes.size(), r.neat_bps, r.torch_note.c_str());
    }
  }
  std::printf(
      "(medians of %d repeats each; per-repeat range: PyTorch s / neat s of each repeat pair; "
      "CPU-time ratio: median PyTorch process CPU s / median neat process CPU s; target neat / "
      "PyTorch >= 2)\n",
      o.repeats);
  std::printf("load average (1 min) at the end of the comparison: %.2f\n", load_average());

  neat::nn::set_num_threads(1);
  if (token_stream_cpu <= 0.0)
    token_stream_cpu = stream_once(*model, tokens, StreamShape::token, patching).cpu_seconds;
  step_paths(*model, tokens, token_stream_cpu);
  return failed ? 1 : 0;
}

int main(int argc, char** argv) {
  // As the neat binary (cli/main.cpp): OpenBLAS chose its kernels by CPU model when it loaded;
  // where it fell back to lesser ones, set OPENBLAS_CORETYPE from the CPU's features and start
  // again, once. The PyTorch child inherits the variable, so both sides run the same kernels.
  // An explicit OPENBLAS_CORETYPE is left alone.
  neat::nn::use_best_blas_kernels(argv);
  Options o;
  try {
    o = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "bench_blt: %s\nusage: bench_blt [--model PATH] [--input FILE] [--bytes N] "
                 "[--threads 1,2] [--repeats R] [--modes token,document] [--threshold THETA]\n",
                 e.what());
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);  // a PyTorch child that dies shows up as an error, not a signal
  try {
    return run_bench(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_blt: %s\n", e.what());
    return 1;
  }
}
