// A blocking client-side resolver for one configured DNS server, for code that runs
// chrooted where getaddrinfo/NSS and /etc/resolv.conf are out of reach
// (derp-worker's /bootstrap-dns refresh thread). Read the system's settings
// while still privileged (systemNameserver(), HostsFile::load()), keep the
// values, and resolve with them later.
//
// Queries go over UDP from a fresh socket per query, connect()ed to the
// server (so the kernel drops datagrams from any other address/port) on a
// kernel-chosen random source port, with a random 16-bit id from
// getrandom(2); an answer counts only when it comes from the server's
// address and port and carries the id and the question that were sent
// (others are ignored, as Go's resolver does, until the deadline). A
// truncated (TC) answer is retried over TCP within the same deadline.
// No EDNS0, no search list, no retransmission: one datagram per query.
//
// Syscalls used after setup: socket, connect, sendto/send, recvfrom/recv,
// poll, getsockopt(SO_ERROR), close, getrandom (for a seccomp policy).
//
// Included by derp-worker (unprivileged, chrooted; everything but
// systemNameserver()/HostsFile::load()) and by tests.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/proto/dns/dns.hpp"
#include "common/util/result.hpp"

namespace derpd::net {

// A DNS server address (IPv4 or IPv6, port).
struct DnsServer {
  sockaddr_storage addr{};
  socklen_t len = 0;
  // "1.2.3.4:53" / "[::1]:53".
  std::string toString() const;
};

// Parses "1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" or "[fe80::1%eth0]:53"
// (the port defaults to 53).
Result<DnsServer> parseDnsServer(std::string_view s);

// The address of the first `nameserver` line of `resolvConf` whose value is
// an IP literal, as written (e.g. "127.0.0.53", "::1"). As Go's resolver does,
// a missing file or one without a usable line yields "127.0.0.1". Other read
// errors (EACCES, ...) are errors. Call while privileged, before the chroot.
Result<std::string> systemNameserver(const std::string& resolvConf = "/etc/resolv.conf");

// A snapshot of /etc/hosts (Go's resolver, like glibc with "hosts: files
// dns", answers from it before asking DNS: that is how derper's
// `-bootstrap-dns-names localhost` gets 127.0.0.1). Lines are
// `address name [aliases...]`, '#' starts a comment, names match ASCII
// case-insensitively with or without a trailing dot.
class HostsFile {
 public:
  // A missing file is an empty table; other read errors are errors.
  // Call while privileged, before the chroot.
  static Result<HostsFile> load(const std::string& path = "/etc/hosts");
  static HostsFile parse(std::string_view text);
  // Addresses for `name` in file order, formatted as Go's net.IP.String();
  // empty when the file does not list it.
  std::vector<std::string> lookup(std::string_view name) const;

 private:
  std::map<std::string, std::vector<std::string>> byName_;  // lowercased, no trailing dot
};

using DnsTimeout = std::chrono::milliseconds;

// One query, UDP then (on TC) TCP, all within `timeout`. `cancel`, when set
// and it becomes true, aborts the wait within about 50 ms. The Response has
// the server's rcode; only transport failures, timeouts and answers that
// cannot be parsed over TCP are errors.
Result<dns::Response> dnsQuery(const DnsServer& server, std::string_view name, dns::RrType type,
                               DnsTimeout timeout, const std::atomic<bool>* cancel = nullptr);

// Go's LookupIP(ctx, "ip", name) against `server`: an IP literal is returned
// as is; otherwise A then AAAA (AAAA is skipped after an NXDOMAIN for A), each
// with its own `timeout`; the addresses (A first, Go's String form) when any,
// else an error ("no such host", the rcode, or the transport failure).
Result<std::vector<std::string>> resolveAddrs(const DnsServer& server, std::string_view name,
                                              DnsTimeout timeout,
                                              const std::atomic<bool>* cancel = nullptr);

// Go's LookupTXT: one string per TXT record, that record's character-strings
// concatenated, in answer order. NXDOMAIN and failures are errors; a name
// without TXT records gives an empty vector. (A vector rather than one
// optional string because derper reads every record and keeps the last one
// that parses as a percentage.)
Result<std::vector<std::string>> resolveTxt(const DnsServer& server, std::string_view name,
                                            DnsTimeout timeout,
                                            const std::atomic<bool>* cancel = nullptr);

}  // namespace derpd::net
