// ClientInfo / ServerInfo JSON with Go encoding/json semantics.
//
// Parsing goes through nlohmann's SAX interface (no DOM for untrusted input,
// nesting depth bounded). nlohmann is stricter than Go in a few places and
// laxer in others, so the input first goes through normalizeGoJson()
// (common/util/go_json.hpp). A number it rewrites to 0.0 because it
// overflows a double keeps every decision here (skipped: accepted; into an
// int: rejected, as Go's ParseInt fails too).
#include "common/proto/derp/client_info.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>

#include "common/util/go_json.hpp"

namespace derpd::derp {

namespace {

constexpr size_t kMaxJsonLen = 256 * 1024;
constexpr int kMaxDepth = 64;

// One known field of the target struct.
struct FieldSpec {
  std::string_view name;
  std::string* str = nullptr;
  int64_t* i64 = nullptr;
  bool* boolean = nullptr;
};

// SAX handler decoding one JSON object into a fixed set of fields. Any error
// stops the parse (Go would finish decoding, but the result is an error
// either way).
class FieldsHandler {
 public:
  using json = nlohmann::json;

  explicit FieldsHandler(std::span<const FieldSpec> fields) : fields_(fields) {}
  const std::string& error() const { return err_; }

  bool null() {
    if (!scalarAllowed()) return false;
    take();  // null leaves a known field unchanged, as Go
    return true;
  }
  bool boolean(bool v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->boolean) return typeError("bool");
      *f->boolean = v;
    }
    return true;
  }
  bool number_integer(json::number_integer_t v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->i64) return typeError("number");
      *f->i64 = v;
    }
    return true;
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->i64) return typeError("number");
      if (v > json::number_unsigned_t(std::numeric_limits<int64_t>::max())) {
        return typeError("number out of int64 range");
      }
      *f->i64 = int64_t(v);
    }
    return true;
  }
  bool number_float(json::number_float_t, const json::string_t& raw) {
    if (!scalarAllowed()) return false;
    // Go decodes an int with strconv.ParseInt: "2.0" and "2e0" are errors.
    if (take()) return typeError("number " + raw.substr(0, 32));
    return true;
  }
  bool string(json::string_t& v) {
    if (!scalarAllowed()) return false;
    if (const FieldSpec* f = take()) {
      if (!f->str) return typeError("string");
      *f->str = std::move(v);
    }
    return true;
  }
  bool binary(json::binary_t&) { return fail("unexpected binary value"); }

  bool start_object(std::size_t) { return open(); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) {
    if (depth_ == 0) return fail("not a JSON object");
    return open();
  }
  bool end_array() { return close(); }

  bool key(json::string_t& k) {
    if (depth_ == 1) {
      pending_ = nullptr;
      // Field names are distinct under folding, so the first match is the
      // only one; a repeated key simply overwrites (last one wins, as Go).
      for (const FieldSpec& f : fields_) {
        if (goJsonNameMatches(k, f.name)) {
          pending_ = &f;
          break;
        }
      }
    }
    return true;
  }

  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
    if (err_.empty()) err_ = "invalid JSON at byte " + std::to_string(pos) + ": " + ex.what();
    return false;
  }

 private:
  bool scalarAllowed() {
    if (depth_ == 0) return fail("not a JSON object");
    return true;
  }
  // The known field this value belongs to, if it is a top-level member value.
  const FieldSpec* take() {
    if (depth_ != 1) return nullptr;
    const FieldSpec* f = pending_;
    pending_ = nullptr;
    return f;
  }
  bool open() {
    if (take()) return typeError("object or array");
    if (++depth_ > kMaxDepth) return fail("nesting deeper than " + std::to_string(kMaxDepth));
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool typeError(const std::string& what) { return fail("wrong type for a field: " + what); }
  bool fail(std::string msg) {
    if (err_.empty()) err_ = std::move(msg);
    return false;
  }

  std::span<const FieldSpec> fields_;
  const FieldSpec* pending_ = nullptr;
  int depth_ = 0;
  std::string err_;
};

Result<void> decodeObject(std::string_view json, std::span<const FieldSpec> fields) {
  if (json.size() > kMaxJsonLen) return makeError("JSON too large");
  GoJsonNormalized normalized;
  if (auto r = normalizeGoJson(json, normalized); !r) return r;
  const std::string_view text = normalized.changed ? std::string_view(normalized.text) : json;
  FieldsHandler handler(fields);
  bool ok = false;
  try {
    ok = nlohmann::json::sax_parse(text.begin(), text.end(), &handler,
                                   nlohmann::json::input_format_t::json, /*strict=*/true,
                                   /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    return makeError(std::string("invalid JSON: ") + e.what());
  }
  if (!ok) return makeError(handler.error().empty() ? "invalid JSON" : handler.error());
  return okResult();
}


// Appends `"name":` with the separating comma when needed.
void appendKey(std::string& out, std::string_view name) {
  if (out.size() > 1) out += ',';
  out += '"';
  out += name;
  out += "\":";
}

}  // namespace

std::string encodeClientInfo(const ClientInfo& ci) {
  std::string out = "{";
  if (!ci.meshKey.empty()) {
    appendKey(out, "meshKey");
    appendGoJsonString(out, ci.meshKey);
  }
  if (ci.version != 0) {
    appendKey(out, "version");
    out += std::to_string(ci.version);
  }
  appendKey(out, "CanAckPings");
  out += ci.canAckPings ? "true" : "false";
  if (ci.isProber) {
    appendKey(out, "IsProber");
    out += "true";
  }
  if (!ci.appName.empty()) {
    appendKey(out, "AppName");
    appendGoJsonString(out, ci.appName);
  }
  out += '}';
  return out;
}

Result<ClientInfo> parseClientInfo(std::string_view json) {
  ClientInfo ci;
  const FieldSpec fields[] = {
      {.name = "meshKey", .str = &ci.meshKey},
      {.name = "version", .i64 = &ci.version},
      {.name = "CanAckPings", .boolean = &ci.canAckPings},
      {.name = "IsProber", .boolean = &ci.isProber},
      {.name = "AppName", .str = &ci.appName},
  };
  if (auto r = decodeObject(json, fields); !r) return std::move(r).takeError();
  return ci;
}

std::string encodeServerInfo(const ServerInfo& si) {
  std::string out = "{";
  if (si.version != 0) {
    appendKey(out, "version");
    out += std::to_string(si.version);
  }
  if (si.tokenBucketBytesPerSecond != 0) {
    appendKey(out, "TokenBucketBytesPerSecond");
    out += std::to_string(si.tokenBucketBytesPerSecond);
  }
  if (si.tokenBucketBytesBurst != 0) {
    appendKey(out, "TokenBucketBytesBurst");
    out += std::to_string(si.tokenBucketBytesBurst);
  }
  out += '}';
  return out;
}

Result<ServerInfo> parseServerInfo(std::string_view json) {
  ServerInfo si;
  const FieldSpec fields[] = {
      {.name = "version", .i64 = &si.version},
      {.name = "TokenBucketBytesPerSecond", .i64 = &si.tokenBucketBytesPerSecond},
      {.name = "TokenBucketBytesBurst", .i64 = &si.tokenBucketBytesBurst},
  };
  if (auto r = decodeObject(json, fields); !r) return std::move(r).takeError();
  return si;
}

}  // namespace derpd::derp
