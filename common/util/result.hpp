// Result<T>: a value or an error string. Used wherever untrusted input or the
// environment can fail; no exceptions cross an event loop.
// Included by every process.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace derpd {

struct Error {
  std::string message;
};

inline Error makeError(std::string msg) { return Error{std::move(msg)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}              // NOLINT: implicit by design
  Result(Error err) : v_(std::move(err)) {}              // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }

  const std::string& error() const { return std::get<1>(v_).message; }
  Error takeError() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error err) : err_(std::move(err.message)), failed_(true) {}  // NOLINT
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const std::string& error() const { return err_; }
  Error takeError() && { return Error{std::move(err_)}; }

 private:
  std::string err_;
  bool failed_ = false;
};

inline Result<void> okResult() { return Result<void>(); }

}  // namespace derpd
