// cert-agent's command line: derper's flag names where derper has them, Go
// flag syntax (-x / --x, -x=v or -x v; bools take a value only with '=').
// cert-agent runs only under derpd (it hands certificates to derp-worker over
// the control plane), so --control is required.
// Included by cert-agent only.
#pragma once

#include <string>
#include <vector>

#include "common/util/result.hpp"

namespace derpd::certagent {

struct Options {
  std::string certMode = "letsencrypt";          // -certmode: manual or letsencrypt
  std::string certDir;                           // -certdir
  std::string hostname = "derp.tailscale.com";   // -hostname
  std::string acmeDirectoryUrl = "https://acme-v02.api.letsencrypt.org/directory";
  std::string acmeCaFile;                        // --acme-ca-file
  std::vector<std::string> acmeChallenges = {"tls-alpn-01", "http-01"};  // --acme-challenges
  std::string acmeEmail;                         // -acme-email
  std::string acmeEabKid;                        // -acme-eab-kid
  int acmeEabKeyFd = -1;                         // --acme-eab-key-fd: pipe with the EAB MAC key
  std::string logLevel = "info";                 // --log-level
  bool version = false;                          // -version
  bool help = false;                             // -h / --help
  std::string user;                              // --user: drop to this user (when root)
  std::string chrootDir;                         // --chroot: refused (cert-agent needs certdir, DNS, CAs)
  std::string control;                           // --control: derpd's control endpoint (ipc://...)
  bool seccomp = true;                           // --seccomp=false: no syscall filter after the drop
};

// Parses argv (without argv[0]). Errors name the flag.
Result<Options> parseOptions(const std::vector<std::string>& args);
std::string usage();

}  // namespace derpd::certagent
