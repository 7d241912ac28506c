// The ACME (RFC 8555) client: one blocking order at a time on cert-agent's
// ACME thread. POCO does HTTP(S); every POCO / standard exception is caught in
// Impl::http() and turned into a Result error, so nothing escapes obtain().
//
// Trust: the CA's answers are untrusted. Bodies are capped before parsing,
// URLs the CA hands out are checked (https, or http on loopback only; no
// control characters, no userinfo) before they reach a request line, nonces
// and tokens must be base64url, and the CA may only ask us to validate the
// identifiers we ordered.
#include "acme_client.hpp"

#include <Poco/DateTime.h>
#include <Poco/DateTimeFormat.h>
#include <Poco/DateTimeParser.h>
#include <Poco/Exception.h>
#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/NetSSL.h>
#include <Poco/Net/InvalidCertificateHandler.h>
#include <Poco/Net/SSLException.h>
#include <Poco/Net/VerificationErrorArgs.h>
#include <Poco/SharedPtr.h>
#include <Poco/Timespan.h>
#include <Poco/Timestamp.h>
#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <functional>
#include <istream>
#include <map>
#include <mutex>
#include <optional>
#include <ostream>
#include <thread>

#include "common/util/text.hpp"
#include "common/crypto/jws.hpp"
#include "common/log/log.hpp"
#include "common/proto/acme/acme_json.hpp"
#include "common/tls/certs.hpp"
#include "common/util/fd.hpp"

namespace derpd::certagent {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr size_t kMaxJsonBody = acme::kMaxJsonBytes;  // 64 KiB
constexpr size_t kMaxCertBody = 1024 * 1024;
constexpr int kBadNonceRetries = 5;
constexpr size_t kMaxNonceLen = 256;
constexpr size_t kMaxTokenLen = 256;
constexpr size_t kMaxUrlLen = 4096;
constexpr size_t kMaxAccountKeyFile = 64 * 1024;
constexpr std::chrono::seconds kPollDefault{1};
constexpr std::chrono::seconds kPollMin{1};
constexpr std::chrono::seconds kPollMax{10};
// Sleeps are cut into slices this long so a cancel is seen promptly.
constexpr auto kCancelSlice = 50ms;

constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";
constexpr char kUserAgent[] = "derpd-cert-agent/" DERPD_VERSION;
constexpr char kBadNonce[] = "urn:ietf:params:acme:error:badNonce";
constexpr char kAccountDoesNotExist[] = "urn:ietf:params:acme:error:accountDoesNotExist";
constexpr char kJoseJson[] = "application/jose+json";
constexpr char kAcceptJson[] = "application/json, application/problem+json";
constexpr char kAcceptPemChain[] = "application/pem-certificate-chain";

std::once_flag gSslInitOnce;

bool isBase64UrlToken(std::string_view s, size_t maxLen) {
  if (s.empty() || s.size() > maxLen) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

// Raw bytes of an IPv4/IPv6 literal (no brackets, no zone), or nullopt.
std::optional<std::string> ipBytes(const std::string& s) {
  std::array<unsigned char, 16> buf{};
  if (inet_pton(AF_INET, s.c_str(), buf.data()) == 1) return std::string(buf.begin(), buf.begin() + 4);
  if (inet_pton(AF_INET6, s.c_str(), buf.data()) == 1) return std::string(buf.begin(), buf.end());
  return std::nullopt;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return char(c >= 'A' && c <= 'Z' ? c + 32 : c); });
  return s;
}

bool isLoopbackHost(const std::string& host) {
  if (lower(host) == "localhost") return true;
  auto ip = ipBytes(host);
  if (!ip) return false;
  if (ip->size() == 4) return uint8_t((*ip)[0]) == 127;
  static const std::string kV6Loopback = std::string(15, '\0') + '\1';
  return *ip == kV6Loopback;
}

// Printable excerpt of a body that is not what we expected, for errors.
std::string excerpt(std::string_view body) {
  constexpr size_t kMax = 120;
  std::string out;
  for (size_t i = 0; i < body.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(body[i]);
    out += (c >= 0x20 && c < 0x7f) ? char(c) : '.';
  }
  if (body.size() > kMax) out += "…";
  return out;
}


std::string joinNames(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ", ";
    out += s;
  }
  return out;
}

// An absolute http(s) URL, split for POCO. The request target is kept
// byte-for-byte (it is also the JWS "url", which the CA compares verbatim).
struct Url {
  bool https = true;
  std::string host;  // without brackets
  uint16_t port = 443;
  std::string target;  // path + query, starting with '/'
  std::string origin;  // scheme://authority
};

Result<Url> parseUrl(const std::string& s) {
  if (s.size() > kMaxUrlLen) return makeError("URL too long");
  for (unsigned char c : s) {
    if (c <= 0x20 || c >= 0x7f) return makeError("URL contains a space or control character");
  }
  Url u;
  std::string_view rest(s);
  if (rest.substr(0, 8) == "https://") {
    rest.remove_prefix(8);
  } else if (rest.substr(0, 7) == "http://") {
    u.https = false;
    u.port = 80;
    rest.remove_prefix(7);
  } else {
    return makeError("not an http(s) URL: " + excerpt(s));
  }
  const size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.empty()) return makeError("URL has no host: " + excerpt(s));
  if (authority.find('@') != std::string_view::npos) return makeError("URL has userinfo");
  if (const size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
  u.target = target.empty() ? "/" : std::string(target);
  if (u.target[0] == '?') u.target.insert(0, "/");
  u.origin = std::string(s.substr(0, s.size() - rest.size())) + std::string(authority);

  std::string_view portText;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return makeError("URL has a bad IPv6 host");
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return makeError("URL has a bad IPv6 host");
      portText = after.substr(1);
    }
    if (!ipBytes(u.host)) return makeError("URL has a bad IPv6 host");
  } else {
    const size_t colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) portText = authority.substr(colon + 1);
    if (portText.find(':') != std::string_view::npos) return makeError("URL has an unbracketed IPv6 host");
  }
  if (u.host.empty()) return makeError("URL has no host: " + excerpt(s));
  if (!portText.empty()) {
    unsigned long port = 0;
    if (portText.size() > 5) return makeError("URL has a bad port");
    for (char c : portText) {
      if (c < '0' || c > '9') return makeError("URL has a bad port");
      port = port * 10 + unsigned(c - '0');
    }
    if (port == 0 || port > 65535) return makeError("URL has a bad port");
    u.port = uint16_t(port);
  }
  if (!u.https && !isLoopbackHost(u.host)) {
    return makeError("plain http:// is only allowed to a loopback host: " + excerpt(s));
  }
  return u;
}

// Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
std::optional<std::chrono::seconds> parseRetryAfter(const std::string& v) {
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (v.size() > 9) return kPollMax;
    return std::chrono::seconds(std::stol(v));
  }
  Poco::DateTime when;
  int tzd = 0;
  if (!Poco::DateTimeParser::tryParse(Poco::DateTimeFormat::HTTP_FORMAT, v, when, tzd)) {
    return std::nullopt;
  }
  const Poco::Timestamp::TimeDiff diff = when.timestamp() - Poco::Timestamp();  // microseconds
  return std::chrono::seconds(diff > 0 ? diff / Poco::Timestamp::resolution() : 0);
}

// Rejects every certificate OpenSSL could not verify (never asks anyone, as
// POCO's console handler would) and remembers why, for the error message:
// POCO's SSLException only carries "certificate verify failed". Called on
// the thread doing the handshake, i.e. the ACME thread.
class RejectAndRecord : public Poco::Net::InvalidCertificateHandler {
 public:
  RejectAndRecord() : InvalidCertificateHandler(false) {}
  void onInvalidCertificate(const void*, Poco::Net::VerificationErrorArgs& args) override {
    args.setIgnoreError(false);
    why_ = args.errorMessage() + " (depth " + std::to_string(args.errorDepth()) + ": " +
           args.certificate().subjectName() + ")";
  }
  std::string take() { return std::exchange(why_, std::string()); }

 private:
  std::string why_;
};

struct HttpReply {
  int status = 0;
  std::string body;
  std::string contentType;
  std::string location;  // absolute (resolved against the request URL)
  std::optional<std::chrono::seconds> retryAfter;
};

// The chain as the CA sent it: at least one certificate; the leaf matches
// `keyPem` and names every identifier.
Result<void> checkIssuedChain(const std::string& chainPem, const std::string& keyPem,
                              const std::vector<std::string>& identifiers) {
  auto sslErr = [](const std::string& what) {
    ERR_clear_error();
    return makeError("certificate: " + what);
  };
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(chainPem.data(), int(chainPem.size())),
                                                &BIO_free);
  if (!bio) return sslErr("BIO_new_mem_buf");
  std::unique_ptr<X509, decltype(&X509_free)> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr),
                                                   &X509_free);
  if (!leaf) return sslErr("the CA's answer holds no PEM certificate: " + excerpt(chainPem));
  std::unique_ptr<BIO, decltype(&BIO_free)> kbio(BIO_new_mem_buf(keyPem.data(), int(keyPem.size())),
                                                 &BIO_free);
  if (!kbio) return sslErr("BIO_new_mem_buf");
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(kbio.get(), nullptr, [](char*, int, int, void*) { return -1; }, nullptr),
      &EVP_PKEY_free);
  if (!key) return sslErr("cannot re-read the order's private key");
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    return sslErr("the leaf certificate does not match the key the CSR was signed with");
  }
  for (const std::string& id : identifiers) {
    const int ok = ipBytes(id) ? X509_check_ip_asc(leaf.get(), id.c_str(), 0)
                               : X509_check_host(leaf.get(), id.data(), id.size(), 0, nullptr);
    if (ok != 1) return sslErr("the leaf certificate does not name " + id);
  }
  ERR_clear_error();
  return okResult();
}

}  // namespace

struct AcmeClient::Impl {
  AcmeConfig cfg;
  crypto::Es256Key key;
  std::string thumbprint;

  // All below: owned by the caller's (ACME) thread; obtain() is not reentrant.
  struct Tls {
    Poco::Net::Context::Ptr context;
    Poco::SharedPtr<RejectAndRecord> verifyErrors;
  };
  std::map<std::string, Tls> contexts;  // TLS context per host name
  acme::Directory dir;
  std::string accountUrl;  // the kid, once newAccount succeeded
  std::string nonce;       // the next Replay-Nonce to use, or empty
  const std::atomic<bool>* cancel = nullptr;  // set during obtain()

  Impl(AcmeConfig c, crypto::Es256Key k) : cfg(std::move(c)), key(std::move(k)), thumbprint(key.thumbprint()) {}

  bool cancelled() const { return cancel != nullptr && cancel->load(std::memory_order_relaxed); }
  static Error cancelledError(const std::string& step) { return makeError(step + ": cancelled"); }

  // Sleeps `d`, in slices, unless cancelled (false) or `deadline` comes first.
  bool pause(std::chrono::milliseconds d, Clock::time_point deadline) const {
    const auto until = std::min(Clock::now() + d, deadline);
    while (Clock::now() < until) {
      if (cancelled()) return false;
      std::this_thread::sleep_for(std::min<Clock::duration>(kCancelSlice, until - Clock::now()));
    }
    return !cancelled();
  }

  // Retry-After clamped to [1 s, 10 s]; 1 s when absent.
  static std::chrono::milliseconds pollDelay(const HttpReply& r) {
    return std::clamp(r.retryAfter.value_or(kPollDefault), kPollMin, kPollMax);
  }

  Result<Tls> contextFor(const std::string& host) {
    if (auto it = contexts.find(host); it != contexts.end()) return it->second;
    const std::string ca = cfg.caFile.empty() ? std::string(kSystemCaBundle) : cfg.caFile;
    try {
      Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
          Poco::Net::Context::TLS_CLIENT_USE, ca, Poco::Net::Context::VERIFY_STRICT, 9, false,
          "HIGH:!aNULL:!eNULL:!MD5:!RC4:!3DES");
      ctx->requireMinimumProtocol(Poco::Net::Context::PROTO_TLSV1_2);
      // POCO's own post-handshake name check (VERIFY_STRICT keeps it on for
      // loopback names too) ...
      ctx->enableExtendedCertificateVerification(true);
      // ... and OpenSSL's, during the handshake.
      X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx->sslContext());
      const int set = ipBytes(host) ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                                    : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
      if (set != 1) {
        ERR_clear_error();
        return makeError("TLS: cannot set the expected host name " + host);
      }
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      Tls tls{ctx, new RejectAndRecord()};
      ctx->setInvalidCertificateHandler(tls.verifyErrors);
      contexts.emplace(host, tls);
      return tls;
    } catch (const Poco::Exception& e) {
      return makeError("TLS context with CA file " + ca + ": " + e.displayText());
    } catch (const std::exception& e) {
      return makeError("TLS context with CA file " + ca + ": " + e.what());
    }
  }

  // One HTTP exchange. `body` non-null → sent as application/jose+json. The
  // reply's Replay-Nonce (when well-formed) replaces `nonce`.
  Result<HttpReply> http(const std::string& step, const std::string& method, const std::string& url,
                         const std::string* body, const char* accept, size_t maxBody) {
    if (cancelled()) return cancelledError(step);
    auto u = parseUrl(url);
    if (!u) return makeError(step + ": " + u.error());
    const auto deadline = Clock::now() + cfg.requestTimeout;
    // POCO reports the first queued OpenSSL error; drop stale ones.
    ERR_clear_error();
    Poco::SharedPtr<RejectAndRecord> verifyErrors;
    try {
      std::unique_ptr<Poco::Net::HTTPClientSession> session;
      if (u->https) {
        auto tls = contextFor(u->host);
        if (!tls) return makeError(step + ": " + tls.error());
        verifyErrors = tls->verifyErrors;
        verifyErrors->take();
        session = std::make_unique<Poco::Net::HTTPSClientSession>(u->host, u->port, tls->context);
      } else {
        session = std::make_unique<Poco::Net::HTTPClientSession>(u->host, u->port);
      }
      // Connect, each send and each receive; the body loop below also
      // stops at the deadline.
      session->setTimeout(Poco::Timespan(Poco::Timespan::TimeDiff(cfg.requestTimeout.count()) *
                                         Poco::Timespan::SECONDS));
      session->setKeepAlive(false);

      Poco::Net::HTTPRequest req(method, u->target, Poco::Net::HTTPMessage::HTTP_1_1);
      req.set("User-Agent", kUserAgent);
      req.set("Accept", accept);
      req.setKeepAlive(false);
      if (body != nullptr) {
        req.setContentType(kJoseJson);
        req.setContentLength(std::streamsize(body->size()));
      }
      std::ostream& os = session->sendRequest(req);
      os.exceptions(std::ios::badbit);
      if (body != nullptr) os.write(body->data(), std::streamsize(body->size()));
      os.flush();

      Poco::Net::HTTPResponse resp;
      std::istream& is = session->receiveResponse(resp);
      is.exceptions(std::ios::badbit);

      HttpReply r;
      r.status = int(resp.getStatus());
      r.contentType = resp.getContentType();
      // Copies: MessageHeader::get(name, default) returns a reference to
      // `default` when the header is absent.
      const std::string empty;
      if (std::string n = resp.get("Replay-Nonce", empty); isBase64UrlToken(n, kMaxNonceLen)) {
        nonce = std::move(n);
      }
      if (const std::string loc = resp.get("Location", empty); !loc.empty()) {
        if (loc.front() == '/') {
          r.location = u->origin + loc;
        } else {
          r.location = loc;
        }
      }
      r.retryAfter = parseRetryAfter(resp.get("Retry-After", empty));

      std::array<char, 16 * 1024> buf;
      while (is) {
        if (Clock::now() > deadline) return makeError(step + ": timed out reading the response from " + url);
        if (cancelled()) return cancelledError(step);
        is.read(buf.data(), std::streamsize(buf.size()));
        const auto got = size_t(is.gcount());
        if (r.body.size() + got > maxBody) {
          return makeError(step + ": response from " + url + " larger than " + std::to_string(maxBody) +
                           " bytes");
        }
        r.body.append(buf.data(), got);
      }
      return r;
    } catch (const Poco::Net::SSLException& e) {
      std::string why = verifyErrors ? verifyErrors->take() : std::string();
      return makeError(step + ": " + method + " " + url + ": " + printableLine(e.displayText()) +
                       (why.empty() ? std::string() : ": " + printableLine(why)));
    } catch (const Poco::Net::MessageException& e) {
      return makeError(step + ": " + method + " " + url + ": not a valid HTTP response: " +
                       printableLine(e.displayText()));
    } catch (const Poco::SyntaxException& e) {
      return makeError(step + ": " + method + " " + url + ": not a valid HTTP response: " +
                       printableLine(e.displayText()));
    } catch (const Poco::Exception& e) {
      return makeError(step + ": " + method + " " + url + ": " + printableLine(e.displayText()));
    } catch (const std::exception& e) {
      return makeError(step + ": " + method + " " + url + ": " + printableLine(e.what()));
    }
  }

  // "<step>: <problem type>: <detail>" when the body is a problem document,
  // else "<step>: HTTP <status>: <excerpt>".
  static Error replyError(const std::string& step, const HttpReply& r) {
    auto p = acme::parseProblem(r.body);
    if (p && (p->type != "about:blank" || !p->detail.empty())) {
      return makeError(step + ": " + p->toString());
    }
    return makeError(step + ": HTTP " + std::to_string(r.status) +
                     (r.body.empty() ? std::string() : ": " + excerpt(r.body)));
  }

  Result<void> fetchDirectory() {
    auto r = http("directory", "GET", cfg.directoryUrl, nullptr, kAcceptJson, kMaxJsonBody);
    if (!r) return std::move(r).takeError();
    if (r->status != 200) return replyError("directory", *r);
    auto d = acme::parseDirectory(r->body);
    if (!d) return std::move(d).takeError();  // "directory: …" already
    dir = std::move(*d);
    return okResult();
  }

  Result<void> fetchNonce(const std::string& step) {
    nonce.clear();
    auto r = http(step + ": newNonce", "HEAD", dir.newNonce, nullptr, kAcceptJson, kMaxJsonBody);
    if (!r) return std::move(r).takeError();
    if (r->status != 200 && r->status != 204) return replyError(step + ": newNonce", *r);
    if (nonce.empty()) return makeError(step + ": newNonce: no usable Replay-Nonce in the answer");
    return okResult();
  }

  // A signed POST (kid, or jwk for newAccount); `payload` "" = POST-as-GET.
  // badNonce is retried with the nonce of the rejecting answer (or a fresh
  // one) up to kBadNonceRetries times. Non-2xx → the step's error.
  Result<HttpReply> post(const std::string& step, const std::string& url, std::string_view payload,
                         bool withJwk, const char* accept = kAcceptJson, size_t maxBody = kMaxJsonBody) {
    for (int attempt = 0;; ++attempt) {
      if (cancelled()) return cancelledError(step);
      if (nonce.empty()) {
        if (auto n = fetchNonce(step); !n) return std::move(n).takeError();
      }
      const std::string useNonce = std::exchange(nonce, std::string());
      auto jws = crypto::signAcmeJws(key, payload, useNonce, url, withJwk ? std::string() : accountUrl);
      if (!jws) return makeError(step + ": " + jws.error());
      auto r = http(step, "POST", url, &*jws, accept, maxBody);
      if (!r) return r;
      if (r->status >= 200 && r->status < 300) return r;
      auto p = acme::parseProblem(r->body);
      if (p && p->type == kBadNonce) {
        if (attempt < kBadNonceRetries) {
          LOG_DEBUG("acme: {}: badNonce, retrying ({}/{})", step, attempt + 1, kBadNonceRetries);
          continue;
        }
        return makeError(step + ": " + p->toString() + " (still rejected after " +
                         std::to_string(attempt + 1) + " attempts)");
      }
      if (p && p->type == kAccountDoesNotExist) accountUrl.clear();  // register again next time
      return replyError(step, *r);
    }
  }

  Result<void> ensureAccount() {
    if (!accountUrl.empty()) return okResult();
    if (dir.externalAccountRequired && cfg.eabKid.empty()) {
      return makeError("newAccount: the CA requires External Account Binding but no EAB key id/MAC key is configured");
    }
    std::vector<std::string> contacts;
    if (!cfg.email.empty()) contacts.push_back("mailto:" + cfg.email);
    std::string eab;
    if (!cfg.eabKid.empty()) {
      auto e = crypto::makeEabJws(key, cfg.eabKid, cfg.eabHmacKey, dir.newAccount);
      if (!e) return makeError("newAccount: " + e.error());
      eab = std::move(*e);
    }
    auto r = post("newAccount", dir.newAccount, acme::newAccountPayload(contacts, eab), true);
    if (!r) return std::move(r).takeError();
    if (r->status != 200 && r->status != 201) return replyError("newAccount", *r);
    if (r->location.empty()) return makeError("newAccount: the CA's answer has no Location (account URL)");
    if (auto u = parseUrl(r->location); !u) return makeError("newAccount: account URL: " + u.error());
    accountUrl = r->location;
    LOG_INFO("acme: account {} ({})", r->status == 201 ? "registered" : "reused", accountUrl);
    return okResult();
  }

  // POST-as-GET of an order until `done(status)`; "invalid" is an error.
  Result<acme::Order> pollOrder(const std::string& step, const std::string& orderUrl, acme::Order current,
                                std::chrono::milliseconds firstDelay,
                                const std::function<bool(const std::string&)>& done) {
    const auto deadline = Clock::now() + cfg.orderTimeout;
    auto delay = firstDelay;
    for (;;) {
      if (current.status == "invalid") {
        return makeError(step + ": order invalid" +
                         (current.error ? ": " + current.error->toString() : std::string()));
      }
      if (done(current.status)) return current;
      if (Clock::now() >= deadline) {
        return makeError(step + ": order still " + excerpt(current.status) + " after " +
                         std::to_string(cfg.orderTimeout.count()) + " s");
      }
      if (!pause(delay, deadline)) {
        if (cancelled()) return cancelledError(step);
      }
      auto r = post(step, orderUrl, "", false);
      if (!r) return std::move(r).takeError();
      auto o = acme::parseOrder(r->body);
      if (!o) return makeError(step + ": " + o.error());
      current = std::move(*o);
      delay = pollDelay(*r);
    }
  }

  // Does the CA's identifier name one of ours?
  static bool ours(const acme::Identifier& id, bool wildcard, const std::vector<std::string>& names) {
    for (const std::string& n : names) {
      if (id.type == "ip") {
        auto a = ipBytes(n);
        auto b = ipBytes(id.value);
        if (a && b && *a == *b) return true;
      } else if (id.type == "dns" && !ipBytes(n)) {
        if (lower(n) == lower(wildcard ? "*." + id.value : id.value)) return true;
      }
    }
    return false;
  }

  Result<void> authorize(const std::string& authzUrl, const std::vector<std::string>& names,
                         ChallengeResponder& responder) {
    const std::string step = "authorization";
    auto r = post(step, authzUrl, "", false);
    if (!r) return std::move(r).takeError();
    auto a = acme::parseAuthorization(r->body);
    if (!a) return makeError(step + ": " + a.error());
    const std::string what = excerpt(a->identifier.type + " " + a->identifier.value);
    if (!ours(a->identifier, a->wildcard, names)) {
      return makeError(step + ": the CA asks to validate " + what + ", which is not in the order");
    }
    if (a->status == "valid") {
      LOG_INFO("acme: authorization for {} already valid", a->identifier.value);
      return okResult();
    }
    if (a->status != "pending") {
      return makeError(step + " " + what + ": status " + excerpt(a->status));
    }

    const acme::ChallengeInfo* chosen = nullptr;
    for (const std::string& want : cfg.challengeTypes) {
      for (const auto& c : a->challenges) {
        if (c.type == want) {
          chosen = &c;
          break;
        }
      }
      if (chosen) break;
    }
    if (chosen == nullptr) {
      std::vector<std::string> offered;
      for (const auto& c : a->challenges) offered.push_back(c.type);
      return makeError(step + " " + what + ": none of the configured challenge types (" +
                       joinNames(cfg.challengeTypes) + ") is offered (offered: " + joinNames(offered) + ")");
    }
    const std::string cstep = "challenge " + chosen->type + " " + a->identifier.value;
    if (!isBase64UrlToken(chosen->token, kMaxTokenLen)) {
      return makeError(cstep + ": the token is missing or not base64url");
    }
    if (auto u = parseUrl(chosen->url); !u) return makeError(cstep + ": " + u.error());

    Challenge ch;
    ch.type = chosen->type;
    ch.identifier = a->identifier.value;
    ch.token = chosen->token;
    ch.keyAuthorization = chosen->token + "." + thumbprint;
    const std::string challengeUrl = chosen->url;
    const std::string challengeStatus = chosen->status;

    // present() / cleanup() always come in pairs.
    struct Cleanup {
      ChallengeResponder& responder;
      const Challenge& ch;
      ~Cleanup() { responder.cleanup(ch); }
    };
    Result<void> presented = responder.present(ch);
    Cleanup cleanup{responder, ch};
    if (!presented) return makeError(cstep + ": present: " + presented.error());
    LOG_INFO("acme: challenge {} presented for {}", ch.type, ch.identifier);

    std::chrono::milliseconds delay = pollDelay(HttpReply{});
    if (challengeStatus == "pending") {
      auto cr = post(cstep, challengeUrl, "{}", false);
      if (!cr) return std::move(cr).takeError();
      delay = pollDelay(*cr);
    }

    const auto deadline = Clock::now() + cfg.orderTimeout;
    for (;;) {
      if (!pause(delay, deadline) && cancelled()) return cancelledError(cstep);
      auto pr = post(cstep, authzUrl, "", false);
      if (!pr) return std::move(pr).takeError();
      auto pa = acme::parseAuthorization(pr->body);
      if (!pa) return makeError(cstep + ": " + pa.error());
      if (pa->status == "valid") {
        LOG_INFO("acme: authorization valid for {}", ch.identifier);
        return okResult();
      }
      if (pa->status != "pending") {
        std::string why;
        for (const auto& c : pa->challenges) {
          if (c.type == ch.type && c.error) why = ": " + c.error->toString();
        }
        return makeError(cstep + ": authorization " + excerpt(pa->status) + why);
      }
      if (Clock::now() >= deadline) {
        return makeError(cstep + ": authorization still pending after " +
                         std::to_string(cfg.orderTimeout.count()) + " s");
      }
      delay = pollDelay(*pr);
    }
  }

  Result<IssuedCert> obtain(const std::vector<std::string>& names, ChallengeResponder& responder) {
    if (names.empty()) return makeError("obtain: no identifiers");
    std::vector<acme::Identifier> ids;
    for (const std::string& n : names) {
      if (n.empty() || n.size() > 253) return makeError("obtain: bad identifier \"" + excerpt(n) + "\"");
      ids.push_back(acme::Identifier{ipBytes(n) ? "ip" : "dns", n});
    }
    nonce.clear();  // nonces do not outlive long gaps between orders
    if (auto d = fetchDirectory(); !d) return std::move(d).takeError();
    if (auto a = ensureAccount(); !a) return std::move(a).takeError();

    auto r = post("newOrder", dir.newOrder, acme::newOrderPayload(ids), false);
    if (!r) return std::move(r).takeError();
    if (r->status != 201 && r->status != 200) return replyError("newOrder", *r);
    auto order = acme::parseOrder(r->body);
    if (!order) return makeError("newOrder: " + order.error());
    if (r->location.empty()) return makeError("newOrder: the CA's answer has no Location (order URL)");
    const std::string orderUrl = r->location;
    if (auto u = parseUrl(orderUrl); !u) return makeError("newOrder: order URL: " + u.error());
    if (order->status == "invalid") {
      return makeError("newOrder: order invalid" + (order->error ? ": " + order->error->toString() : std::string()));
    }
    LOG_INFO("acme: order created for {} ({})", joinNames(names), orderUrl);

    for (const std::string& authzUrl : order->authorizations) {
      if (auto a = authorize(authzUrl, names, responder); !a) return std::move(a).takeError();
    }

    // All authorizations valid: the order should be ready (or already on).
    auto fresh = post("order", orderUrl, "", false);
    if (!fresh) return std::move(fresh).takeError();
    auto cur = acme::parseOrder(fresh->body);
    if (!cur) return makeError("order: " + cur.error());
    auto ready = pollOrder("order", orderUrl, std::move(*cur), pollDelay(*fresh), [](const std::string& s) {
      return s == "ready" || s == "processing" || s == "valid";
    });
    if (!ready) return std::move(ready).takeError();

    auto keyPem = tls::generateP256KeyPem();
    if (!keyPem) return makeError("finalize: key: " + keyPem.error());
    acme::Order finalState = std::move(*ready);
    if (finalState.status == "ready") {
      auto csr = tls::makeCsrDer(*keyPem, names);
      if (!csr) return makeError("finalize: CSR: " + csr.error());
      auto fr = post("finalize", finalState.finalize, acme::finalizePayload(crypto::base64UrlEncode(*csr)), false);
      if (!fr) return std::move(fr).takeError();
      auto fo = acme::parseOrder(fr->body);
      if (!fo) return makeError("finalize: " + fo.error());
      auto valid = pollOrder("finalize", orderUrl, std::move(*fo), pollDelay(*fr),
                             [](const std::string& s) { return s == "valid"; });
      if (!valid) return std::move(valid).takeError();
      finalState = std::move(*valid);
    } else {
      // Finalized by an earlier attempt with another key: that certificate
      // is of no use without its key, and ACME cannot re-finalize.
      return makeError("finalize: the order is already " + excerpt(finalState.status) +
                       " (finalized earlier with a key this run does not have)");
    }
    if (finalState.certificate.empty()) return makeError("certificate: the valid order has no certificate URL");

    auto cr = post("certificate", finalState.certificate, "", false, kAcceptPemChain, kMaxCertBody);
    if (!cr) return std::move(cr).takeError();
    if (auto ok = checkIssuedChain(cr->body, *keyPem, names); !ok) return std::move(ok).takeError();
    LOG_INFO("acme: certificate issued for {}", joinNames(names));
    IssuedCert out;
    out.chainPem = std::move(cr->body);
    out.keyPem = std::move(*keyPem);
    return out;
  }
};

AcmeClient::AcmeClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AcmeClient::~AcmeClient() = default;

Result<std::unique_ptr<AcmeClient>> AcmeClient::create(AcmeConfig cfg, const std::string& accountKeyPem) {
  auto key = crypto::Es256Key::fromPem(accountKeyPem);
  if (!key) return makeError("acme: account key: " + key.error());
  if (auto u = parseUrl(cfg.directoryUrl); !u) return makeError("acme: directory URL: " + u.error());
  if (cfg.challengeTypes.empty()) return makeError("acme: no challenge types configured");
  for (const std::string& t : cfg.challengeTypes) {
    if (t != "http-01" && t != "tls-alpn-01") {
      return makeError("acme: unsupported challenge type \"" + t + "\" (http-01, tls-alpn-01)");
    }
  }
  if (cfg.requestTimeout.count() <= 0 || cfg.orderTimeout.count() <= 0) {
    return makeError("acme: timeouts must be positive");
  }
  if (!cfg.eabKid.empty()) {
    auto mac = crypto::base64UrlDecode(cfg.eabHmacKey);
    if (!mac || mac->empty()) return makeError("acme: the EAB MAC key is not (unpadded) base64url");
    OPENSSL_cleanse(mac->data(), mac->size());
  }
  if (!cfg.caFile.empty()) {
    struct stat st {};
    if (::stat(cfg.caFile.c_str(), &st) != 0) {
      return makeError("acme: CA file " + cfg.caFile + ": " + std::strerror(errno));
    }
  }
  try {
    std::call_once(gSslInitOnce, [] { Poco::Net::initializeSSL(); });
  } catch (const std::exception& e) {
    return makeError(std::string("acme: initializeSSL: ") + e.what());
  }
  auto impl = std::make_unique<Impl>(std::move(cfg), std::move(*key));
  return std::unique_ptr<AcmeClient>(new AcmeClient(std::move(impl)));
}

Result<IssuedCert> AcmeClient::obtain(const std::vector<std::string>& identifiers,
                                      ChallengeResponder& responder, const std::atomic<bool>& cancel) {
  impl_->cancel = &cancel;
  struct Reset {
    Impl& impl;
    ~Reset() { impl.cancel = nullptr; }
  } reset{*impl_};
  if (cancel.load()) return makeError("acme: cancelled");
  try {
    return impl_->obtain(identifiers, responder);
  } catch (const std::exception& e) {
    // Defensive: http() catches POCO's exceptions; this catches the rest
    // (e.g. bad_alloc) so none crosses into cert-agent's loop.
    return makeError(std::string("acme: ") + e.what());
  }
}

Result<std::string> loadOrCreateAccountKey(const std::string& path, bool* created) {
  if (created) *created = false;
  bool missing = false;
  auto data = readFileLimited(path, kMaxAccountKeyFile, &missing);
  if (data) {
    auto key = crypto::Es256Key::fromPem(*data);
    if (!key) return makeError("account key " + path + ": " + key.error());
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      LOG_WARN("acme: account key {} is accessible by group/others (mode {:o})", path, st.st_mode & 0777);
    }
    return std::move(*data);
  }
  if (!missing) return makeError("account key: " + data.error());
  auto key = crypto::Es256Key::generate();
  if (!key) return makeError("account key: " + key.error());
  auto pem = key->toPkcs8Pem();
  if (!pem) return makeError("account key: " + pem.error());
  if (auto w = writeFileAtomic(path, *pem, 0600); !w) return makeError("account key: " + w.error());
  if (created) *created = true;
  LOG_INFO("acme: new account key written to {}", path);
  return pem;
}

}  // namespace derpd::certagent
