// cert-agent's certificate directory, opened once while derpd's privileges
// still apply and used through the descriptor afterwards (openat/renameat),
// so the directory's parents need not be searchable by cert-user. Also the
// inotify watch that reloads manual certificates when their files change.
// Included by cert-agent only.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/util/result.hpp"

namespace derpd::certagent {

class CertDir {
 public:
  static Result<CertDir> open(const std::string& path);
  CertDir(CertDir&& o) noexcept;
  CertDir& operator=(CertDir&&) = delete;
  CertDir(const CertDir&) = delete;
  ~CertDir();

  const std::string& path() const { return path_; }
  std::string pathOf(std::string_view name) const { return path_ + "/" + std::string(name); }

  // The file `name` in the directory (symlinks followed), at most maxBytes.
  // `*missing` is set when it does not exist.
  Result<std::string> read(std::string_view name, size_t maxBytes, bool* missing = nullptr) const;
  // Temp file + fsync + rename, mode `mode`.
  Result<void> writeAtomic(std::string_view name, std::string_view data, mode_t mode) const;

  // Starts an inotify watch on the directory (creations, writes, renames,
  // deletions, attribute changes). Returns the inotify fd (non-blocking).
  Result<int> watch();
  int watchFd() const { return inotifyFd_; }
  // Reads the pending events; true when one names a file in `names`.
  bool drainEvents(std::initializer_list<std::string_view> names);

 private:
  CertDir(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
  int inotifyFd_ = -1;
};

}  // namespace derpd::certagent
