"""Minimal GGUF v3 reader and writer for the demo-model tools.

Written for this project from the GGUF format description (header, typed
key/value metadata, tensor table, aligned data section).  Only the tensor
types the demo model uses are understood: F32 (0), F16 (1) and I2_S (36).
Shares no code with the C engine on purpose: tools/train/ref.py must be an
independent implementation of the model.
"""

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3

# metadata value types
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, \
    T_U64, T_I64, T_F64 = range(13)

_SCALAR = {
    T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I",
    T_I32: "<i", T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q",
    T_F64: "<d",
}

# tensor types
GGML_F32 = 0
GGML_F16 = 1
GGML_I2_S = 36


class GGUFFile:
    """A parsed GGUF file: .kv (ordered dict key -> python value),
    .kv_types (key -> (type, elem_type)), .tensors (ordered name ->
    dict(type, shape (ggml order: ne0 first), offset, nbytes)), .data
    (bytes of the whole file)."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.path = path
        self._pos = 0
        self._parse()

    # -- low level readers
    def _take(self, n):
        if self._pos + n > len(self.data):
            raise ValueError("%s: truncated at byte %d" % (self.path, self._pos))
        b = self.data[self._pos:self._pos + n]
        self._pos += n
        return b

    def _scalar(self, t):
        fmt = _SCALAR[t]
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)))[0]

    def _string(self):
        n = self._scalar(T_U64)
        return self._take(n).decode("utf-8")

    def _value(self, t):
        if t == T_STR:
            return self._string(), None
        if t == T_ARR:
            et = self._scalar(T_U32)
            n = self._scalar(T_U64)
            if et == T_STR:
                return [self._string() for _ in range(n)], et
            if et == T_ARR:
                raise ValueError("nested arrays not supported")
            fmt = _SCALAR[et]
            sz = struct.calcsize(fmt)
            arr = np.frombuffer(self._take(n * sz), dtype=np.dtype(fmt))
            return arr.tolist(), et
        return self._scalar(t), None

    def _parse(self):
        if self._take(4) != GGUF_MAGIC:
            raise ValueError("%s: not a GGUF file" % self.path)
        ver = self._scalar(T_U32)
        if ver not in (2, 3):
            raise ValueError("%s: GGUF version %d" % (self.path, ver))
        n_tensors = self._scalar(T_U64)
        n_kv = self._scalar(T_U64)
        self.kv = {}
        self.kv_types = {}
        for _ in range(n_kv):
            key = self._string()
            t = self._scalar(T_U32)
            val, et = self._value(t)
            self.kv[key] = val
            self.kv_types[key] = (t, et)
        self.tensors = {}
        for _ in range(n_tensors):
            name = self._string()
            nd = self._scalar(T_U32)
            shape = [self._scalar(T_U64) for _ in range(nd)]
            ttype = self._scalar(T_U32)
            off = self._scalar(T_U64)
            self.tensors[name] = dict(type=ttype, shape=shape, offset=off)
        align = self.kv.get("general.alignment", 32)
        self.data_start = (self._pos + align - 1) // align * align
        for name, t in self.tensors.items():
            t["nbytes"] = tensor_nbytes(t["type"], t["shape"])
            end = self.data_start + t["offset"] + t["nbytes"]
            if end > len(self.data):
                raise ValueError("%s: tensor %s past end of file" % (self.path, name))

    def raw(self, name):
        t = self.tensors[name]
        s = self.data_start + t["offset"]
        return self.data[s:s + t["nbytes"]]

    def tensor(self, name):
        """Decoded tensor as float32 numpy array of shape (ne1, ne0) (rows
        of `in` values) or (ne0,) for vectors.  For I2_S returns
        (ternary int8 matrix, scale)."""
        t = self.tensors[name]
        raw = self.raw(name)
        shape = t["shape"]
        if t["type"] == GGML_F32:
            a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif t["type"] == GGML_F16:
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif t["type"] == GGML_I2_S:
            return i2s_decode(raw, shape[0], shape[1])
        else:
            raise ValueError("tensor %s: unsupported type %d" % (name, t["type"]))
        return a.reshape(list(reversed(shape)))


def tensor_nbytes(ttype, shape):
    n = 1
    for d in shape:
        n *= d
    if ttype == GGML_F32:
        return 4 * n
    if ttype == GGML_F16:
        return 2 * n
    if ttype == GGML_I2_S:
        return n // 4 + 32
    raise ValueError("unsupported tensor type %d" % ttype)


# ---------------------------------------------------------------- I2_S
# 128 consecutive weights of a row = one 32-byte block; byte j holds elements
# j, j+32, j+64, j+96 in bits 7:6, 5:4, 3:2, 1:0; code = ternary + 1.

def i2s_encode(tern, scale):
    """tern: int array [out][in] with values in {-1,0,1}, in % 128 == 0."""
    tern = np.asarray(tern)
    out_, in_ = tern.shape
    if in_ % 128:
        raise ValueError("I2_S row length %d not a multiple of 128" % in_)
    codes = (tern + 1).astype(np.uint8).reshape(out_, in_ // 128, 4, 32)
    packed = (codes[:, :, 0, :] << 6) | (codes[:, :, 1, :] << 4) | \
             (codes[:, :, 2, :] << 2) | codes[:, :, 3, :]
    body = packed.astype(np.uint8).tobytes()
    return body + struct.pack("<f", scale) + b"\0" * 28


def i2s_decode(raw, in_, out_):
    nb = in_ * out_ // 4
    packed = np.frombuffer(raw[:nb], dtype=np.uint8).reshape(out_, in_ // 128, 1, 32)
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 1, 4, 1)
    codes = (packed >> shifts) & 3
    codes = codes.reshape(out_, in_).astype(np.int8)
    codes[codes == 3] = 1  # unused code 3 decodes as 0
    scale = struct.unpack("<f", raw[nb:nb + 4])[0]
    return codes - 1, np.float32(scale)


# ---------------------------------------------------------------- writer

class GGUFWriter:
    def __init__(self, alignment=32):
        self.kv = []        # (key, type, value, elem_type)
        self.tensors = []   # (name, ttype, shape(ggml order), bytes)
        self.alignment = alignment

    def add(self, key, t, value, elem_type=None):
        self.kv.append((key, t, value, elem_type))

    def add_tensor(self, name, ttype, shape, data):
        if len(data) != tensor_nbytes(ttype, shape):
            raise ValueError("tensor %s: %d bytes, expected %d"
                             % (name, len(data), tensor_nbytes(ttype, shape)))
        self.tensors.append((name, ttype, list(shape), bytes(data)))

    @staticmethod
    def _str(s):
        b = s.encode("utf-8")
        return struct.pack("<Q", len(b)) + b

    def _val(self, t, v, et):
        if t == T_STR:
            return self._str(v)
        if t == T_ARR:
            out = struct.pack("<IQ", et, len(v))
            if et == T_STR:
                return out + b"".join(self._str(s) for s in v)
            return out + np.asarray(v, dtype=np.dtype(_SCALAR[et])).tobytes()
        return struct.pack(_SCALAR[t], v)

    def write(self, path):
        out = bytearray()
        out += GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        for key, t, v, et in self.kv:
            out += self._str(key) + struct.pack("<I", t) + self._val(t, v, et)
        off = 0
        offsets = []
        for name, ttype, shape, data in self.tensors:
            offsets.append(off)
            out += self._str(name) + struct.pack("<I", len(shape))
            out += b"".join(struct.pack("<Q", d) for d in shape)
            out += struct.pack("<IQ", ttype, off)
            off += (len(data) + self.alignment - 1) // self.alignment * self.alignment
        pad = (-len(out)) % self.alignment
        out += b"\0" * pad
        for name, ttype, shape, data in self.tensors:
            out += data
            out += b"\0" * ((-len(data)) % self.alignment)
        with open(path, "wb") as f:
            f.write(out)
        return len(out)
