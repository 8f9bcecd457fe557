"""A minimal, independent GGUF reader for the tests (shares no code with the C engine)."""
import struct

_SCALAR = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?',
           10: '<Q', 11: '<q', 12: '<d'}


class GGUF:
    def __init__(self, path):
        self.path = path
        with open(path, 'rb') as f:
            self.buf = f.read()
        b = self.buf
        assert b[:4] == b'GGUF'
        self.version, n_t, n_kv = struct.unpack_from('<IQQ', b, 4)
        off = 24
        self.kv = {}
        for _ in range(n_kv):
            k, off = self._str(off)
            t, = struct.unpack_from('<I', b, off)
            off += 4
            v, off = self._val(t, off)
            self.kv[k] = v
        self.tensors = {}
        self.order = []
        for _ in range(n_t):
            name, off = self._str(off)
            nd, = struct.unpack_from('<I', b, off)
            off += 4
            ne = struct.unpack_from('<%dQ' % nd, b, off)
            off += 8 * nd
            typ, toff = struct.unpack_from('<IQ', b, off)
            off += 12
            self.tensors[name] = (ne, typ, toff)
            self.order.append(name)
        align = self.kv.get('general.alignment', 32)
        self.data = (off + align - 1) // align * align

    def _str(self, off):
        n, = struct.unpack_from('<Q', self.buf, off)
        return self.buf[off + 8:off + 8 + n].decode('utf-8', 'replace'), off + 8 + n

    def _val(self, t, off):
        if t == 8:
            return self._str(off)
        if t == 9:
            at, n = struct.unpack_from('<IQ', self.buf, off)
            off += 12
            out = []
            for _ in range(n):
                v, off = self._val(at, off)
                out.append(v)
            return out, off
        fmt = _SCALAR[t]
        return struct.unpack_from(fmt, self.buf, off)[0], off + struct.calcsize(fmt)

    def f32(self, name):
        """The float32 values of an F32 tensor, as Python floats."""
        ne, typ, toff = self.tensors[name]
        assert typ == 0, name
        n = 1
        for d in ne:
            n *= d
        return list(struct.unpack_from('<%df' % n, self.buf, self.data + toff))

    def f32_offset(self, name):
        return self.data + self.tensors[name][2]
