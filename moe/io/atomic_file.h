// Whole-file writes that readers never see half done: the bytes go to a unique temporary file in
// the same folder, which is fsync'ed and then renamed over the destination.
#pragma once

#include <string>
#include <string_view>

namespace moe::io {

// Writes `bytes` to `path` atomically (mode 0644). Throws moe::Error ("[io] ...") naming the file;
// on failure the temporary file is removed and any existing file at `path` is left unchanged.
void WriteFileAtomic(const std::string& path, std::string_view bytes);

}  // namespace moe::io
