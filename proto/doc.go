// Package proto is the part of the Kafka wire protocol Gregor writes by hand: what the
// produce and fetch hot path needs without an allocation per request.
//
//   - Framing: the int32 size prefix (FrameSize, checked against a limit before anything
//     is allocated) and request/response headers v0–v2, flexible versions (KIP-482)
//     included (ParseRequestHeader, BeginFrame/EndFrame).
//   - Produce and Fetch: a zero-allocation Produce request decoder and answer encoder, and
//     the Fetch request decoder and response writer whose record sets are file regions
//     sent by sendfile. Each is checked byte for byte against franz-go's kmsg, which
//     encodes and decodes every other message body.
//   - RecordBatch v2: header validation (magic, lengths, record count, CRC-32C), in-place
//     writes of baseOffset and partitionLeaderEpoch (outside the CRC), and bounded
//     decompression for lookups by timestamp — recordbatch.go is the one place that knows
//     the layout.
//
// It is a leaf package: it imports nothing of Gregor's, so the storage engine (segment)
// and the data plane share one codec. Every decoder has a fuzz target.
package proto
