// libFuzzer target: the admission controller's answer (parseAdmitResponse)
// and whole-document checking (checkJsonDocument) on arbitrary bytes. Both
// must return errors, never throw or crash, and agree with each other:
//  - only the first kMaxAdmitResponseBytes matter to parseAdmitResponse;
//  - bytes after a complete first value never change its answer;
//  - a document checkJsonDocument accepts is never a syntax error or a
//    truncation to parseAdmitResponse (at most a type error);
//  - encodeAdmitRequest always writes an object both accept.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/crypto/keys.hpp"
#include "common/proto/admission/admission.hpp"

using namespace derpd;
using namespace derpd::admission;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

bool same(const Result<bool>& a, const Result<bool>& b) {
  if (a.ok() != b.ok()) return false;
  return a.ok() ? *a == *b : a.error() == b.error();
}

bool isTypeError(const std::string& e) { return e.rfind("json: cannot unmarshal ", 0) == 0; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);

  const auto answer = parseAdmitResponse(in);
  check(same(answer, parseAdmitResponse(in.substr(0, kMaxAdmitResponseBytes))));
  const bool needsMore = !answer.ok() && (answer.error() == kErrEmpty || answer.error() == kErrTruncated);
  if (size < kMaxAdmitResponseBytes && !needsMore) {
    // The first value ended inside the input: more bytes change nothing.
    check(same(answer, parseAdmitResponse(std::string(in) + "}\"x")));
  }

  const auto doc = checkJsonDocument(in);
  if (doc.ok() && size <= kMaxAdmitResponseBytes) {
    check(answer.ok() || isTypeError(answer.error()));
    const bool shapeOk = *doc == JsonType::Object || *doc == JsonType::Null;
    if (!shapeOk) check(!answer.ok());
    if (*doc == JsonType::Null) check(answer.ok() && !*answer);
  }

  // The request encoder on fuzz-chosen key bytes and source text.
  if (size >= crypto::kKeyLen) {
    const auto key = crypto::NodePublic::fromRaw(ByteView(data, crypto::kKeyLen));
    const std::string req = encodeAdmitRequest(key, in.substr(crypto::kKeyLen));
    const auto reqDoc = checkJsonDocument(req);
    check(reqDoc.ok() && *reqDoc == JsonType::Object);
    if (req.size() <= kMaxAdmitResponseBytes) {
      const auto reqAnswer = parseAdmitResponse(req);
      check(reqAnswer.ok() && !*reqAnswer);  // no Allow key in a request
    }
  }
  return 0;
}
