#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, written from the format description with
the Python standard library only: its own CRC-32C and its own protobuf wire decoding (no
losslens code, no protobuf library). test_import runs it on the event files that
`losslens export --format tfevents` writes, and on the fixtures of another writer.

Format: a file is a sequence of records, each
    u64 length (little-endian), u32 masked CRC-32C of those 8 bytes,
    `length` bytes of data, u32 masked CRC-32C of the data,
where masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32). The data of each
record is a serialized tensorflow.Event:
    Event:        1 wall_time (double), 2 step (int64), 3 file_version (string), 5 summary
    Summary:      1 value (repeated Summary.Value)
    Summary.Value 1 tag (string), 2 simple_value (float), 8 tensor (TensorProto)
    TensorProto:  1 dtype (1 float, 2 double), 4 tensor_content (bytes), 5 float_val,
                  6 double_val (repeated, packed or not)

Usage: tfevents_read.py FILE
Prints one line per scalar, TAG<TAB>STEP<TAB>WALL_TIME<TAB>VALUE (Python repr of the numbers),
then "# records N file_version V". Exits 1 with "FILE: offset N: reason" on a framing or CRC
error or a record it cannot decode.
"""

import struct
import sys


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # reflected Castagnoli polynomial
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(buf, pos):
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def fields(buf):
    """Yields (field number, wire type, value) of a serialized message."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        if pos > len(buf):
            raise ValueError("field %d runs past the end" % number)
        yield number, wire, value


def repeated(wire, value, fmt):
    size = struct.calcsize(fmt)
    if wire == 2:  # packed
        return [struct.unpack_from(fmt, value, i)[0] for i in range(0, len(value), size)]
    return [struct.unpack(fmt, value)[0]]


def tensor_scalar(buf):
    dtype, content, floats, doubles = 0, b"", [], []
    for number, wire, value in fields(buf):
        if number == 1:
            dtype = value
        elif number == 4:
            content = value
        elif number == 5:
            floats += repeated(wire, value, "<f")
        elif number == 6:
            doubles += repeated(wire, value, "<d")
    if dtype == 1:
        values = list(struct.unpack("<%df" % (len(content) // 4), content)) if content else floats
    elif dtype == 2:
        values = list(struct.unpack("<%dd" % (len(content) // 8), content)) if content else doubles
    else:
        return None
    return values[0] if len(values) == 1 else None


def read(path):
    data = open(path, "rb").read()
    pos = records = 0
    file_version = ""
    out = []
    while pos < len(data):
        start = pos
        if len(data) - pos < 12:
            raise ValueError("%s: offset %d: cut-short record header" % (path, start))
        length, length_crc = struct.unpack_from("<QI", data, pos)
        if masked(crc32c(data[pos:pos + 8])) != length_crc:
            raise ValueError("%s: offset %d: length CRC mismatch" % (path, start))
        pos += 12
        if len(data) - pos < length + 4:
            raise ValueError("%s: offset %d: cut-short record" % (path, start))
        payload = data[pos:pos + length]
        (data_crc,) = struct.unpack_from("<I", data, pos + length)
        if masked(crc32c(payload)) != data_crc:
            raise ValueError("%s: offset %d: data CRC mismatch" % (path, start))
        pos += length + 4
        records += 1
        wall, step, summary = 0.0, 0, None
        try:
            for number, wire, value in fields(payload):
                if number == 1 and wire == 1:
                    (wall,) = struct.unpack("<d", value)
                elif number == 2 and wire == 0:
                    step = value - (1 << 64) if value >= 1 << 63 else value
                elif number == 3 and wire == 2:
                    file_version = value.decode("utf-8")
                elif number == 5 and wire == 2:
                    summary = value
            if summary is None:
                continue
            for number, wire, value in fields(summary):
                if number != 1 or wire != 2:
                    continue
                tag, scalar = "", None
                for n, w, v in fields(value):
                    if n == 1 and w == 2:
                        tag = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        (scalar,) = struct.unpack("<f", v)
                    elif n == 8 and w == 2:
                        scalar = tensor_scalar(v)
                if scalar is not None:
                    out.append((tag, step, wall, scalar))
        except (ValueError, struct.error, UnicodeDecodeError) as e:
            raise ValueError("%s: offset %d: cannot decode the Event: %s" % (path, start, e))
    return out, records, file_version


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: tfevents_read.py FILE", file=sys.stderr)
        return 2
    try:
        scalars, records, file_version = read(sys.argv[1])
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    lines = ["%s\t%d\t%r\t%r" % s for s in scalars]
    lines.append("# records %d file_version %s" % (records, file_version or "-"))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
