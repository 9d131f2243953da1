// compressors.cpp: xz, bzip2 and zstd through their libraries with the command-line tools'
// settings, and zpaq through its binary (posix_spawn on a private temporary directory).
#include "neat/data/compressors.hpp"

#include <bzlib.h>
#include <fcntl.h>
#include <lzma.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <system_error>

#include "neat/hardware/detect.hpp"

extern char** environ;

namespace neat::data {
namespace {

// A directory made by mkdtemp, removed with its content on scope exit.
class TempDir {
 public:
  explicit TempDir(const std::filesystem::path& parent) {
    std::string pattern = (parent / "neat-zpaq-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("zpaq: cannot create a temporary directory under " +
                               parent.string() + ": " + std::strerror(errno));
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace

std::string_view compressor_name(Compressor compressor) {
  switch (compressor) {
    case Compressor::kXz:
      return "xz -9e";
    case Compressor::kBzip2:
      return "bzip2 -9";
    case Compressor::kZstd:
      return "zstd -19";
    case Compressor::kZpaq:
      return "zpaq -m5";
  }
  return "unknown";
}

std::optional<double> CompressionResult::bits_per_byte() const {
  if (!compressed_bytes || raw_bytes == 0) return std::nullopt;
  return 8.0 * static_cast<double>(*compressed_bytes) / static_cast<double>(raw_bytes);
}

std::uint64_t xz_compressed_bytes(std::span<const std::uint8_t> bytes) {
  // The stream encoder, as the xz tool uses it: its block header omits the sizes that the
  // single-call lzma_easy_buffer_encode() records, which would add 4 bytes.
  lzma_stream strm = LZMA_STREAM_INIT;
  lzma_ret ret = lzma_easy_encoder(&strm, 9 | LZMA_PRESET_EXTREME, LZMA_CHECK_CRC64);
  if (ret != LZMA_OK) {
    throw std::runtime_error("xz: liblzma encoder setup failed with code " +
                             std::to_string(static_cast<int>(ret)));
  }
  std::vector<std::uint8_t> out(1 << 16);
  std::uint64_t total = 0;
  strm.next_in = bytes.data();
  strm.avail_in = bytes.size();
  do {
    strm.next_out = out.data();
    strm.avail_out = out.size();
    ret = lzma_code(&strm, LZMA_FINISH);
    total += out.size() - strm.avail_out;
  } while (ret == LZMA_OK);
  lzma_end(&strm);
  if (ret != LZMA_STREAM_END) {
    throw std::runtime_error("xz: liblzma encoder failed with code " +
                             std::to_string(static_cast<int>(ret)));
  }
  return total;
}

std::uint64_t bzip2_compressed_bytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() >= UINT_MAX / 2) {
    throw std::runtime_error("bzip2: input of " + std::to_string(bytes.size()) +
                             " bytes exceeds libbz2's one-call limit");
  }
  // libbz2 documents 1% + 600 bytes as the worst-case expansion.
  unsigned int out_size = static_cast<unsigned int>(bytes.size() + bytes.size() / 100 + 600);
  std::vector<char> out(out_size);
  // bzip2's API takes non-const input; it does not write to it.
  char* in = const_cast<char*>(reinterpret_cast<const char*>(bytes.data()));
  const int ret =
      BZ2_bzBuffToBuffCompress(out.data(), &out_size, in, static_cast<unsigned int>(bytes.size()),
                               /*blockSize100k=*/9, /*verbosity=*/0,
                               /*workFactor=*/0);
  if (ret != BZ_OK) {
    throw std::runtime_error("bzip2: libbz2 failed with code " + std::to_string(ret));
  }
  return out_size;
}

std::uint64_t zstd_compressed_bytes(std::span<const std::uint8_t> bytes) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  if (!cctx) throw std::runtime_error("zstd: cannot create a compression context");
  auto check = [](std::size_t code) {
    if (ZSTD_isError(code)) {
      throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(code));
    }
    return code;
  };
  check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, 19));
  // The command-line tool writes a 4-byte XXH64 checksum and the content size by default.
  check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1));
  check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1));
  std::vector<std::uint8_t> out(ZSTD_compressBound(bytes.size()));
  return check(ZSTD_compress2(cctx.get(), out.data(), out.size(), bytes.data(), bytes.size()));
}

std::optional<std::uint64_t> zpaq_compressed_bytes(std::span<const std::uint8_t> bytes,
                                                   const CompressorOptions& options,
                                                   std::string* reason) {
  const std::string binary = hardware::find_executable(options.zpaq_binary);
  if (binary.empty()) {
    if (reason != nullptr) {
      *reason = "zpaq binary '" + options.zpaq_binary +
                "' not found (Debian package zpaq; run scripts/install-deps)";
    }
    return std::nullopt;
  }
  const TempDir dir(options.temp_dir.empty() ? std::filesystem::temp_directory_path()
                                             : options.temp_dir);
  {
    std::ofstream out(dir.path() / "d", std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) throw std::runtime_error("zpaq: cannot write " + (dir.path() / "d").string());
  }
  // Short relative names inside the temporary directory keep the archive's index the same
  // size whatever the caller's paths are.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, dir.path().c_str());
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<std::string> args{binary, "a", "a.zpaq", "d", "-m5"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error =
      posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawn_error != 0) {
    if (reason != nullptr) {
      *reason = "cannot start " + binary + ": " + std::strerror(spawn_error);
    }
    return std::nullopt;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR)
      throw std::runtime_error("zpaq: waitpid failed: " + std::string(std::strerror(errno)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("zpaq: '" + binary + " a a.zpaq d -m5' failed with status " +
                             std::to_string(status));
  }
  std::error_code ec;
  const auto size = std::filesystem::file_size(dir.path() / "a.zpaq", ec);
  if (ec) throw std::runtime_error("zpaq: no archive written: " + ec.message());
  return size;
}

CompressionResult compress_stream(Compressor compressor, std::span<const std::uint8_t> bytes,
                                  const CompressorOptions& options) {
  CompressionResult result;
  result.compressor = compressor;
  result.raw_bytes = bytes.size();
  switch (compressor) {
    case Compressor::kXz:
      result.compressed_bytes = xz_compressed_bytes(bytes);
      break;
    case Compressor::kBzip2:
      result.compressed_bytes = bzip2_compressed_bytes(bytes);
      break;
    case Compressor::kZstd:
      result.compressed_bytes = zstd_compressed_bytes(bytes);
      break;
    case Compressor::kZpaq:
      result.compressed_bytes = zpaq_compressed_bytes(bytes, options, &result.unavailable_reason);
      break;
  }
  return result;
}

CompressionResult compress_documents(Compressor compressor,
                                     const std::vector<std::span<const std::uint8_t>>& documents,
                                     const CompressorOptions& options) {
  CompressionResult total;
  total.compressor = compressor;
  total.compressed_bytes = 0;
  for (const auto& document : documents) {
    const CompressionResult one = compress_stream(compressor, document, options);
    if (!one.compressed_bytes) {
      total.compressed_bytes.reset();
      total.unavailable_reason = one.unavailable_reason;
      total.raw_bytes = 0;
      for (const auto& d : documents) total.raw_bytes += d.size();
      return total;
    }
    total.raw_bytes += one.raw_bytes;
    *total.compressed_bytes += *one.compressed_bytes;
  }
  return total;
}

}  // namespace neat::data
