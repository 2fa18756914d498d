package proto

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// The broker stores and serves batches as received and never decompresses on the produce
// or fetch path. Decompression is for the rare reads that must look at records — a
// ListOffsets by timestamp inside a compressed batch — and is always bounded: a batch
// that claims or produces more than the caller's maximum is refused before the memory is
// spent.

// ErrDecompressTooLarge: the records decompress to more than the allowed maximum.
var ErrDecompressTooLarge = errors.New("decompressed records exceed the maximum")

// ErrMalformedRecords: the records section does not decode.
var ErrMalformedRecords = errors.New("malformed records")

// xerialPrefix starts snappy data framed the way the Java producer writes it: the 8-byte
// magic, then version and compatible version (int32 each), then blocks of a big-endian
// int32 length and a raw snappy block.
var xerialPrefix = []byte{130, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// DecompressRecords returns the records section of a batch with codec (CodecNone …
// CodecZstd) decompressed, refusing output larger than maxBytes.
func DecompressRecords(codec int, src []byte, maxBytes int) ([]byte, error) {
	switch codec {
	case CodecNone:
		if len(src) > maxBytes {
			return nil, ErrDecompressTooLarge
		}
		return src, nil
	case CodecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrMalformedRecords, err)
		}
		return readBounded(zr, maxBytes)
	case CodecLZ4:
		return readBounded(lz4.NewReader(bytes.NewReader(src)), maxBytes)
	case CodecSnappy:
		if len(src) > 16 && bytes.HasPrefix(src, xerialPrefix) {
			return xerialDecode(src[16:], maxBytes)
		}
		return snappyBlock(nil, src, maxBytes)
	case CodecZstd:
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(maxBytes)), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		defer d.Close()
		out, err := d.DecodeAll(src, nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) || len(out) > maxBytes {
			return nil, ErrDecompressTooLarge
		}
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrMalformedRecords, err)
		}
		return out, nil
	}
	return nil, ErrBatchCodec
}

// readBounded reads r to the end, refusing more than maxBytes.
func readBounded(r io.Reader, maxBytes int) ([]byte, error) {
	var out bytes.Buffer
	n, err := out.ReadFrom(io.LimitReader(r, int64(maxBytes)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRecords, err)
	}
	if n > int64(maxBytes) {
		return nil, ErrDecompressTooLarge
	}
	return out.Bytes(), nil
}

// snappyBlock appends one raw snappy block's decoding to dst, checking the claimed length
// before anything is allocated.
func snappyBlock(dst, src []byte, maxBytes int) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrMalformedRecords, err)
	}
	if n > maxBytes-len(dst) {
		return nil, ErrDecompressTooLarge
	}
	out, err := s2.Decode(nil, src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrMalformedRecords, err)
	}
	return append(dst, out...), nil
}

func xerialDecode(src []byte, maxBytes int) ([]byte, error) {
	var out []byte
	for len(src) > 0 {
		if len(src) < 4 {
			return nil, fmt.Errorf("%w: xerial block header", ErrMalformedRecords)
		}
		size := int(int32(binary.BigEndian.Uint32(src)))
		src = src[4:]
		if size < 0 || size > len(src) {
			return nil, fmt.Errorf("%w: xerial block length %d", ErrMalformedRecords, size)
		}
		var err error
		if out, err = snappyBlock(out, src[:size], maxBytes); err != nil {
			return nil, err
		}
		src = src[size:]
	}
	return out, nil
}
