// The live imbalance page served at GET /lab: lab_page.html, embedded in the binary at build
// time (CMake reads the file into lab_page.cc, generated from lab_page.cc.in), so the daemon
// needs no file on disk and the browser fetches nothing but /v1/lab/stats.
#pragma once

#include <string_view>

namespace moeserve::server {

// The whole HTML document (inline CSS and JS).
std::string_view LabPageHtml();

}  // namespace moeserve::server
