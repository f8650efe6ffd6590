#pragma once
// Where to cut an event file into parts that separate threads read: TFRecord framing has no
// sync marker, but each record's 8-byte length is followed by its masked CRC32C, and its data
// by the data's: a position where both match is a record start but by a chance of about 2^-64
// (event data holding a framed record is the one way to fool it; scalar_run's reading in parts
// checks that the part before ends exactly there, and reads the file in one piece when not).

#include <cstdint>
#include <string>
#include <vector>

namespace losslens::tfevents::detail {

/// The first position at or after each of `offsets` (ascending, inside the file of `size`
/// bytes) where a record whose length and data CRCs both match starts, searched over
/// `search_bytes` from each; ascending, without repeats, 0 and positions not found left out.
/// Reads the file; throws nothing (an unreadable file gives no positions).
std::vector<std::uint64_t> record_starts_after(const std::string& path, std::uint64_t size,
                                               const std::vector<std::uint64_t>& offsets,
                                               std::uint64_t search_bytes = 1 << 20);

}  // namespace losslens::tfevents::detail
