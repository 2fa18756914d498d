package proto

import "encoding/binary"

// reader walks a request or response body with a sticky error, as kbin.Reader does:
// once a field does not fit, bad is set, every later read returns zero values, and the
// caller checks bad once. It reads both the classic encodings and the compact ones of
// flexible versions (KIP-482): unsigned-varint lengths (length+1, 0 for null) and a tag
// buffer closing every structure.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) fail() {
	r.bad = true
	r.b = nil
}

func (r *reader) int8() int8 {
	if len(r.b) < 1 {
		r.fail()
		return 0
	}
	v := int8(r.b[0])
	r.b = r.b[1:]
	return v
}

func (r *reader) int16() int16 {
	if len(r.b) < 2 {
		r.fail()
		return 0
	}
	v := int16(binary.BigEndian.Uint16(r.b))
	r.b = r.b[2:]
	return v
}

func (r *reader) int32() int32 {
	if len(r.b) < 4 {
		r.fail()
		return 0
	}
	v := int32(binary.BigEndian.Uint32(r.b))
	r.b = r.b[4:]
	return v
}

func (r *reader) int64() int64 {
	if len(r.b) < 8 {
		r.fail()
		return 0
	}
	v := int64(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) uuid() (id [16]byte) {
	if len(r.b) < 16 {
		r.fail()
		return id
	}
	copy(id[:], r.b)
	r.b = r.b[16:]
	return id
}

// span returns the next n bytes.
func (r *reader) span(n int) []byte {
	if n < 0 || n > len(r.b) {
		r.fail()
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// uvarint reads an unsigned varint of at most 32 bits (5 bytes, the last holding 4
// bits): Kafka's, and what kbin accepts.
func (r *reader) uvarint() uint32 {
	var v uint32
	for i := 0; i < 5; i++ {
		if i >= len(r.b) {
			r.fail()
			return 0
		}
		c := r.b[i]
		if i == 4 && c > 0x0f {
			r.fail()
			return 0
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c < 0x80 {
			r.b = r.b[i+1:]
			return v
		}
	}
	r.fail()
	return 0
}

// string reads a non-nullable string: int16 length, or compact (uvarint length+1).
func (r *reader) string(flexible bool) []byte {
	if !flexible {
		n := r.int16()
		if n < 0 {
			r.fail()
			return nil
		}
		return r.span(int(n))
	}
	n := r.uvarint()
	if n == 0 { // null
		r.fail()
		return nil
	}
	return r.span(int(n - 1))
}

// arrayLen reads a non-nullable array's count (int32, or compact: uvarint count+1)
// and checks it against the bytes left, each element taking at least minBytes.
func (r *reader) arrayLen(flexible bool, minBytes int) int {
	var n int64
	if flexible {
		n = int64(r.uvarint()) - 1 // -1: null
	} else {
		n = int64(r.int32())
	}
	if n < 0 || n > int64(len(r.b)/minBytes) {
		r.fail()
		return 0
	}
	return int(n)
}

// nullableArrayLen is arrayLen for a nullable array: a null one counts 0.
func (r *reader) nullableArrayLen(flexible bool, minBytes int) int {
	if flexible {
		if len(r.b) > 0 && r.b[0] == 0 {
			r.b = r.b[1:]
			return 0
		}
	} else if len(r.b) >= 4 && int32(binary.BigEndian.Uint32(r.b)) == -1 {
		r.b = r.b[4:]
		return 0
	}
	return r.arrayLen(flexible, minBytes)
}

// tag reads the next field of a tag buffer: its tag and its bytes.
func (r *reader) tag() (tag uint32, data []byte) {
	tag = r.uvarint()
	return tag, r.span(int(r.uvarint()))
}

// tagCount reads a tag buffer's field count, each field taking at least two bytes.
func (r *reader) tagCount() int {
	n := r.uvarint()
	if int64(n) > int64(len(r.b)/2) {
		r.fail()
		return 0
	}
	return int(n)
}

// skipTags skips a tag buffer whose fields are all unknown to the caller.
func (r *reader) skipTags() {
	for range r.tagCount() {
		r.tag()
	}
}

// appendUvarint appends Kafka's unsigned varint (LEB128).
func appendUvarint(dst []byte, v uint32) []byte {
	return binary.AppendUvarint(dst, uint64(v))
}

// appendArrayLen appends an array's count: int32, or compact (count+1).
func appendArrayLen(dst []byte, flexible bool, n int) []byte {
	if flexible {
		return appendUvarint(dst, uint32(n)+1)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// appendString appends a non-nullable string: int16 length, or compact.
func appendString(dst []byte, flexible bool, s []byte) []byte {
	if flexible {
		dst = appendUvarint(dst, uint32(len(s))+1)
	} else {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	}
	return append(dst, s...)
}
