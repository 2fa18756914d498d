package proto

import (
	"errors"
	"fmt"
)

// Shape is the layout of a flexible-version request body, field by field, for
// CheckShape. Handlers that decode such a body with kmsg check it first: kmsg loops over
// a tag buffer's count without comparing it with the bytes left, so a body ending in a
// count of 2³²−1 holds an event loop for over a minute before it is refused. A shape
// walked here bounds every count by the bytes that follow it.
type Shape []Field

// Field is one field of a Shape.
type Field struct {
	kind fieldKind
	size int   // Fixed's
	elem Shape // CompactArray's element
}

type fieldKind uint8

const (
	kindFixed fieldKind = iota + 1
	kindCompactBytes
	kindCompactArray
	kindTags
)

// Fields of a Shape.
var (
	Bool    = Fixed(1)
	Int8    = Fixed(1)
	Int16   = Fixed(2)
	Int32   = Fixed(4)
	Int64   = Fixed(8)
	UUID    = Fixed(16)
	Float64 = Fixed(8)
	// CompactString is a compact string or compact nullable string, or compact
	// (nullable) bytes: a uvarint of length+1 (0 for null), then the bytes.
	CompactString = Field{kind: kindCompactBytes}
	// Tags is a tag buffer: a uvarint count, then count (tag, size, bytes).
	Tags = Field{kind: kindTags}
)

// Fixed is a field of n bytes.
func Fixed(n int) Field { return Field{kind: kindFixed, size: n} }

// CompactArray is a compact (nullable) array of elements of the given shape: a uvarint
// of count+1 (0 for null), then the elements.
func CompactArray(elem ...Field) Field { return Field{kind: kindCompactArray, elem: elem} }

// ErrBadShape is CheckShape's error for a body that does not have its shape.
var ErrBadShape = errors.New("proto: request body does not have its version's shape")

// CheckShape reports whether b begins with a body of shape s; bytes after it are not
// looked at (kmsg ignores them too). It allocates nothing and its work is bounded by
// len(b) and the shape's nesting: no count is believed that the bytes left cannot hold.
func CheckShape(b []byte, s Shape) error {
	if _, err := checkShape(b, 0, s, 0); err != nil {
		return fmt.Errorf("%w: %w", ErrBadShape, err)
	}
	return nil
}

// shapeDepthMax bounds the nesting of arrays in a Shape (Kafka's requests nest three).
const shapeDepthMax = 8

func checkShape(b []byte, pos int, s Shape, depth int) (int, error) {
	if depth > shapeDepthMax {
		return pos, errors.New("shape nested too deep")
	}
	for _, f := range s {
		switch f.kind {
		case kindFixed:
			if len(b)-pos < f.size {
				return pos, errors.New("truncated")
			}
			pos += f.size
		case kindCompactBytes:
			n, next, err := readUvarint(b, pos)
			if err != nil {
				return pos, err
			}
			pos = next
			if n > 0 {
				if n-1 > uint64(len(b)-pos) {
					return pos, errors.New("string or bytes past the end")
				}
				pos += int(n - 1)
			}
		case kindCompactArray:
			n, next, err := readUvarint(b, pos)
			if err != nil {
				return pos, err
			}
			pos = next
			if n == 0 {
				continue // null
			}
			// Every element takes at least a byte, as kmsg assumes too.
			if n-1 > uint64(len(b)-pos) {
				return pos, errors.New("array count past the end")
			}
			for range n - 1 {
				if pos, err = checkShape(b, pos, f.elem, depth+1); err != nil {
					return pos, err
				}
			}
		case kindTags:
			var err error
			if pos, err = SkipTagBuffer(b, pos); err != nil {
				return pos, err
			}
		default:
			return pos, errors.New("unknown field kind")
		}
	}
	return pos, nil
}

// The shapes of the flexible request versions the node decodes with kmsg.
var (
	ApiVersionsRequestV3     = Shape{CompactString, CompactString, Tags}
	DescribeClusterRequestV0 = Shape{Bool, Tags}
	DescribeClusterRequestV1 = Shape{Bool, Int8, Tags}
	ElectLeadersRequestV2    = Shape{Int8, CompactArray(CompactString, CompactArray(Int32), Tags), Int32, Tags}
	// Resources: type, name, config names (nullable); include synonyms, documentation.
	DescribeConfigsRequestV4 = Shape{CompactArray(Int8, CompactString, CompactArray(CompactString), Tags), Bool, Bool, Tags}
	// Resources: type, name, configs (name, operation, value); validate only.
	IncrementalAlterConfigsRequestV1 = Shape{CompactArray(Int8, CompactString,
		CompactArray(CompactString, Int8, CompactString, Tags), Tags), Bool, Tags}
	// Resources: type, name, configs (name, value); validate only.
	AlterConfigsRequestV2 = Shape{CompactArray(Int8, CompactString, CompactArray(CompactString, CompactString, Tags), Tags), Bool, Tags}
	// Topics: name, partitions (partition, offset); timeout.
	DeleteRecordsRequestV2 = Shape{CompactArray(CompactString, CompactArray(Int32, Int64, Tags), Tags), Int32, Tags}
	// Topics (nullable): name, partitions.
	DescribeLogDirsRequestV2 = Shape{CompactArray(CompactString, CompactArray(Int32), Tags), Tags}
	// Topics: name, partitions.
	DescribeProducersRequestV0 = Shape{CompactArray(CompactString, CompactArray(Int32), Tags), Tags}
	// Markers: producer id, epoch, committed, topics (name, partitions), coordinator
	// epoch.
	WriteTxnMarkersRequestV1 = Shape{CompactArray(Int64, Int16, Bool, CompactArray(CompactString, CompactArray(Int32), Tags), Int32, Tags), Tags}
)
